"""The built-in Node.js runtime as a real node process, talking to a real RuntimeChannel over TCP: what its
HTTP client must get right below the server (bodies across reads, answers pipelined behind results, a
refused answer, UTF-8 in headers). Behaviour through the whole server is in tests/compat/test_node.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from silo.runtime_api import RuntimeChannel, RuntimeReply
from silo.runtimes import catalog
from silo.types import Invocation
from tests.support import listening_socket

NODE = catalog.node_interpreter()
pytestmark = pytest.mark.skipif(NODE is None, reason="no node of a version silo serves (20, 22) on PATH")
ARN = "arn:aws:lambda:us-east-1:123456789012:function:fn"

ECHO = """
exports.handler = async (event, context) => ({
  size: JSON.stringify(event).length,
  pad: event.pad ? 'y'.repeat(event.pad) : '',
  tenant: context.tenantId ?? null,
  client: context.clientContext ?? null,
  requestId: context.awsRequestId,
});
"""


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


class Environment:
    def __init__(self, channel: RuntimeChannel, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.channel = channel
        self.proc = proc
        self.log = log

    async def invoke(self, payload: object, request_id: str, **extra: str | None) -> RuntimeReply:
        inv = Invocation(request_id, json.dumps(payload).encode(), extra.pop("tenant", None), ARN, **extra)
        return await self.channel.submit(inv, int(time.time() * 1000) + 3000)


@contextlib.asynccontextmanager
async def environment(code: Path, max_response_bytes: int = 6 * 1024 * 1024 + 100) -> AsyncIterator[Environment]:
    assert NODE is not None
    channel = RuntimeChannel(max_response_bytes=max_response_bytes)
    sock = listening_socket()
    await channel.start(sock)
    log = code.parent / "runtime.log"
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{sock.getsockname()[1]}",
        "_HANDLER": "index.handler",
        "LAMBDA_TASK_ROOT": str(code),
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
    }
    argv = catalog.launch_command(NODE.runtime, str(code), str(catalog.BUILTIN_NODE_ENTRY.parent))
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=code, env=environ, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield Environment(channel, proc, log)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await channel.close()


def function(tmp_path: Path, source: str = ECHO) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "index.js").write_text(source)
    return code


def test_many_calls_and_bodies_larger_than_one_read(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with environment(function(tmp_path)) as env:
            assert await env.channel.initialized is None
            for i in range(40):
                reply = await env.invoke({"i": i}, f"r{i}", tenant="blue")
                assert reply.kind == "response", reply.body
                assert json.loads(reply.body)["requestId"] == f"r{i}"
            # An event and an answer of megabytes each cross many reads of the socket, both ways.
            big = {"blob": "x" * (3 << 20), "pad": 2 << 20}
            reply = await env.invoke(big, "big")
            body = json.loads(reply.body)
            assert body["size"] == len(json.dumps(big, separators=(",", ":"))) and len(body["pad"]) == 2 << 20
            assert json.loads((await env.invoke({}, "after")).body)["requestId"] == "after"

    run(scenario)


def test_an_answer_refused_as_too_large_leaves_the_runtime_serving(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with environment(function(tmp_path), max_response_bytes=64 * 1024) as env:
            refused = await env.invoke({"pad": 200 * 1024}, "r1")
            assert refused.kind == "error" and refused.error_type == "Function.ResponseSizeTooLarge"
            # The GET /next sent behind the refused answer may have been dropped with its connection.
            for i in range(3):
                reply = await env.invoke({"pad": 10}, f"r{i + 2}")
                assert reply.kind == "response" and json.loads(reply.body)["pad"] == "y" * 10
            assert env.proc.returncode is None

    run(scenario)


def test_a_client_context_beyond_ascii_reaches_the_handler_intact(tmp_path: Path) -> None:
    custom = {"name": "Zoë ☃", "city": "Zürich"}
    encoded = base64.b64encode(json.dumps({"custom": custom}, ensure_ascii=False).encode()).decode()

    async def scenario() -> None:
        async with environment(function(tmp_path)) as env:
            reply = await env.invoke({}, "r1", tenant="blue", client_context=encoded)
            body = json.loads(reply.body)
            assert body["client"] == {"custom": custom} and body["tenant"] == "blue"

    run(scenario)
