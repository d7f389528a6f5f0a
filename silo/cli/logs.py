"""`silo logs FUNCTION`: read a function's log, one tenant's or one call's, and follow it.

Each line is printed as `TIME TENANT STREAM  MESSAGE`, with the stream shortened to its last 8 hex
digits (enough to tell environments apart). `--follow` polls the API with the NextToken of the
previous answer, so no line is printed twice or skipped.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from typing import Any, TextIO

from silo.cli.client import Client

FOLLOW_INTERVAL_S = 1.0
PAGE = 1000


def logs_path(name: str, params: dict[str, str]) -> str:
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v})
    return f"/silo/v1/functions/{urllib.parse.quote(name, safe='')}/logs" + (f"?{query}" if query else "")


def format_event(event: dict[str, Any]) -> str:
    ms = int(event.get("Timestamp") or 0)
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
    tenant = event.get("TenantId") or "-"
    stream = str(event.get("LogStreamName") or "")
    short = stream[-8:] if stream else "-"
    return f"{when} {tenant} {short}  {str(event.get('Message', '')).rstrip()}"


def _print(events: list[dict[str, Any]], out: TextIO) -> None:
    for event in events:
        out.write(format_event(event) + "\n")
    out.flush()


def show(
    client: Client,
    name: str,
    tenant: str | None,
    request_id: str | None,
    since: str | None,
    limit: int | None,
    follow: bool,
    out: TextIO = sys.stdout,
) -> int:
    """Print the matching events, oldest first; with `follow`, keep printing new ones until interrupted."""
    if limit is not None and limit < 1:
        raise ValueError("--limit must be at least 1")
    base = {"tenant": tenant or "", "request_id": request_id or ""}
    params = {**base, "since": since or "", "limit": str(limit or PAGE)}
    try:
        page = client.json("GET", logs_path(name, params))
        _print(page["Events"], out)
        cursor = page["NextToken"]
        # With --since, every page up to now is printed; without it, only the newest `limit` events.
        while (since and page.get("HasMore") and limit is None) or follow:
            page = client.json("GET", logs_path(name, {**base, "cursor": cursor, "limit": str(PAGE)}))
            _print(page["Events"], out)
            cursor = page["NextToken"]
            if follow and not page.get("HasMore"):
                time.sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        # Ctrl-C is how a follow ends, whenever it comes (even while the first page prints).
        return 0 if follow else 130
    return 0
