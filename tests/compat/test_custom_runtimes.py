"""Custom runtimes as on Lambda: an executable `bootstrap`, including the unmodified awslambdaric from PyPI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support import AWSLAMBDARIC_REQUIREMENTS, ROLE, payload_of, zip_files

# A complete custom runtime in a few lines: it speaks the Runtime API itself.
SCRIPT_BOOTSTRAP = """#!/usr/bin/env python3
import json, os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime/invocation/"
while True:
    with urllib.request.urlopen(api + "next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        tenant = r.headers.get("Lambda-Runtime-Aws-Tenant-Id")
        event = json.loads(r.read())
    body = json.dumps({"tenant": tenant, "event": event, "handler": os.environ["_HANDLER"]}).encode()
    urllib.request.urlopen(urllib.request.Request(api + rid + "/response", data=body, method="POST")).read()
"""


def test_provided_runtime_runs_bootstrap(lambda_client: Any, unique_name: str) -> None:
    code = zip_files({"bootstrap": SCRIPT_BOOTSTRAP}, modes={"bootstrap": 0o755})
    lambda_client.create_function(
        FunctionName=unique_name,
        Runtime="provided.al2023",
        Role=ROLE,
        Handler="anything.here",
        Code={"ZipFile": code},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=unique_name)
    out = payload_of(lambda_client.invoke(FunctionName=unique_name, TenantId="red", Payload=b'{"a": 1}'))
    assert out == {"tenant": "red", "event": {"a": 1}, "handler": "anything.here"}


def test_provided_runtime_without_bootstrap_fails_cleanly(lambda_client: Any, unique_name: str) -> None:
    lambda_client.create_function(
        FunctionName=unique_name,
        Runtime="provided.al2",
        Role=ROLE,
        Handler="x",
        Code={"ZipFile": zip_files({"README": "no bootstrap here"})},
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=unique_name)
    response = lambda_client.invoke(FunctionName=unique_name)
    assert response["FunctionError"] == "Unhandled"
    assert payload_of(response)["errorType"] == "Runtime.InvalidEntrypoint"


# What `python3` is inside an environment: silo gives runtimes this PATH.
ENV_PATH = "/usr/local/bin:/usr/bin:/bin"


@pytest.fixture(scope="session")
def awslambdaric_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """awslambdaric from PyPI, built for the `python3` that the bootstrap will find in the environment, at the
    versions and hashes of requirements/awslambdaric.txt."""
    version = subprocess.run(
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PATH": ENV_PATH},
    ).stdout.strip()
    target = tmp_path_factory.mktemp("ric")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--python-version",
            version,
            "--target",
            str(target),
            "--require-hashes",
            "-r",
            str(AWSLAMBDARIC_REQUIREMENTS),
        ],
        check=True,
        timeout=600,
    )
    return target


def _zip_tree(root: Path, extra: dict[str, tuple[str, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = (0o100000 | (path.stat().st_mode & 0o777)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        for name, (content, mode) in extra.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, content)
    return buf.getvalue()


def test_unmodified_awslambdaric(lambda_client: Any, unique_name: str, awslambdaric_dir: Path) -> None:
    app = (
        "import logging\n"
        "def handler(event, context):\n"
        "    logging.getLogger().info('ric says hi')\n"
        "    return {'tenant': context.tenant_id, 'event': event, 'request': context.aws_request_id}\n"
    )
    bootstrap = "#!/bin/sh\nexec python3 -m awslambdaric app.handler\n"
    code = _zip_tree(awslambdaric_dir, {"app.py": (app, 0o644), "bootstrap": (bootstrap, 0o755)})
    lambda_client.create_function(
        FunctionName=unique_name,
        Runtime="provided.al2023",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": code},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
        Timeout=30,
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=unique_name)
    for tenant in ("green", "green", "blue"):
        response = lambda_client.invoke(FunctionName=unique_name, TenantId=tenant, Payload=json.dumps({"n": 1}))
        assert "FunctionError" not in response, payload_of(response)
        out = payload_of(response)
        assert out["tenant"] == tenant
        assert out["event"] == {"n": 1}
        assert out["request"] == response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
