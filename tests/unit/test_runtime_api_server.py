"""RuntimeChannel driven by a raw HTTP client: the Runtime API as a runtime sees it on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from silo.runtime_api import ChannelClosed, RuntimeChannel, RuntimeReply, paths
from silo.types import Invocation
from tests.support import listening_socket

ARN = "arn:aws:lambda:us-east-1:123456789012:function:echo"
NEXT = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: rapi\r\n\r\n"


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


def invocation(request_id: str = "req-1", payload: bytes = b'{"n": 1}', tenant: str | None = "blue") -> Invocation:
    return Invocation(request_id=request_id, payload=payload, tenant_id=tenant, invoked_arn=ARN)


def deadline() -> int:
    return int(time.time() * 1000) + 3000


def post(path: str, body: bytes, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"POST {path} HTTP/1.1\r\nHost: rapi\r\n{extra}Content-Length: {len(body)}\r\n\r\n".encode() + body


class Raw:
    """A runtime's side of one connection, byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class Rig:
    """A serving channel and the raw connections a test opened to it, all closed at the end."""

    def __init__(self, channel: RuntimeChannel, port: int) -> None:
        self.channel = channel
        self.port = port
        self.raws: list[Raw] = []

    async def connect(self) -> Raw:
        raw = await Raw.connect(self.port)
        self.raws.append(raw)
        return raw


@contextlib.asynccontextmanager
async def serving(**kwargs: int) -> AsyncIterator[Rig]:
    channel = RuntimeChannel(**kwargs)
    sock = listening_socket()
    rig = Rig(channel, sock.getsockname()[1])
    await channel.start(sock)
    try:
        yield rig
    finally:
        for raw in rig.raws:
            await raw.close()
        await channel.close()


async def delivered(channel: RuntimeChannel, raw: Raw, inv: Invocation) -> asyncio.Future[RuntimeReply]:
    """Poll, submit, and read the /next answer: the invocation is now in the runtime's hands."""
    await raw.send(NEXT)
    future = channel.submit(inv, deadline())
    status, headers, _ = await raw.answer()
    assert status == 200
    assert headers["lambda-runtime-aws-request-id"] == inv.request_id
    return future


def test_next_answer_carries_the_invocation() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            await raw.send(NEXT)
            assert await asyncio.wait_for(channel.initialized, 5) is None
            context = "eyJjdXN0b20iOiB7ImEiOiAxfX0="  # {"custom": {"a": 1}}
            inv = Invocation("req-1", b'{"n": 1}', "blue", ARN + ":7", client_context=context)
            when = deadline()
            channel.submit(inv, when)
            status, headers, body = await raw.answer()
            assert status == 200
            assert body == b'{"n": 1}'
            assert headers["content-type"] == "application/json"
            assert headers[paths.REQUEST_ID.lower()] == "req-1"
            assert headers[paths.DEADLINE_MS.lower()] == str(when)
            assert headers[paths.INVOKED_FUNCTION_ARN.lower()] == ARN + ":7"
            assert headers[paths.TENANT_ID.lower()] == "blue"
            assert json.loads(headers[paths.CLIENT_CONTEXT.lower()]) == {"custom": {"a": 1}}
            trace = headers[paths.TRACE_ID.lower()]
            assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0", trace)

    run(scenario)


def test_no_tenant_header_without_a_tenant() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            channel.submit(invocation(tenant=None), deadline())  # queued before the runtime polls
            await raw.send(NEXT)
            _, headers, _ = await raw.answer()
            assert paths.TENANT_ID.lower() not in headers
            assert paths.CLIENT_CONTEXT.lower() not in headers

    run(scenario)


def test_response_resolves_the_invocation() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            assert channel.in_flight == "req-1"
            await raw.send(post(paths.response_path("req-1"), b'{"ok": true}', "Content-Type: application/json"))
            assert await raw.answer() == (
                202,
                {"content-type": "application/json", "content-length": "15"},
                b'{"status":"OK"}',
            )
            assert await future == RuntimeReply("response", b'{"ok": true}', "application/json", None)
            assert channel.in_flight is None

    run(scenario)


