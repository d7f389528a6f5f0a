"""The built-in Python runtime as a real process, talking to a real RuntimeChannel over TCP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from silo.runtime_api import RuntimeChannel, RuntimeReply
from silo.runtimes import catalog
from silo.types import Invocation
from tests.support import listening_socket

ARN = "arn:aws:lambda:us-east-1:123456789012:function:fn"

ECHO = """
import logging

def handler(event, context):
    logging.getLogger("app").info("serving %s", context.aws_request_id)
    return {
        "event": event,
        "tenant_id": context.tenant_id,
        "remaining": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "memory": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "request_id": context.aws_request_id,
    }
"""


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


class Environment:
    def __init__(self, channel: RuntimeChannel, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.channel = channel
        self.proc = proc
        self.log = log

    async def invoke(self, payload: object, tenant: str | None = None, request_id: str = "req") -> RuntimeReply:
        inv = Invocation(request_id, json.dumps(payload).encode(), tenant, ARN)
        return await self.channel.submit(inv, int(time.time() * 1000) + 3000)


@contextlib.asynccontextmanager
async def environment(
    code: Path,
    handler: str = "app.handler",
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    max_response_bytes: int = 6 * 1024 * 1024 + 100,
) -> AsyncIterator[Environment]:
    channel = RuntimeChannel(max_response_bytes=max_response_bytes)
    sock = listening_socket()
    port = sock.getsockname()[1]
    await channel.start(sock)
    log = code.parent / f"{code.name}.log"
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "_HANDLER": handler,
        "LAMBDA_TASK_ROOT": str(code),
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        **(env or {}),
    }
    with open(log, "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            python, "-S", "-B", str(catalog.BUILTIN_PYTHON_BOOTSTRAP),
            cwd=code, env=environ, stdout=out, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        yield Environment(channel, proc, log)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await channel.close()


def function(tmp_path: Path, source: str, name: str = "app.py") -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / name).write_text(source)
    return code


def interpreter(runtime: str) -> str:
    return str(catalog.python_interpreters()[runtime].executable)


# Every interpreter this host has; silo serves exactly these as python3.x runtimes.
@pytest.mark.parametrize("runtime", sorted(catalog.python_interpreters()))
def test_echo_tenant_and_context_on_every_python(tmp_path: Path, runtime: str) -> None:
    python = interpreter(runtime)

    async def scenario() -> None:
        async with environment(function(tmp_path, ECHO), python=python) as env:
            assert await env.channel.initialized is None
            reply = await env.invoke({"hello": "world"}, tenant="blue", request_id="r1")
            assert reply.kind == "response"
            assert reply.content_type == "application/json"
            body = json.loads(reply.body)
            assert body["event"] == {"hello": "world"}
            assert body["tenant_id"] == "blue"
            assert 0 < body["remaining"] <= 3000
            assert (body["function_name"], body["memory"], body["arn"], body["request_id"]) == ("fn", "128", ARN, "r1")
            body = json.loads((await env.invoke([1, 2], request_id="r2")).body)
            assert body["event"] == [1, 2]
            assert body["tenant_id"] is None

    run(scenario)


def test_a_client_context_beyond_ascii_reaches_the_handler_intact(tmp_path: Path) -> None:
    source = "def handler(event, context):\n    return context.client_context.custom\n"
    custom = {"name": "Zoë ☃", "city": "Zürich"}
    encoded = base64.b64encode(json.dumps({"custom": custom}, ensure_ascii=False).encode()).decode()

    async def scenario() -> None:
        async with environment(function(tmp_path, source)) as env:
            inv = Invocation("r1", b"{}", "blue", ARN, client_context=encoded)
            reply = await env.channel.submit(inv, int(time.time() * 1000) + 3000)
            assert reply.kind == "response"
            assert json.loads(reply.body) == custom

    run(scenario)


def test_handler_exception_payload(tmp_path: Path) -> None:
    source = "def handler(event, context):\n    raise ValueError('Handler fails')\n"

    async def scenario() -> None:
        code = function(tmp_path, source)
        async with environment(code) as env:
            reply = await env.invoke({}, request_id="r-err")
            assert (reply.kind, reply.error_type) == ("error", "ValueError")
            assert json.loads(reply.body) == {
                "errorMessage": "Handler fails",
                "errorType": "ValueError",
                "requestId": "r-err",
                "stackTrace": [
                    f"  File \"{code / 'app.py'}\", line 2, in handler\n    raise ValueError('Handler fails')\n"
                ],
            }
            assert (await env.invoke({})).kind == "error"  # and the loop goes on
            assert "[ERROR] ValueError: Handler fails\rTraceback" in env.log.read_bytes().decode()

    run(scenario)


def test_import_error_is_an_init_error_and_the_process_exits_1(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with environment(function(tmp_path, "import not_a_module\n")) as env:
            reply = await env.channel.initialized
            assert reply is not None
            assert (reply.kind, reply.error_type) == ("init_error", "Runtime.ImportModuleError")
            doc = json.loads(reply.body)
            assert doc["errorMessage"] == "Unable to import module 'app': No module named 'not_a_module'"
            assert doc["requestId"] == ""
            assert await asyncio.wait_for(env.proc.wait(), 10) == 1
            assert "[ERROR] Runtime.ImportModuleError: Unable to import module 'app'" in env.log.read_text()

    run(scenario)


def test_response_too_large(tmp_path: Path) -> None:
    source = "def handler(event, context):\n    return 'x' * event\n"

    async def scenario() -> None:
        async with environment(function(tmp_path, source), max_response_bytes=1000) as env:
            reply = await env.invoke(2000)
            assert (reply.kind, reply.error_type) == ("error", "Function.ResponseSizeTooLarge")
            assert json.loads(reply.body)["errorType"] == "Function.ResponseSizeTooLarge"
            assert (await env.invoke(10)).body == b'"xxxxxxxxxx"'  # the runtime survived the 413

    run(scenario)


def test_100_warm_invocations_on_one_process(tmp_path: Path) -> None:
    source = "def handler(event, context):\n    return {'n': event['n'], 'rid': context.aws_request_id}\n"

    async def scenario() -> None:
        async with environment(function(tmp_path, source)) as env:
            await env.channel.initialized
            for n in range(100):
                reply = await env.invoke({"n": n}, request_id=f"r{n}")
                assert json.loads(reply.body) == {"n": n, "rid": f"r{n}"}
            assert env.proc.returncode is None

    run(scenario)


def test_output_is_flushed_before_the_answer(tmp_path: Path) -> None:
    source = "import sys\ndef handler(event, context):\n    sys.stdout.write('no newline yet')\n    return 1\n"

    async def scenario() -> None:
        async with environment(function(tmp_path, source)) as env:
            seen: list[str] = []
            env.channel.on_output_flush = lambda: seen.append(env.log.read_text())
            await env.invoke({})
            assert "no newline yet" in seen[0]

    run(scenario)


def test_runtime_modules_do_not_shadow_the_functions(tmp_path: Path) -> None:
    # The runtime's own files are called loop.py, client.py, handler.py...; so may a function's.
    source = "import client, handler\ndef handler_fn(event, context):\n    return client.X + handler.Y\n"
    code = function(tmp_path, source, name="loop.py")
    (code / "client.py").write_text("X = 'mine'\n")
    (code / "handler.py").write_text("Y = '!'\n")

    async def scenario() -> None:
        async with environment(code, handler="loop.handler_fn") as env:
            assert (await env.invoke({})).body == b'"mine!"'

    run(scenario)


def test_json_logs_carry_the_tenant(tmp_path: Path) -> None:
    async def scenario() -> None:
        env_vars = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "INFO"}
        async with environment(function(tmp_path, ECHO), env=env_vars) as env:
            await env.invoke({}, tenant="green", request_id="r-json")
            records = [json.loads(line) for line in env.log.read_text().splitlines() if line.startswith("{")]
            assert records == [
                {
                    "timestamp": records[0]["timestamp"],
                    "level": "INFO",
                    "message": "serving r-json",
                    "logger": "app",
                    "requestId": "r-json",
                    "tenantId": "green",
                }
            ]

    run(scenario)


def test_the_runtime_exits_when_the_platform_goes_away(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with environment(function(tmp_path, ECHO)) as env:
            await env.channel.initialized
            await env.channel.close()
            assert await asyncio.wait_for(env.proc.wait(), 10) != 0

    run(scenario)


def submit(channel: RuntimeChannel, request_id: str) -> asyncio.Future[RuntimeReply]:
    return channel.submit(Invocation(request_id, b"{}", "blue", ARN), int(time.time() * 1000) + 3000)


def test_client_uses_the_connection_it_was_given() -> None:
    from silo.runtimes.python.client import RuntimeClient

    async def scenario() -> None:
        channel = RuntimeChannel()
        sock = listening_socket()
        ours, theirs = socket.socketpair()
        await channel.start(sock, theirs)
        # An address nothing listens on: every byte must go over the connection it was given.
        client = RuntimeClient("127.0.0.1:9", ours.detach())
        try:
            got = asyncio.ensure_future(asyncio.to_thread(client.wait_next_invocation))
            first = submit(channel, "req-1")
            assert (await got).request_id == "req-1"
            posted = asyncio.ensure_future(
                asyncio.to_thread(client.post_invocation_result, "req-1", b"1", "application/json")
            )
            assert (await first).body == b"1"
            # The 202 waits for the GET /next the client sent behind its result, and goes out with the next event.
            await asyncio.sleep(0.05)
            assert not posted.done()
            second = submit(channel, "req-2")
            assert await posted == 202
            assert (await asyncio.to_thread(client.wait_next_invocation)).request_id == "req-2"
            second.cancel()
        finally:
            client.close()
            await channel.close()

    run(scenario)


def test_client_connects_when_the_connection_it_was_given_is_gone() -> None:
    from silo.runtimes.python.client import RuntimeClient

    async def scenario() -> None:
        channel = RuntimeChannel()
        sock = listening_socket()
        await channel.start(sock)
        ours, theirs = socket.socketpair()
        theirs.close()
        client = RuntimeClient(f"127.0.0.1:{sock.getsockname()[1]}", ours.detach())
        try:
            got = asyncio.ensure_future(asyncio.to_thread(client.wait_next_invocation))
            first = submit(channel, "req-1")
            assert (await got).request_id == "req-1"
            first.cancel()
        finally:
            client.close()
            await channel.close()

    run(scenario)


WAKE_COUNTER = """
import sys
from silo.runtimes.python.client import RuntimeClient

