"""Unmodified awslambdaric (AWS's Python runtime client, from PyPI) against a RuntimeChannel.

It is installed once into pytest's cache directory from PyPI; an install that fails fails the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silo.runtime_api import RuntimeChannel
from silo.types import Invocation
from tests.support import AWSLAMBDARIC_REQUIREMENTS

ARN = "arn:aws:lambda:us-east-1:123456789012:function:ric"
SOURCE = """
def handler(event, context):
    if event.get("fail"):
        raise KeyError("nope")
    return {"tenant_id": context.tenant_id, "request_id": context.aws_request_id, "event": event}
"""


@pytest.fixture(scope="module")
def awslambdaric(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tag = f"awslambdaric-py{sys.version_info[0]}{sys.version_info[1]}"
    # pytest's cache keeps it between runs; without the cache plugin (-p no:cacheprovider) it has no `cache`.
    cache = getattr(request.config, "cache", None)
    target = cache.mkdir(tag) if cache is not None else tmp_path_factory.mktemp(tag)
    if not (target / "awslambdaric").is_dir():
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        done = subprocess.run(
            [*command, "--target", str(target), "--require-hashes", "-r", str(AWSLAMBDARIC_REQUIREMENTS)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, f"awslambdaric could not be installed from PyPI: {done.stderr[-300:]}"
    return target


def test_awslambdaric_gets_the_tenant_and_reports_errors(awslambdaric: Path, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(SOURCE)

    async def scenario() -> None:
        channel = RuntimeChannel()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        await channel.start(sock)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(awslambdaric),
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
            "LAMBDA_TASK_ROOT": str(tmp_path),
        }
        with open(tmp_path / "out.log", "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "awslambdaric", "app.handler", cwd=tmp_path, env=env, stdout=out, stderr=out
            )
        try:
            assert await asyncio.wait_for(channel.initialized, 30) is None

            async def invoke(rid: str, event: dict[str, bool], tenant: str | None) -> tuple[str, dict[str, object]]:
                inv = Invocation(rid, json.dumps(event).encode(), tenant, ARN)
                reply = await asyncio.wait_for(channel.submit(inv, int(time.time() * 1000) + 5000), 30)
                return reply.kind, json.loads(reply.body)

            assert await invoke("r1", {}, "blue") == (
                "response",
                {"tenant_id": "blue", "request_id": "r1", "event": {}},
            )
            kind, body = await invoke("r2", {}, None)
            assert (kind, body["tenant_id"]) == ("response", None)
            kind, body = await invoke("r3", {"fail": True}, "blue")
            assert kind == "error"
            assert (body["errorType"], body["errorMessage"], body["requestId"]) == ("KeyError", "'nope'", "r3")
            assert "app.py" in body["stackTrace"][0]  # type: ignore[index]
        finally:
            proc.kill()
            await proc.wait()
            await channel.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