@pytest.mark.parametrize(
    ("header", "body", "error_type"),
    [
        (None, b'{"errorMessage": "x", "errorType": "ValueError"}', "ValueError"),  # awslambdaric: no header
        ("Function.Crashed", b'{"errorMessage": "x", "errorType": "ValueError"}', "Function.Crashed"),
        ("not a type", b'{"errorMessage": "x", "errorType": "ValueError"}', "ValueError"),
        ("Function.oops", b"{}", "Function.Unknown"),
    ],
)
def test_error_type_from_header_or_body(header: str | None, body: bytes, error_type: str) -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            headers = [f"{paths.FUNCTION_ERROR_TYPE}: {header}"] if header else []
            await raw.send(post(paths.error_path("req-1"), body, *headers))
            assert (await raw.answer())[0] == 202
            reply = await future
            assert (reply.kind, reply.body, reply.error_type) == ("error", body, error_type)

    run(scenario)


def test_error_body_that_is_not_json_is_wrapped_in_lambdas_shape() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(post(paths.error_path("req-1"), b"segfault, sorry"))
            assert (await raw.answer())[0] == 202
            reply = await future
            assert json.loads(reply.body) == {"errorMessage": "segfault, sorry", "errorType": "Runtime.Unknown"}

    run(scenario)


def test_wrong_request_id_is_400_and_the_invocation_stays_open() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(post(paths.response_path("someone-else"), b"{}"))
            status, _, body = await raw.answer()
            assert status == 400
            assert json.loads(body)["errorType"] == "InvalidRequestID"
            assert not future.done()
            await raw.send(post(paths.response_path("req-1"), b"1"))
            assert (await raw.answer())[0] == 202
            assert (await future).body == b"1"

    run(scenario)


def test_answering_twice_is_an_invalid_state_transition() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(post(paths.response_path("req-1"), b"1"))
            assert (await raw.answer())[0] == 202
            await raw.send(post(paths.error_path("req-1"), b"{}"))
            status, _, body = await raw.answer()
            assert status == 403
            assert json.loads(body)["errorType"] == "InvalidStateTransition"
            assert (await future).kind == "response"

    run(scenario)


def test_response_too_large_is_413_and_function_error() -> None:
    async def scenario() -> None:
        async with serving(max_response_bytes=1000) as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(post(paths.response_path("req-1"), b"x" * 1001))
            status, _, body = await raw.answer()
            assert status == 413
            assert json.loads(body) == {
                "errorMessage": "Exceeded maximum allowed payload size (1000 bytes).",
                "errorType": "RequestEntityTooLarge",
            }
            reply = await future
            assert reply.kind == "error"
            assert reply.error_type == "Function.ResponseSizeTooLarge"
            assert json.loads(reply.body) == {
                "errorMessage": "Response payload size exceeded maximum allowed payload size (1000 bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
            }
            # The body was read and dropped, so the same connection carries on.
            future = await delivered(channel, raw, invocation("req-2"))
            await raw.send(post(paths.response_path("req-2"), b"x" * 1000))
            assert (await raw.answer())[0] == 202
            assert len((await future).body) == 1000

    run(scenario)


def test_default_limit_is_lambdas() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(post(paths.response_path("req-1"), b"x" * (6 * 1024 * 1024 + 101)))
            status, _, body = await raw.answer()
            assert status == 413
            assert b"(6291556 bytes)" in body
            assert (await future).error_type == "Function.ResponseSizeTooLarge"

    run(scenario)