def switches():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))

client = RuntimeClient("127.0.0.1:9", int(sys.argv[1]))
event = client.wait_next_invocation()
start = switches()
for _ in range(int(sys.argv[2])):
    client.post_invocation_result(event.request_id, b"1", "application/json")
    event = client.wait_next_invocation()
print(switches() - start)
"""


def test_client_waiting_for_an_invocation_sleeps_once_per_call() -> None:
    """The client's result and its pipelined GET /next are read by the platform while the client waits for the
    next invocation. On a local stream socket that read signals write space on the queue the client sleeps on;
    a client blocked in recv() would wake for it and sleep again: two wake-ups per call instead of one."""
    calls = 40
    ours, theirs = socket.socketpair()
    child = subprocess.Popen(
        [sys.executable, "-c", WAKE_COUNTER, str(ours.fileno()), str(calls)],
        pass_fds=[ours.fileno()],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    ours.close()
    next_answer = (
        b"HTTP/1.1 200 OK\r\nLambda-Runtime-Aws-Request-Id: req\r\nLambda-Runtime-Deadline-Ms: 0\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    try:
        theirs.settimeout(30)
        got = b""
        for round_ in range(calls + 1):
            wanted = round_ + 1  # every round ends with one more GET /next
            while got.count(b"GET /2018-06-01/runtime/invocation/next") < wanted:
                select.select([theirs], [], [], 30)
                time.sleep(0.005)  # the client is asleep in its read by now; what we read next is its request
                got += theirs.recv(65536)
            time.sleep(0.005)
            theirs.sendall((b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n" if round_ else b"") + next_answer)
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
        theirs.close()
    slept = int(out)
    assert slept <= calls + calls // 4, f"{slept} sleeps for {calls} calls"
