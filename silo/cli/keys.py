"""`silo keys create | list | revoke`: caller keys, through the server's /silo/v1/keys (administrator keys only)."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from silo.cli.client import Client

PATH = "/silo/v1/keys"
_DURATION = re.compile(r"(\d+)([smhdw]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(raw: str) -> int:
    """Seconds in `24h`, `30m`, `7d`, `2w`, `90s` or `3600`; a ValueError says what is wanted."""
    match = _DURATION.fullmatch(raw.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"--expires takes a duration such as 90s, 30m, 24h, 7d or 2w, got {raw!r}")
    return int(match[1]) * _UNIT_S[match[2]]


def _what(key: dict[str, Any]) -> str:
    if key["Kind"] == "admin":
        return "administrator"
    return f"tenant {key['TenantId']}, may invoke {', '.join(key['Functions'])}"


def create(
    client: Client,
    admin: bool,
    tenant: str | None,
    functions: list[str],
    expires: str | None,
    description: str | None,
    as_json: bool,
) -> int:
    doc: dict[str, Any] = {}
    if admin:
        doc["Admin"] = True
    if tenant is not None:
        doc["TenantId"] = tenant
    if functions:
        doc["Functions"] = functions
    if expires is not None:
        doc["ExpiresInSeconds"] = parse_duration(expires)
    if description is not None:
        doc["Description"] = description
    key = client.json("POST", PATH, doc)
    if as_json:
        print(json.dumps({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}))
        return 0
    until = f", expires {key['ExpiresAt']}" if "ExpiresAt" in key else ""
    print(f"created key {key['AccessKeyId']} ({_what(key)}{until})")
    print(f"AccessKeyId:     {key['AccessKeyId']}")
    print(f"SecretAccessKey: {key['SecretAccessKey']}")
    print("The secret is shown this once: keep it now (silo keys list never shows it).")
    return 0


def show(client: Client, as_json: bool) -> int:
    keys: list[dict[str, Any]] = client.json("GET", PATH)["Keys"]
    if as_json:
        print(json.dumps(keys, indent=2))
        return 0
    rows = [("ACCESS KEY ID", "STATE", "KIND", "MAY", "CREATED", "EXPIRES", "DESCRIPTION")]
    for key in keys:
        may = "everything" if key["Kind"] == "admin" else f"invoke {','.join(key['Functions'])} as {key['TenantId']}"
        rows.append(
            (
                key["AccessKeyId"],
                key["State"].lower(),
                key["Kind"],
                may,
                key["CreatedAt"],
                key.get("ExpiresAt", "-"),
                key["Description"],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def revoke(client: Client, key_id: str) -> int:
    key = client.json("DELETE", f"{PATH}/{urllib.parse.quote(key_id, safe='')}")
    print(f"revoked key {key['AccessKeyId']} ({_what(key)}); it is refused from now on")
    return 0
