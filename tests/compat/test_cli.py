"""The `silo` CLI and the AWS CLI against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import ROLE, zip_files

APP = (
    "import os\ncount = 0\ndef handler(event, context):\n    global count\n    count += 1\n"
    "    return {'tenant': context.tenant_id, 'count': count, 'event': event}\n"
)


def silo(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "silo", *args, "--endpoint", server.endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **server.aws_env()},
    )


def test_silo_deploy_and_invoke(silo_server: Any, tmp_path: Path, unique_name: str) -> None:
    (tmp_path / "app.py").write_text(APP)
    deployed = silo(silo_server, "deploy", str(tmp_path), "--name", unique_name, "--tenant-isolation")
    assert deployed.returncode == 0, deployed.stderr
    assert "created" in deployed.stdout and "PER_TENANT" in deployed.stdout
    first = silo(silo_server, "invoke", unique_name, "--tenant", "acme", "--payload", '{"x": 1}')
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"tenant": "acme", "count": 1, "event": {"x": 1}}
    assert json.loads(silo(silo_server, "invoke", unique_name, "--tenant", "acme").stdout)["count"] == 2
    assert json.loads(silo(silo_server, "invoke", unique_name, "--tenant", "other").stdout)["count"] == 1

    (tmp_path / "app.py").write_text("def handler(event, context):\n    return 'new code'\n")
    updated = silo(silo_server, "deploy", str(tmp_path), "--name", unique_name)
    assert updated.returncode == 0, updated.stderr
    assert "updated" in updated.stdout
    assert json.loads(silo(silo_server, "invoke", unique_name, "--tenant", "acme").stdout) == "new code"


def test_silo_cli_errors_speak_plainly(silo_server: Any, tmp_path: Path, unique_name: str) -> None:
    (tmp_path / "app.py").write_text(APP)
    assert silo(silo_server, "deploy", str(tmp_path), "--name", unique_name, "--tenant-isolation").returncode == 0
    missing = silo(silo_server, "invoke", unique_name)
    assert missing.returncode == 1
    assert "InvalidParameterValueException" in missing.stderr and "X-Amz-Tenant-Id" in missing.stderr
    unknown = silo(silo_server, "invoke", "nobody-here", "--tenant", "a")
    assert unknown.returncode == 1 and "ResourceNotFoundException" in unknown.stderr
    bad_json = silo(silo_server, "invoke", unique_name, "--tenant", "a", "--payload", "{nope")
    assert bad_json.returncode != 0 and "--payload must be JSON" in bad_json.stderr
    not_dir = silo(silo_server, "deploy", str(tmp_path / "absent"), "--name", unique_name)
    assert not_dir.returncode != 0 and "not a directory" in not_dir.stderr
    down = subprocess.run(
        [sys.executable, "-m", "silo", "invoke", unique_name, "--endpoint", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "no silo server answers" in down.stderr
    failing = tmp_path / "failing"
    failing.mkdir()
    (failing / "app.py").write_text("def handler(e, c):\n    raise RuntimeError('boom')\n")
    assert silo(silo_server, "deploy", str(failing), "--name", unique_name + "-f").returncode == 0
    failed = silo(silo_server, "invoke", unique_name + "-f", "--logs")
    assert failed.returncode == 1
    assert "RuntimeError" in failed.stdout and "the function failed" in failed.stderr
    assert "START RequestId" in failed.stderr


def test_aws_cli_invokes_as_a_tenant(aws_cli: Any, tmp_path: Path, unique_name: str) -> None:
    zip_path = tmp_path / "code.zip"
    zip_path.write_bytes(zip_files({"app.py": APP}))
    created = aws_cli(
        "lambda",
        "create-function",
        "--function-name",
        unique_name,
        "--runtime",
        f"python3.{sys.version_info.minor}",
        "--role",
        ROLE,
        "--handler",
        "app.handler",
        "--zip-file",
        f"fileb://{zip_path}",
        "--tenancy-config",
        '{"TenantIsolationMode": "PER_TENANT"}',
    )
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    assert aws_cli("lambda", "wait", "function-active-v2", "--function-name", unique_name).returncode == 0
    out = tmp_path / "out.json"
    for tenant, expected in (("blue", 1), ("blue", 2), ("red", 1)):
        called = aws_cli(
            "lambda",
            "invoke",
            "--function-name",
            unique_name,
            "--tenant-id",
            tenant,
            "--payload",
            '{"k": "v"}',
            str(out),
        )
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout)["StatusCode"] == 200
        assert json.loads(out.read_text()) == {"tenant": tenant, "count": expected, "event": {"k": "v"}}
    refused = aws_cli("lambda", "invoke", "--function-name", unique_name, str(out))
    assert refused.returncode != 0
    assert "InvalidParameterValueException" in refused.stderr
