"""Fuzz the Runtime API's request parser: RuntimeConnection fed arbitrary byte streams, cut in arbitrary
slices, through a fake transport that behaves as asyncio's does (it stops delivering data while reading
is paused, pauses and resumes the writer at its high-water mark, reports the loss of the connection
on a later turn) and a fake dispatcher that parks GET /next and answers everything else at once.

Whatever the runtime sends, nothing raises out of the protocol's methods or its scheduled callbacks;
what the connection holds stays within its documented bounds; what it writes parses as a sequence of
well-formed HTTP/1.1 answers, in the order the requests came; and a connection that is not closing
goes back to reading once its answers are taken (it cannot stall a runtime that behaves again).

Only the protocol's public methods are used (connection_made, data_received, pause_writing,
resume_writing, connection_lost, deliver), so the test holds however the connection slices its work.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httptools
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from silo.runtime_api import connection as conn_module
from silo.runtime_api import paths, wire
from silo.runtime_api.connection import Answer, Request, RuntimeConnection
from tests.fuzz.bounded import fuzz_settings, retained_bytes

pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

MAX_BODY = 3000
HIGH_WATER = 512  # small, so that a runtime which does not read its answers soon fills it
RID = "rid-7"


class FakeTransport(asyncio.Transport):
    def __init__(self, protocol: RuntimeConnection) -> None:
        super().__init__()
        self.protocol = protocol
        self.out = bytearray()
        self.unsent = 0
        self.reading = True
        self.writer_paused = False
        self.closing = False
        self.lost = False
        self.high = HIGH_WATER
        self.was_read_paused = self.was_write_paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high = min(high if high is not None else HIGH_WATER, HIGH_WATER)

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # As asyncio's and uvloop's transports: a write after close() but before the connection is lost
        # still goes out; after that it would be dropped.
        assert not self.lost, "written after the connection was lost"
        self.out += data
        self.unsent += len(data)
        if self.unsent > self.high and not self.writer_paused:
            self.writer_paused = True
            self.was_write_paused = True
            self.protocol.pause_writing()

    def take_answers(self) -> None:
        """The runtime reads everything written so far."""
        self.unsent = 0
        if self.writer_paused:
            self.writer_paused = False
            self.protocol.resume_writing()

    def pause_reading(self) -> None:
        self.reading = False
        self.was_read_paused = True

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self._lose()

    def abort(self) -> None:
        self._lose()

    def _lose(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self._lost)

    def _lost(self) -> None:
        self.lost = True
        self.protocol.connection_lost(None)


class FakeDispatcher:
    """Parks GET /next, answers the rest at once; each answer's body names its place in the order."""

    max_body_bytes = MAX_BODY

    def __init__(self) -> None:
        self.handled: list[bytes | None] = []  # the answer of each request in order; None while parked
        self.parked: list[tuple[RuntimeConnection, Answer, int]] = []
        self.released = 0

    def admit(self, conn: RuntimeConnection) -> bool:
        return True

    def release(self, conn: RuntimeConnection) -> None:
        self.released += 1

    def wants_body(self, conn: RuntimeConnection, method: bytes, path: bytes) -> bool:
        return method == b"POST"

    def handle(self, conn: RuntimeConnection, answer: Answer, request: Request) -> bytes | None:
        seq = len(self.handled)
        assert len(request.body) <= MAX_BODY, "a body past the limit was buffered"
        if request.path == paths.NEXT.encode() and request.method == b"GET":
            self.handled.append(None)
            self.parked.append((conn, answer, seq))
            return None
        if request.path.endswith(b"/response") and request.method == b"POST" and not request.too_large:
            data = wire.ACCEPTED  # may be held back to go out with the /next behind it
        else:
            doc = {"seq": seq, "path": request.path.decode("latin-1"), "too_large": request.too_large}
            data = wire.answer(200, json.dumps(doc).encode())
        self.handled.append(data)
        return data

    def deliver_one(self) -> None:
        if self.parked:
            conn, answer, seq = self.parked.pop(0)
            data = wire.answer(200, json.dumps({"seq": seq, "delivered": True}).encode())
            if conn.deliver(answer, data):
                self.handled[seq] = data