def test_chunked_response_body_is_accepted() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(
                f"POST {paths.response_path('req-1')} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            assert (await raw.answer())[0] == 202
            assert (await future).body == b"abcde"

    run(scenario)


def test_expect_100_continue() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            head = f"POST {paths.response_path('req-1')} HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"
            await raw.send(head.encode())
            assert await raw.reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            await raw.send(b"done")
            assert (await raw.answer())[0] == 202
            assert (await future).body == b"done"

    run(scenario)


def test_expect_100_continue_too_large_is_refused_before_the_body() -> None:
    async def scenario() -> None:
        async with serving(max_response_bytes=10) as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            head = f"POST {paths.response_path('req-1')} HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
            await raw.send(head.encode())
            status, headers, _ = await raw.answer()
            assert (status, headers.get("connection")) == (413, "close")
            assert await raw.reader.read() == b""  # the body will never come, so the connection ends
            assert (await future).error_type == "Function.ResponseSizeTooLarge"

    run(scenario)


def test_request_split_across_many_writes() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            for i in range(0, len(NEXT), 7):
                await raw.send(NEXT[i : i + 7])
                await asyncio.sleep(0.001)
            future = channel.submit(invocation(), deadline())
            assert (await raw.answer())[2] == b'{"n": 1}'
            message = post(paths.response_path("req-1"), b'{"split": "across writes"}')
            for i in range(len(message)):
                await raw.send(message[i : i + 1])
            assert (await raw.answer())[0] == 202
            assert (await future).body == b'{"split": "across writes"}'

    run(scenario)


def test_pipelined_requests_are_answered_in_order() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            # A 404 queued behind a parked /next must wait for it.
            await raw.send(NEXT + b"GET /nowhere HTTP/1.1\r\n\r\n")
            await asyncio.sleep(0.05)
            channel.submit(invocation(), deadline())
            first = await raw.answer()
            second = await raw.answer()
            assert (first[0], first[2]) == (200, b'{"n": 1}')
            assert second[0] == 404
            assert json.loads(second[2])["errorType"] == "NotFound"

    run(scenario)


def test_a_result_with_next_pipelined_behind_it_is_acknowledged_with_the_next_invocation() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(post("/2018-06-01/runtime/invocation/req-1/response", b'"done"') + NEXT)
            assert (await future).body == b'"done"'
            # The runtime is answered nothing (so not woken) until the next invocation, then both at once.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(raw.reader.read(1), 0.1)
            channel.submit(invocation("req-2"), deadline())
            accepted = await raw.answer()
            following = await raw.answer()
            assert accepted[0] == 202
            assert (following[0], following[1]["lambda-runtime-aws-request-id"]) == (200, "req-2")
            # Without a GET behind it, the 202 goes out at once.
            await raw.send(post("/2018-06-01/runtime/invocation/req-2/response", b'"again"'))
            assert (await raw.answer())[0] == 202

    run(scenario)


def test_one_connection_serves_many_invocations() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            for i in range(50):
                rid = f"req-{i}"
                future = await delivered(channel, raw, invocation(rid, payload=str(i).encode()))
                await raw.send(post(paths.response_path(rid), str(i).encode()))
                assert (await raw.answer())[0] == 202
                assert (await future).body == str(i).encode()
            assert len(channel._connections) == 1

    run(scenario)


def test_unknown_path_and_wrong_method() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            raw = await rig.connect()
            await raw.send(b"GET /2018-06-01/runtime/invocation/req-1/bogus HTTP/1.1\r\n\r\n")
            status, headers, body = await raw.answer()
            assert (status, headers["content-type"]) == (404, "application/json")
            assert json.loads(body)["errorType"] == "NotFound"
            await raw.send(b"POST /2018-06-01/runtime/invocation/next HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            assert (await raw.answer())[0] == 405

    run(scenario)


def test_malformed_request_is_400_and_closes() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            raw = await rig.connect()
            await raw.send(b"NOT HTTP AT ALL\r\n\r\n")
            assert (await raw.answer())[0] == 400
            assert await raw.reader.read() == b""

    run(scenario)


def test_init_error_before_next_resolves_initialized() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            doc = b'{"errorMessage": "Unable to import module \'app\'", "errorType": "Runtime.ImportModuleError"}'
            await raw.send(post(paths.INIT_ERROR, doc, f"{paths.FUNCTION_ERROR_TYPE}: Runtime.ImportModuleError"))
            assert (await raw.answer())[0] == 202
            reply = await channel.initialized
            assert reply == RuntimeReply("init_error", doc, "application/json", "Runtime.ImportModuleError")

    run(scenario)


def test_init_error_after_next_fails_the_invocation_in_flight() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(post(paths.INIT_ERROR, b'{"errorMessage": "late", "errorType": "Runtime.Late"}'))
            assert (await raw.answer())[0] == 202
            reply = await future
            assert (reply.kind, reply.error_type) == ("error", "Runtime.Late")
            # With nothing in flight there is nothing left to fail.
            await raw.send(post(paths.INIT_ERROR, b"{}"))
            assert (await raw.answer())[0] == 403

    run(scenario)


def test_polling_again_without_answering_fails_the_invocation() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            await raw.send(NEXT)
            reply = await future
            assert (reply.kind, reply.error_type) == ("error", "Runtime.NoResponse")
            assert "req-1" in json.loads(reply.body)["errorMessage"]
            # The new poll is parked and takes the next invocation.
            channel.submit(invocation("req-2"), deadline())
            assert (await raw.answer())[1]["lambda-runtime-aws-request-id"] == "req-2"

    run(scenario)


def test_submit_while_in_flight_raises() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            channel.submit(invocation(), deadline())
            with pytest.raises(RuntimeError, match="req-1"):
                channel.submit(invocation("req-2"), deadline())

    run(scenario)


def test_header_injection_is_refused() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            with pytest.raises(ValueError, match="tenant"):
                channel.submit(invocation(tenant="blue\r\nLambda-Runtime-Aws-Request-Id: x"), deadline())
            assert channel.in_flight is None

    run(scenario)


def test_invocation_cancelled_before_delivery_is_dropped() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            channel.submit(invocation(), deadline()).cancel()
            channel.submit(invocation("req-2"), deadline())
            raw = await rig.connect()
            await raw.send(NEXT)
            assert (await raw.answer())[1]["lambda-runtime-aws-request-id"] == "req-2"

    run(scenario)


def test_a_poller_that_disconnects_is_forgotten() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            gone = await rig.connect()
            await gone.send(NEXT)
            await asyncio.wait_for(channel.initialized, 5)
            await gone.close()
            await asyncio.sleep(0.05)
            raw = await rig.connect()
            await raw.send(NEXT)
            await asyncio.sleep(0.05)
            channel.submit(invocation(), deadline())
            assert (await raw.answer())[0] == 200

    run(scenario)


def test_the_newest_poll_gets_the_invocation() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            abandoned = await rig.connect()
            await abandoned.send(NEXT)
            await asyncio.wait_for(rig.channel.initialized, 5)
            live = await rig.connect()
            await live.send(NEXT)
            await asyncio.sleep(0.05)
            rig.channel.submit(invocation(), deadline())
            assert (await live.answer())[0] == 200

    run(scenario)


def test_connections_are_capped() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            kept = [await rig.connect() for _ in range(8)]
            extra = await rig.connect()
            assert await extra.reader.read() == b""
            for raw in kept:
                await raw.send(b"GET /x HTTP/1.1\r\n\r\n")
                assert (await raw.answer())[0] == 404

    run(scenario)


def test_output_is_flushed_before_the_future_resolves() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            channel = rig.channel
            seen: list[bool] = []
            raw = await rig.connect()
            future = await delivered(channel, raw, invocation())
            channel.on_output_flush = lambda: seen.append(future.done())
            await raw.send(post(paths.response_path("req-1"), b"1"))
            await future
            assert seen == [False]

    run(scenario)


def test_a_connection_made_beforehand_is_served_beside_the_listening_socket() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        sock = listening_socket()
        ours, theirs = socket.socketpair()
        await channel.start(sock, theirs)
        raw = Raw(*await asyncio.open_connection(sock=ours))
        future = await delivered(channel, raw, invocation())
        await raw.send(post("/2018-06-01/runtime/invocation/req-1/response", b'{"ok": true}'))
        assert (await raw.answer())[0] == 202
        assert (await future).body == b'{"ok": true}'
        # The listening socket still serves a runtime that connects.
        tcp = await Raw.connect(sock.getsockname()[1])
        await tcp.send(b"GET /x HTTP/1.1\r\n\r\n")
        assert (await tcp.answer())[0] == 404
        await channel.close()
        assert await raw.reader.read() == b""
        assert theirs.fileno() == -1
        await raw.close()
        await tcp.close()

    run(scenario)


def test_close_fails_waiters_and_closes_the_socket() -> None:
    async def scenario() -> None:
        channel = RuntimeChannel()
        sock = listening_socket()
        port = sock.getsockname()[1]
        await channel.start(sock)
        raw = await Raw.connect(port)
        await raw.send(b"GET /x HTTP/1.1\r\n\r\n")
        await raw.answer()
        future = channel.submit(invocation(), deadline())
        await channel.close()
        assert sock.fileno() == -1
        with pytest.raises(ChannelClosed):
            await future
        with pytest.raises(ChannelClosed):
            await channel.initialized
        assert await raw.reader.read() == b""
        with pytest.raises(ChannelClosed):
            channel.submit(invocation("req-2"), deadline())
        await raw.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(scenario)
