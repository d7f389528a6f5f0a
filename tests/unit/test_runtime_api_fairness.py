"""The Runtime API serves each connection fairly and holds a bounded amount for it: a runtime that pipelines
requests without end is answered a slice per turn of the event loop, one that never reads its answers
stops being read, and a head is bounded from the first byte."""

from __future__ import annotations

import asyncio
from typing import Any

from silo.runtime_api import RuntimeChannel, wire
from silo.runtime_api.connection import MAX_HEAD_BYTES, REQUESTS_PER_TURN, SLICE_BYTES, RuntimeConnection
from silo.runtime_api.server import ERRORS_BURST, MAX_CONNECTIONS
from silo.types import Invocation

NOTHING = b"GET /2018-06-01/runtime/invocation/nothing HTTP/1.1\r\nHost: x\r\n\r\n"


class Transport:
    """What a connection needs of an asyncio transport, recording what it is told."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.reading = True
        self.closed = False
        self.high_water: int | None = None

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        assert self.reading
        self.reading = False

    def resume_reading(self) -> None:
        assert not self.reading
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water = high

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def answers(self) -> int:
        return b"".join(self.written).count(b"HTTP/1.1 404")


class NotFound:
    """A channel that answers every request 404 and never runs out of patience (RuntimeChannel does)."""

    max_body_bytes = 1024

    def admit(self, conn: RuntimeConnection) -> bool:
        return True

    def release(self, conn: RuntimeConnection) -> None:
        pass

    def wants_body(self, conn: RuntimeConnection, method: bytes, path: bytes) -> bool:
        return False

    def handle(self, conn: RuntimeConnection, answer: Any, request: Any) -> bytes:
        return wire.not_found(request.method, request.path)


def connected(channel: Any = None) -> tuple[RuntimeConnection, Transport]:
    conn = RuntimeConnection(channel if channel is not None else NotFound())
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def test_pipelined_requests_are_answered_a_slice_per_turn() -> None:
    async def main() -> None:
        conn, transport = connected()
        count = 3000
        conn.data_received(NOTHING * count)
        first = transport.answers()
        # One turn answers this turn's share (whole slices of requests), not all three thousand.
        assert REQUESTS_PER_TURN <= first <= REQUESTS_PER_TURN + SLICE_BYTES // len(NOTHING) + 1
        assert not transport.reading, "nothing more is read while requests wait"
        turns = 0
        while transport.answers() < count:
            await asyncio.sleep(0)
            turns += 1
            assert turns < count, "the rest is answered in later turns"
        assert turns > 10
        assert transport.reading, "reading resumes once everything that arrived is answered"

    asyncio.run(main())


def test_a_connection_whose_answers_are_not_read_stops_being_read() -> None:
    async def main() -> None:
        conn, transport = connected()
        assert transport.high_water is not None and transport.high_water <= 256 * 1024
        conn.pause_writing()  # the transport holds more than its high-water mark of unsent answers
        assert not transport.reading
        conn.data_received(NOTHING * 2)  # a read already under way waits, unparsed
        await asyncio.sleep(0)
        assert not transport.reading and transport.answers() == 0
        conn.resume_writing()
        await asyncio.sleep(0)
        assert transport.answers() == 2
        assert transport.reading

    asyncio.run(main())


def test_a_head_is_bounded_from_the_first_read() -> None:
    async def main() -> None:
        conn, transport = connected()
        headers = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 1000) for i in range(MAX_HEAD_BYTES // 1000 + 10))
        conn.data_received(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n" + headers + b"\r\n")
        out = b"".join(transport.written)
        assert out.startswith(b"HTTP/1.1 400"), out[:100]
        assert b"request head too large" in out
        assert transport.closed

    asyncio.run(main())


def test_a_large_body_is_parsed_without_cutting_it_into_slices() -> None:
    async def main() -> None:
        channel = RuntimeChannel()
        conn = RuntimeConnection(channel)
        transport = Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        body = b"x" * (3 * 1024 * 1024)
        head = b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
        conn.data_received(head + body[:100_000])
        conn.data_received(body[100_000:])
        reply = await asyncio.wait_for(channel.initialized, 5)
        assert reply is not None and reply.kind == "init_error"
        assert b"HTTP/1.1 202" in b"".join(transport.written)

    asyncio.run(main())


def test_one_body_at_a_time_is_buffered_for_an_environment() -> None:
    async def main() -> None:
        channel = RuntimeChannel()
        first, second = RuntimeConnection(channel), RuntimeConnection(channel)
        t1, t2 = Transport(), Transport()
        first.connection_made(t1)  # type: ignore[arg-type]
        second.connection_made(t2)  # type: ignore[arg-type]
        first.data_received(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n")
        reply = channel.submit(Invocation(request_id="r1", payload=b"{}", tenant_id="t", invoked_arn="arn"), 0)
        head = b"POST /2018-06-01/runtime/invocation/r1/response HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
        second.data_received(head % 1000 + b"a" * 500)  # a body being posted, slowly
        first.data_received(head % 3 + b"bbb")  # meanwhile another connection posts one too
        assert b"HTTP/1.1 403" in b"".join(t1.written), "a second body is neither kept nor taken for the answer"
        second.data_received(b"a" * 500)
        answer = await asyncio.wait_for(reply, 5)
        assert answer.body == b"a" * 1000

    asyncio.run(main())


def test_a_runtime_that_makes_errors_without_end_is_held_off() -> None:
    async def main() -> None:
        channel = RuntimeChannel()
        conn, transport = connected(channel)
        for _ in range(ERRORS_BURST // REQUESTS_PER_TURN + 5):
            if transport.reading:
                conn.data_received(NOTHING * REQUESTS_PER_TURN)
            await asyncio.sleep(0)
        # Past its burst of errors the connection is not read for a while; what it sent waits, unanswered.
        assert not transport.reading
        assert ERRORS_BURST <= transport.answers() < ERRORS_BURST + 2 * REQUESTS_PER_TURN
        # New connections cost the same budget: while it is spent, none is admitted.
        refused = sum(connected(channel)[1].closed for _ in range(MAX_CONNECTIONS - 1))
        assert refused == MAX_CONNECTIONS - 1
        await asyncio.sleep(0.6)  # the hold ends, the budget refills a little: it is served again, slowly
        assert transport.reading or transport.answers() > ERRORS_BURST + 2

    asyncio.run(main())