class Answers:
    """What the runtime reads: the answers, parsed by an HTTP client parser (it raises on a malformed one)."""

    def __init__(self, data: bytes) -> None:
        self.statuses: list[int] = []
        self.bodies: list[bytes] = []
        self._body = b""
        self._parser = httptools.HttpResponseParser(self)
        self._parser.feed_data(data)

    def on_message_begin(self) -> None:
        self._body = b""

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.statuses.append(self._parser.get_status_code())
        self.bodies.append(self._body)


PATHS = st.sampled_from(
    [
        paths.NEXT,
        paths.response_path(RID),
        paths.error_path(RID),
        paths.INIT_ERROR,
        paths.INVOCATION_PREFIX + "x/y/z",
        "/",
        "*",
        "/" + "u" * 5000,
        "/%00?q=1",
    ]
)
HEADERS = st.lists(
    st.one_of(
        st.integers(-1, 4000).map(lambda n: f"Content-Length: {n}"),
        st.sampled_from(
            [
                "Content-Length: 99999999999999999999",
                "Content-Length: abc",
                "Content-Length: 1, 2",
                "Transfer-Encoding: chunked",
                "Transfer-Encoding: gzip, chunked",
                "Expect: 100-continue",
                "Connection: close",
                "Connection: keep-alive",
                "Connection: Upgrade\r\nUpgrade: websocket",
                "Content-Type: application/json",
                "Lambda-Runtime-Function-Error-Type: Function.Bad",
                "X-Long: " + "v" * 5000,
                "X-Huge: " + "h" * 70_000,
                "Host: rapi",
                "Bad Header",
                ": empty name",
            ]
        ),
    ),
    max_size=5,
)
BODIES = st.one_of(
    st.binary(max_size=200),
    st.just(b"x" * 3500),
    st.just(b"5\r\nhello\r\n0\r\n\r\n"),
    st.just(b"fffffffff\r\n"),
)


