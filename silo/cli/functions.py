"""`silo deploy` and `silo invoke`: what a person runs to ship a function and call it as a tenant."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import sys
import time
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any

from silo.cli.client import ApiError, Client, function_path

DEFAULT_ROLE = "arn:aws:iam::000000000000:role/silo-function"


def zip_directory(directory: Path) -> bytes:
    """Zip a directory the way Lambda expects: paths relative to it, file modes kept, stable order."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", ".git"))
            for name in sorted(files):
                path = Path(root) / name
                if name.endswith(".pyc"):
                    continue
                rel = path.relative_to(directory).as_posix()
                info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (stat.S_IFREG | (path.stat().st_mode & 0o777)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def _wait_until_ready(client: Client, name: str) -> dict[str, Any]:
    for _ in range(300):
        config: dict[str, Any] = client.json("GET", function_path(name, "/configuration"))
        if config.get("State") == "Active" and config.get("LastUpdateStatus") != "InProgress":
            return config
        if config.get("State") == "Failed" or config.get("LastUpdateStatus") == "Failed":
            raise SystemExit(
                f"silo: function {name} failed to become ready: "
                f"{config.get('StateReason') or config.get('LastUpdateStatusReason')}"
            )
        time.sleep(0.2)
    raise SystemExit(f"silo: function {name} did not become ready within a minute")


def deploy(
    client: Client,
    directory: Path,
    name: str,
    handler: str | None,
    runtime: str | None,
    tenant_isolation: bool,
    memory: int | None,
    timeout: int | None,
) -> int:
    if not directory.is_dir():
        raise SystemExit(f"silo: {directory} is not a directory; give the folder that holds your function's code")
    code = base64.b64encode(zip_directory(directory)).decode()
    try:
        current = client.json("GET", function_path(name, "/configuration"))
    except ApiError as exc:
        if exc.code != "ResourceNotFoundException":
            raise
        current = None
    if current is None:
        doc: dict[str, Any] = {
            "FunctionName": name,
            "Runtime": runtime or f"python3.{sys.version_info.minor}",
            "Role": DEFAULT_ROLE,
            # Lambda's own defaults for new functions: index.js for Node.js, app.py here for Python.
            "Handler": handler or ("index.handler" if (runtime or "").startswith("nodejs") else "app.handler"),
            "Code": {"ZipFile": code},
        }
        if tenant_isolation:
            doc["TenancyConfig"] = {"TenantIsolationMode": "PER_TENANT"}
        if memory is not None:
            doc["MemorySize"] = memory
        if timeout is not None:
            doc["Timeout"] = timeout
        client.json("POST", "/2015-03-31/functions", doc)
        action = "created"
    else:
        isolated = current.get("TenancyConfig", {}).get("TenantIsolationMode") == "PER_TENANT"
        if tenant_isolation and not isolated:
            raise SystemExit(
                f"silo: function {name} exists without tenant isolation, and tenant isolation can only be "
                "chosen when a function is created. Delete it first or deploy under another --name."
            )
        client.json("PUT", function_path(name, "/code"), {"ZipFile": code})
        _wait_until_ready(client, name)
        changes: dict[str, Any] = {}
        if handler is not None:
            changes["Handler"] = handler
        if runtime is not None:
            changes["Runtime"] = runtime
        if memory is not None:
            changes["MemorySize"] = memory
        if timeout is not None:
            changes["Timeout"] = timeout
        if changes:
            client.json("PUT", function_path(name, "/configuration"), changes)
        action = "updated"
    config = _wait_until_ready(client, name)
    mode = "tenant isolation PER_TENANT" if "TenancyConfig" in config else "no tenant isolation"
    print(f"{action} {config['FunctionName']} ({config['Runtime']}, handler {config['Handler']}, {mode})")
    print(f"  arn:    {config['FunctionArn']}")
    print(f"  code:   {config['CodeSize']} bytes, sha256 {config['CodeSha256']}")
    tenant_flag = " --tenant TENANT" if "TenancyConfig" in config else ""
    print(f"  invoke: silo invoke {name}{tenant_flag} --payload '{{}}'")
    return 0


def invoke(client: Client, name: str, tenant: str | None, payload: str, show_logs: bool) -> int:
    try:
        json.loads(payload)
    except ValueError as exc:
        raise SystemExit(f"silo: --payload must be JSON ({exc}); for example --payload '{{\"key\": 1}}'") from None
    headers = {"Content-Type": "application/json"}
    if tenant is not None:
        headers["X-Amz-Tenant-Id"] = tenant
    if show_logs:
        headers["X-Amz-Log-Type"] = "Tail"
    reply = client.request("POST", function_path(name, "/invocations"), payload.encode(), headers)
    if show_logs and "x-amz-log-result" in reply.headers:
        sys.stderr.write(base64.b64decode(reply.headers["x-amz-log-result"]).decode(errors="replace"))
    sys.stdout.write(reply.body.decode(errors="replace") + "\n")
    if "x-amz-function-error" in reply.headers:
        print(
            f"silo: the function failed ({reply.headers['x-amz-function-error']}); "
            "its error is printed above. Add --logs to see its log.",
            file=sys.stderr,
        )
        return 1
    return 0


def settings(client: Client, name: str, changes: dict[str, Any]) -> int:
    """Show silo's own settings of a function, changing those given first."""
    path = f"/silo/v1/functions/{urllib.parse.quote(name, safe='')}/settings"
    current = client.json("PUT", path, changes) if changes else client.json("GET", path)
    for key, value in current.items():
        if key in ("Gateway", "Credentials"):
            shown = "none" if value is None else json.dumps(value, separators=(",", ":"))
        elif key == "HostServices":
            shown = ", ".join(value) or "none"
        else:
            shown = "no cap" if value is None else value
        print(f"{key:22} {shown}")
    if changes:
        print("(environments of the function were retired; new calls start fresh ones with these settings)")
    return 0


def json_setting(flag: str, raw: str) -> dict[str, Any] | None:
    """The object setting a flag gives (`--gateway`, `--credentials`): JSON, @file of JSON, or none (the
    server checks the rest)."""
    if raw.lower() == "none":
        return None
    text = raw
    if raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text()
        except OSError as exc:
            raise ValueError(f"{flag} {raw}: cannot read {raw[1:]}: {exc.strerror}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{flag} takes a JSON object, @file.json or none; it is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} takes a JSON object, @file.json or none; got {type(value).__name__}")
    return value
