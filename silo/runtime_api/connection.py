"""One TCP connection from a runtime to its Runtime API: HTTP/1.1 framing over httptools.

This is the warm path, so no framework: the parser calls back into this protocol, a finished
request goes to the channel, and answers are written in request order (HTTP/1.1 pipelining) even
when an earlier GET /next is still parked. The runtime is tenant code and may be hostile, so what
is buffered is bounded: request heads, queued answers, and bodies only for a POST that can be used.

It is also served fairly. What arrives is parsed in slices, and once a connection has had
`REQUESTS_PER_TURN` requests answered in one turn of the event loop, the rest waits for the next turn
with reading paused, so a runtime that pipelines requests without end gets its share of the loop and
no more. Reading pauses too while the transport holds more unsent answer bytes than its high-water
mark: a runtime that sends requests and never reads the answers stops being read, instead of making
the daemon buffer answers without limit. What the daemon holds for a connection is thereby bounded by
one read (256 KiB), `MAX_HEAD_BYTES`, a usable body, and the high-water mark plus one turn's answers.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import Protocol, cast

import httptools

from silo.runtime_api import wire

MAX_HEAD_BYTES = 64 * 1024
MAX_URL_BYTES = 4096
MAX_HEADER_VALUE_BYTES = 4096
MAX_QUEUED_ANSWERS = 64
# Requests answered per connection per turn of the event loop before the rest waits for the next turn.
REQUESTS_PER_TURN = 16
# What is fed to the parser at a time outside a body: small enough that a slice of pipelined requests is
# a bounded amount of work, large enough that an ordinary request and the GET /next behind it are one.
SLICE_BYTES = 1024
# Unsent answer bytes past which the connection stops being read (asyncio's default is 64 KiB as well).
WRITE_HIGH_WATER = 64 * 1024


class Request:
    """A parsed request: only what the Runtime API looks at."""

    __slots__ = (
        "authorization",
        "body",
        "body_kept",
        "content_type",
        "error_type",
        "keep_alive",
        "method",
        "path",
        "too_large",
    )

    def __init__(self) -> None:
        self.method = b""
        self.path = b""
        self.content_type: str | None = None
        self.error_type: str | None = None
        self.authorization: bytes | None = None  # read only by the credentials' routes
        self.body = b""
        self.body_kept = False  # whether the channel wanted the body buffered (see Dispatcher.wants_body)
        self.too_large = False
        self.keep_alive = True


class Answer:
    """A place in the connection's answer order; `data` stays None while a GET /next is parked.

    `hold`: a 202 for a posted result may wait for the GET /next pipelined behind it, to go out with the
    next invocation in one write. The runtime has nothing to do in between but read both, and each write
    that finds it waiting wakes its process: one wake-up per call instead of two."""

    __slots__ = ("data", "hold", "keep_alive")

    def __init__(self, keep_alive: bool) -> None:
        self.data: tuple[bytes, ...] | None = None
        self.keep_alive = keep_alive
        self.hold = False


class Dispatcher(Protocol):
    """What a connection needs from its channel (RuntimeChannel implements it)."""

    max_body_bytes: int

    def admit(self, conn: RuntimeConnection) -> bool: ...

    def release(self, conn: RuntimeConnection) -> None: ...

    def wants_body(self, conn: RuntimeConnection, method: bytes, path: bytes) -> bool: ...

    def handle(self, conn: RuntimeConnection, answer: Answer, request: Request) -> bytes | None:
        """The answer to `request`, or None when the channel keeps `answer` to fill it later."""
        ...


class RuntimeConnection(asyncio.Protocol):
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._answers: deque[Answer] = deque()
        self._closing = False
        self._request = Request()
        self._url = b""
        self._in_head = False
        self._head_bytes = 0
        self._expect_continue = False
        self._content_length = -1
        self._chunks: list[bytes] | None = None
        self._body_bytes = 0
        self._body_left = -1  # bytes of the current body still to come, when its length is known
        self._feeding = False
        # What has arrived and waits for the parser, from `_inbox_at` on; reading is paused while it waits.
        self._inbox = memoryview(b"")
        self._inbox_at = 0
        self._turn_requests = 0
        self._turn_scheduled = False
        self._write_paused = False
        self._read_paused = False
        self._held: asyncio.TimerHandle | None = None  # not read until then (see hold_off)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # create_server only ever makes stream transports.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Answers are small and latency-bound; never let Nagle hold one back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        if not self._dispatcher.admit(self):
            self._closing = True
            transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._inbox = memoryview(data)
        self._inbox_at = 0
        # Reading is paused while anything waits, so each call here is a turn of the loop of its own.
        self._turn_requests = 0
        self._pump()

    def _pump(self) -> None:
        """Parse what waits, slice by slice, until it is all parsed or this turn's requests are used up."""
        inbox = self._inbox
        at = self._inbox_at
        # Answers go out once everything parsed in this turn is: a GET /next pipelined behind a POST is then
        # known when the POST's answer is written.
        self._feeding = True
        try:
            while at < len(inbox) and not self._closing:
                if self._turn_requests >= REQUESTS_PER_TURN or self._write_paused or self._held is not None:
                    break
                # Within a body of known length, the rest of it at once (a 6 MB response is not cut in
                # thousands of slices); elsewhere a slice, whose bytes count towards the head's bound.
                size = SLICE_BYTES + (self._body_left if self._body_left > 0 else 0)
                piece = inbox[at : at + size]
                at += len(piece)
                in_head = self._body_left < 0
                self._parser.feed_data(piece)
                if in_head:
                    self._head_bytes += len(piece)
                    if self._in_head and self._head_bytes > MAX_HEAD_BYTES:
                        self._fail("request head too large")
        except httptools.HttpParserUpgrade:
            self._fail("protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._fail(f"malformed HTTP request: {exc}")
        finally:
            self._feeding = False
        if at < len(inbox) and not self._closing:
            self._inbox_at = at
            self._set_reading()
            if not self._write_paused and self._held is None:  # else resume_writing or the hold's end goes on
                self._next_turn()
        else:
            self._inbox = memoryview(b"")
            self._inbox_at = 0
            self._set_reading()
        self._flush()

    def _next_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._new_turn)

    def _new_turn(self) -> None:
        self._turn_scheduled = False
        self._turn_requests = 0
        if self._inbox_at < len(self._inbox) and not self._closing:
            self._pump()

    def _set_reading(self) -> None:
        """Read while nothing waits to be parsed and the runtime takes its answers."""
        transport = self._transport
        if transport is None or self._closing or transport.is_closing():
            return
        paused = self._write_paused or self._held is not None or self._inbox_at < len(self._inbox)
        if paused != self._read_paused:
            self._read_paused = paused
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def hold_off(self, seconds: float) -> None:
        """Neither read nor parse anything of this connection for `seconds` (it has been flooding)."""
        if self._held is None and not self._closing:
            self._held = asyncio.get_running_loop().call_later(seconds, self._hold_ends)
            self._set_reading()

    def _hold_ends(self) -> None:
        self._held = None
        self._set_reading()
        if self._inbox_at < len(self._inbox) and not self._closing:
            self._next_turn()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._set_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._set_reading()
        if self._inbox_at < len(self._inbox) and not self._closing:
            self._next_turn()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._held is not None:
            self._held.cancel()
            self._held = None
        self._answers.clear()
        self._inbox = memoryview(b"")
        self._inbox_at = 0
        self._dispatcher.release(self)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._request = Request()
        self._url = b""
        self._in_head = True
        self._head_bytes = 0
        self._expect_continue = False
        self._content_length = -1
        self._chunks = None
        self._body_bytes = 0
        self._body_left = -1

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_URL_BYTES:
            raise httptools.HttpParserError("URL too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(value) > MAX_HEADER_VALUE_BYTES:
            return
        lowered = name.lower()
        if lowered == b"content-length":
            try:
                self._content_length = int(value)
            except ValueError:
                raise httptools.HttpParserError("bad Content-Length") from None
        elif lowered == b"content-type":
            self._request.content_type = value.decode("latin-1")
        elif lowered == b"lambda-runtime-function-error-type":
            self._request.error_type = value.decode("latin-1")
        elif lowered == b"authorization":
            self._request.authorization = value
        elif lowered == b"expect":
            self._expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._body_left = max(0, self._content_length)
        request = self._request
        request.method = self._parser.get_method()
        request.path = self._url.partition(b"?")[0]
        limit = self._dispatcher.max_body_bytes
        if self._content_length > limit:
            request.too_large = True
        elif self._dispatcher.wants_body(self, request.method, request.path):
            self._chunks = []
            request.body_kept = True
        if not self._expect_continue or self._content_length == 0 or self._answers:
            # With answers still queued a 100 would be read as theirs; the client sends anyway.
            return
        if request.too_large:
            # Refuse before the body is sent; the body will not follow, so this connection ends.
            self._dispatch(keep_alive=False)
            self._closing = True
        elif self._transport is not None:
            self._transport.write(wire.CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._body_left > 0:
            self._body_left = max(0, self._body_left - len(body))
        if self._chunks is None:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._dispatcher.max_body_bytes:
            self._request.too_large = True
            self._chunks = None
        else:
            self._chunks.append(body)

    def on_message_complete(self) -> None:
        self._body_left = -1
        self._turn_requests += 1
        if self._closing:
            return
        if self._chunks:
            self._request.body = b"".join(self._chunks)
        self._dispatch(keep_alive=self._parser.should_keep_alive())

    # answers

    def _dispatch(self, *, keep_alive: bool) -> None:
        answer = Answer(keep_alive)
        self._request.keep_alive = keep_alive
        self._answers.append(answer)
        data = self._dispatcher.handle(self, answer, self._request)
        if data is not None:
            answer.data = (data,)
            answer.hold = keep_alive and data == wire.ACCEPTED
            self._flush()
        elif len(self._answers) > MAX_QUEUED_ANSWERS:
            self._fail("too many pipelined requests behind a parked GET /next")

    def deliver(self, answer: Answer, *data: bytes) -> bool:
        """Fill a parked answer. False when this connection is gone and cannot take it."""
        if self._closing or self._transport is None or self._transport.is_closing():
            return False
        answer.data = data
        self._flush()
        return True

    @property
    def is_open(self) -> bool:
        return not self._closing and self._transport is not None and not self._transport.is_closing()

    def _flush(self) -> None:
        transport = self._transport
        answers = self._answers
        if self._feeding or transport is None:
            return
        out: list[bytes] = []
        close = False
        while answers and (data := answers[0].data) is not None:
            answer = answers[0]
            if answer.hold and len(answers) > 1 and answers[1].data is None:
                break  # goes out with the parked answer behind it, when that is filled
            answers.popleft()
            out.extend(data)
            if not answer.keep_alive:
                close = True
                break
        if out:
            # One write: each is a system call that wakes the runtime, which would then read in pieces.
            transport.write(b"".join(out))
        if close:
            self.close()

    def _fail(self, why: str) -> None:
        transport = self._transport
        if self._closing or transport is None:
            return
        if not self._answers:
            transport.write(wire.bad_request(why))
        self.close()

    def close(self) -> None:
        """Stop reading, send what is already written, then close."""
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