@st.composite
def hostile_requests(draw: st.DrawFn) -> bytes:
    """Anything a broken or hostile runtime might send: bad framing, bad lengths, huge heads, flipped bytes."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PRI", "G\x00T", ""]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 extra", ""]))
    head = f"{method} {draw(PATHS)} {version}\r\n" + "".join(f"{h}\r\n" for h in draw(HEADERS)) + "\r\n"
    data = bytearray(head.encode("latin-1") + draw(BODIES))
    for at, value in draw(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=2)):
        if data:
            data[at % len(data)] = value
    return bytes(data)


@st.composite
def valid_requests(draw: st.DrawFn) -> bytes:
    """What a runtime sends when it behaves: polls, results, errors, with every framing HTTP/1.1 allows."""
    method, path = draw(
        st.sampled_from(
            [
                ("GET", paths.NEXT),
                ("POST", paths.response_path(RID)),
                ("POST", paths.error_path(RID)),
                ("POST", paths.INIT_ERROR),
                ("GET", paths.INVOCATION_PREFIX + "x/y"),
                ("POST", paths.NEXT),
            ]
        )
    )
    # HTTP/1.0 and Connection: close end the connection after the answer: now and then, not every time.
    version = "HTTP/1.0" if draw(st.integers(0, 15)) == 0 else "HTTP/1.1"
    body = draw(st.one_of(st.just(b""), st.binary(max_size=100), st.just(b"r" * (MAX_BODY + 500))))
    headers = ["Host: rapi"]
    chunked = method == "POST" and draw(st.booleans())
    if chunked:
        headers.append("Transfer-Encoding: chunked")
        cut = len(body) // 2
        framed = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:cut], body[cut:]) if p)
        framed += b"0\r\n\r\n"
    elif method == "POST" or body:
        headers.append(f"Content-Length: {len(body)}")
        framed = body
    else:
        framed = b""
    headers += draw(
        st.lists(
            st.sampled_from(
                [
                    "Expect: 100-continue",
                    "Connection: keep-alive",
                    "Content-Type: application/json",
                    "Lambda-Runtime-Function-Error-Type: Function.Bad",
                    "X-Long: " + "v" * 5000,
                ]
            ),
            max_size=3,
            unique=True,
        )
    )
    if draw(st.integers(0, 15)) == 0:
        headers.append("Connection: close")
    head = f"{method} {path} {version}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    return head.encode() + framed


STREAMS = st.builds(
    lambda valid, tail: b"".join(valid) + tail,
    st.lists(valid_requests(), min_size=1, max_size=12),
    st.one_of(st.just(b""), hostile_requests()),
)


# One step of the scenario: the runtime sends the next slice, the loop turns, the runtime reads its
# answers (or not), the environment's invocation arrives for a parked GET /next.
STEPS = st.lists(st.sampled_from(["feed", "feed", "turn", "take", "deliver"]), max_size=40)


async def scenario(stream: bytes, cuts: list[int], steps: list[str]) -> None:
    loop = asyncio.get_running_loop()
    problems: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: problems.append(context))
    dispatcher = FakeDispatcher()
    conn = RuntimeConnection(dispatcher)
    transport = FakeTransport(conn)
    conn.connection_made(transport)
    bounds = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    slices = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    skip = {id(dispatcher), id(transport), id(loop)}
    largest = 0

    def check_held() -> None:
        held = retained_bytes(conn, skip)
        bound = (
            largest
            + conn_module.MAX_HEAD_BYTES
            + 2 * MAX_BODY
            + (conn_module.MAX_QUEUED_ANSWERS + 2) * 4096
            + conn_module.MAX_URL_BYTES
        )
        assert held <= bound, f"the connection holds {held} bytes, past {bound}"

    def feed() -> None:
        nonlocal largest
        if slices and transport.reading and not transport.closing:
            piece = slices.pop(0)
            largest = max(largest, len(piece))
            conn.data_received(piece)

    for step in steps + ["feed"] * len(slices):
        if step == "feed":
            feed()
        elif step == "turn":
            await asyncio.sleep(0)
        elif step == "take":
            transport.take_answers()
        elif step == "deliver":
            dispatcher.deliver_one()
        check_held()
    # The runtime now reads everything and sends what is left: the connection must take all of it.
    for _ in range(200):
        if transport.closing or not slices:
            break
        transport.take_answers()
        dispatcher.deliver_one()
        feed()
        await asyncio.sleep(0)
        check_held()
    for _ in range(20):
        transport.take_answers()
        dispatcher.deliver_one()
        await asyncio.sleep(0)
    assert not problems, problems
    if not transport.closing:
        assert transport.reading, "not closing, its answers taken, and still not reading: a stalled runtime"
        assert not slices, "data left unread"

    answers = Answers(bytes(transport.out))
    event("closed" if transport.closing else "open")
    event(f"answers: {min(len(answers.statuses), 10)}{'+' if len(answers.statuses) >= 10 else ''}")
    event(f"writer paused: {transport.was_write_paused}, reading paused: {transport.was_read_paused}")
    written = [(s, b) for s, b in zip(answers.statuses, answers.bodies, strict=True) if s != 100]
    # Answers go out in request order; the first one still parked holds back everything behind it.
    in_order: list[bytes] = []
    for data in dispatcher.handled:
        if data is None:
            break
        in_order.append(data)
    got = [wire.answer(s, b) if s != 202 else wire.ACCEPTED for s, b in written]
    failure = written[len(in_order) :]
    assert got[: len(in_order)] == in_order[: len(got)], "answers out of order or altered"
    if failure:
        # After the answers in order, at most one 400 from the connection itself, then it closes.
        assert len(failure) == 1 and failure[0][0] == 400 and transport.closing, failure
        assert json.loads(failure[0][1])["errorType"] == "InvalidRequest"
    if not transport.closing:
        assert len(got) == len(in_order), "a request that could be answered was not"
    conn.connection_lost(None)  # idempotent for the channel: released once more is harmless here
    await asyncio.sleep(0)


@fuzz_settings(300, slow=True)
@given(
    stream=STREAMS,
    cuts=st.lists(st.integers(0, 1 << 20), max_size=12),
    steps=STEPS,
)
def test_any_byte_stream_is_parsed_within_bounds_and_answered_in_order(
    stream: bytes, cuts: list[int], steps: list[str]
) -> None:
    asyncio.run(scenario(stream, cuts, steps))


@fuzz_settings(200, slow=True)
@given(
    stream=st.binary(min_size=1, max_size=3000),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=8),
    steps=STEPS,
)
def test_raw_bytes_never_break_the_connection(stream: bytes, cuts: list[int], steps: list[str]) -> None:
    asyncio.run(scenario(stream, cuts, steps))


@fuzz_settings(100, slow=True)
@given(
    count=st.integers(1, 300),
    cuts=st.lists(st.integers(0, 1 << 20), max_size=8),
    steps=STEPS,
)
def test_a_flood_of_pipelined_requests_is_answered_in_turns(count: int, cuts: list[int], steps: list[str]) -> None:
    """Requests without end in one write, answered without being read: bounded, and all answered once read."""
    one = f"GET {paths.INVOCATION_PREFIX}x/y HTTP/1.1\r\nHost: rapi\r\n\r\n".encode()
    asyncio.run(scenario(one * count, cuts, steps))


def test_answers_a_runtime_does_not_read_stop_at_the_high_water_mark() -> None:
    """The module's promise: what is held for a runtime that never reads is the high-water mark plus one
    turn's answers. One read of 256 KiB of the smallest pipelined requests, never read back."""
    one = b"GET / HTTP/1.1\r\n\r\n"
    stream = one * (256 * 1024 // len(one))

    async def run() -> tuple[int, int]:
        dispatcher = FakeDispatcher()
        conn = RuntimeConnection(dispatcher)
        transport = FakeTransport(conn)
        conn.connection_made(transport)
        transport.high = conn_module.WRITE_HIGH_WATER  # the daemon's own mark, not the fake's small one
        conn.data_received(stream)
        for _ in range(2000):
            await asyncio.sleep(0)
        answer = max(len(d) for d in dispatcher.handled if d is not None)
        return transport.unsent, answer

    unsent, answer = asyncio.run(run())
    per_turn = getattr(conn_module, "REQUESTS_PER_TURN", 16)
    assert unsent <= conn_module.WRITE_HIGH_WATER + per_turn * answer, f"{unsent} bytes of answers unread"


def test_a_runtime_that_never_reads_its_answers_stops_being_read() -> None:
    """Reads of pipelined requests keep coming, answers are never read: the connection stops reading
    (the fake transport, like asyncio's, then delivers nothing more) and its unsent answers stop growing."""
    one = f"GET {paths.INVOCATION_PREFIX}x/y HTTP/1.1\r\nHost: rapi\r\n\r\n".encode()
    read = one * (16 * 1024 // len(one))

    async def run() -> tuple[int, int]:
        conn = RuntimeConnection(FakeDispatcher())
        transport = FakeTransport(conn)
        conn.connection_made(transport)
        consumed = 0
        for _ in range(200):
            if transport.reading:
                conn.data_received(read)
                consumed += 1
            await asyncio.sleep(0)
        return consumed, transport.unsent

    consumed, unsent = asyncio.run(run())
    assert consumed <= 2, f"{consumed} reads taken from a runtime that reads nothing"
    assert unsent <= 2 * len(read) * 4, unsent  # the answers to those reads, no more
