"""The HTTP protocol the API is served with: uvicorn's httptools protocol, writing each answer in one piece
and holding every connection to the bounds of the HTTP front (`silo.api.front`).

uvicorn writes an answer's head when the application starts it and the body when it sends it: two
system calls and two TCP segments, so a client waiting for the answer is woken twice. Here the writes
made in one turn of the event loop are joined and go out together at the end of that turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from silo.api import front as fr
from silo.errors import InvalidRequestContentException, LambdaError


class JoinedWrites:
    """A transport whose writes in one turn of the loop reach the socket as one write. `close_softly` is
    asked before a close: when it says True, the connection closes itself later (a lingering close)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        close_softly: Callable[[], bool] | None = None,
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._close_softly = close_softly
        self._abandoned = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._abandoned and not self._transport.is_closing():
                self._transport.write(data)

    def abandon(self) -> None:
        """Write what is pending, then nothing more: the connection has been handed to another protocol."""
        self.flush()
        self._abandoned = True

    def close(self) -> None:
        self.flush()
        if self._close_softly is not None and self._close_softly():
            return
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Stop(Exception):
    """Raised in a parser callback to stop parsing: answer `error` (None: just close)."""

    def __init__(self, error: LambdaError | None) -> None:
        super().__init__(error)
        self.error = error


class Protocol(HttpToolsProtocol):
    """One client connection. Per request it adds only a few attribute reads and writes to uvicorn's work;
    time limits are checked by the front's sweep (`sweep`), which reads uvicorn's own state to tell what
    the connection waits for: a head (no cycle for the newest scope yet), a body (`more_body`), or nothing."""

    front: fr.Front  # set by `bound_to`

    # Per-connection state, as class-level defaults so that uvicorn's __init__ stays the only one.
    _key: str | None = None  # the address this connection is counted under while served
    _head_bytes = 0  # bytes read since the newest head was complete
    _body_bytes = 0  # body bytes read in the sweep's current window
    _discarded = 0  # body bytes dropped after answers sent before the body was read
    _closing_after_body = False  # answered early and asked to close: close once the body is in
    _watching: object = None  # what the sweep last saw awaited: a head's scope or a body's cycle
    _since = 0  # the sweep's tick when it first saw it, or when the body's window began
    _linger_of: object = None
    _linger_since = 0
    _unsent = 0  # answer bytes not taken by the client when the sweep's current window began (0: none)
    _unsent_since = 0  # the sweep's tick when that window began

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        self._raw = raw
        self._joined = JoinedWrites(raw, self.loop, self._close_softly)
        super().connection_made(cast(asyncio.Transport, self._joined))
        key = fr.address_key(self.client)
        error = self.front.admit(key)
        if error is None:
            self._key = key
            self._since = self.front.tick
            self.front.watch(self)
            return
        self._detach()
        if self.front.start_refusing():
            fr.Discard(self.front, raw, budget=fr.REFUSAL_BYTES, seconds=fr.REFUSAL_S, release=None).start(
                fr.answer(error)
            )
        else:
            raw.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._key is not None:
            self.front.leave(self._key)
            self.front.unwatch(self)
            self._key = None

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, with the head's size counted and the front's refusals told from parse errors.
        self._unset_keepalive_if_required()
        self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            stop = exc.__context__
            if isinstance(stop, _Stop):
                if stop.error is None:
                    self._raw.close()
                else:
                    self._refuse(stop.error)
                return
            # uvicorn answers in plain text and logs each one; here in Lambda's shape, counted in the front's summary.
            malformed = InvalidRequestContentException(f"The request is not valid HTTP/1.1: {exc}.")
            self._close_with(malformed, "refused: malformed HTTP")
            return
        cycle = self.cycle
        if cycle is not None and cycle.scope is self.scope:
            # The newest head is in: the usual case, a whole request read at once, ends here.
            self._head_bytes = 0
            if cycle.more_body:
                self._body_bytes += len(data)
                if cycle.response_complete:
                    self._discarded += len(data)
                    if self._discarded > fr.LINGER_BYTES:
                        self._close_with(None, "closed: too much sent after an early answer")
            elif self._closing_after_body:
                self._raw.close()
        elif self._closing_after_body:
            self._raw.close()  # the body is in, and the next request begun: no more requests here
        elif self._head_bytes > fr.MAX_HEAD_BYTES:
            self._refuse(fr.head_too_large())

    def on_headers_complete(self) -> None:
        if self._closing_after_body or len(self.headers) > fr.MAX_HEADERS or self._head_bytes > fr.MAX_HEAD_BYTES:
            self._check_head()
        _on_headers_complete(self)  # not super(): this runs for every request, and that lookup costs

    def _check_head(self) -> None:
        """Stop the parser (`_Stop`) when this head may not be served."""
        if self._closing_after_body:
            raise _Stop(None)
        if len(self.headers) > fr.MAX_HEADERS:
            raise _Stop(fr.too_many_headers())
        # The reads for this head passed the limit: only then is its exact size worth counting.
        if _head_size(self.url, self.headers) > fr.MAX_HEAD_BYTES:
            raise _Stop(fr.head_too_large())

    def sweep(self, tick: int) -> None:
        """Once a second: close this connection if what it is waiting for from the client is late."""
        limits = self.front.limits
        # A client that stops taking its answers would keep one (up to 6 MB) in the daemon for as long as
        # the connection lives, closing or not: what it leaves unsent must go down at the bodies' minimum
        # rate over each window of the body timeout, or the connection is aborted (the answer's bytes
        # already in the kernel's socket buffer still reach the client, then its end).
        unsent = self._raw.get_write_buffer_size()
        if not unsent:
            self._unsent = 0
        elif not self._unsent:
            self._unsent, self._unsent_since = unsent, tick
        elif tick - self._unsent_since >= limits.body_timeout_s:
            if self._unsent - unsent < fr.BODY_MIN_RATE * (tick - self._unsent_since):
                self.front.note("aborted: answers not read", self._key)
                self._raw.abort()
                return
            self._unsent, self._unsent_since = unsent, tick
        if self._raw.is_closing():
            return
        cycle = self.cycle
        scope = self.scope
        if cycle is None or cycle.scope is not scope:  # waiting for a head, or reading one
            if self._watching is not scope:
                self._watching, self._since = scope, tick
            elif tick - self._since >= limits.head_timeout_s:
                # A connection that sent nothing is closed quietly, as an idle keep-alive one is.
                self._close_with(None if scope is None else fr.head_timeout(limits), "timed out: head")
            return
        if not cycle.more_body or self.flow.read_paused:
            self._watching = None  # nothing is awaited from the client, or the application is not reading yet
            return
        if cycle.response_complete:  # answered before the body was read: the rest is being dropped
            if self._linger_of is not cycle:
                self._linger_of, self._linger_since = cycle, tick
            elif tick - self._linger_since >= fr.LINGER_S:
                self._close_with(None, "closed: lingering too long after an early answer")
                return
        if self._watching is not cycle:
            self._watching, self._since, self._body_bytes = cycle, tick, 0
        elif tick - self._since >= limits.body_timeout_s:
            if self._body_bytes < fr.BODY_MIN_RATE * (tick - self._since):
                error = None if cycle.response_started else fr.body_timeout(limits)
                self._close_with(error, "timed out: body")
            else:
                self._since, self._body_bytes = tick, 0

    def _close_softly(self) -> bool:
        """uvicorn closes the connection. When it has answered before the request's body was all read, the
        close waits for the rest of the body (read and dropped, within the front's bounds): closing with
        unread data would reset the connection, and a client still sending would see the reset, not the
        answer. Writing is shut at once, so the client sees the answer end."""
        if self._closing_after_body:
            return True
        cycle = self.cycle
        if cycle is None or not cycle.more_body or not cycle.response_complete or self.parser is None:
            return False
        if self._raw.is_closing():
            return False
        self._closing_after_body = True
        if self._raw.can_write_eof():
            self._raw.write_eof()
        return True

    def _refuse(self, error: LambdaError) -> None:
        """Answer `error` and close after draining what the client still sends (a head being refused is
        usually still coming)."""
        key = self._key
        self.front.note("refused: " + error.code, key)
        self._detach()
        raw = self._raw
        if key is None:
            raw.abort()
            return
        self._key = None
        self.front.unwatch(self)
        if not raw.is_reading():
            raw.resume_reading()
        fr.Discard(self.front, raw, budget=fr.LINGER_BYTES, seconds=fr.LINGER_S, release=key).start(fr.answer(error))

    def _close_with(self, error: LambdaError | None, event: str) -> None:
        self.front.note(event, self._key)
        self._joined.flush()
        if error is not None:
            self._raw.write(fr.answer(error))
        self._raw.close()

    def _detach(self) -> None:
        """Leave uvicorn's books as if the connection were lost: the transport goes on with another protocol."""
        self._joined.abandon()
        super().connection_lost(ConnectionAbortedError("taken over by silo's HTTP front"))
        self._unset_keepalive_if_required()


_on_headers_complete = HttpToolsProtocol.on_headers_complete


def _head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """About the size of a head on the wire: request line and `name: value` lines."""
    return len(url) + 16 + sum(len(name) + len(value) + 4 for name, value in headers)


def bound_to(front: fr.Front) -> type[Protocol]:
    """The protocol class uvicorn instantiates per connection, sharing `front`."""
    return cast("type[Protocol]", type("FrontProtocol", (Protocol,), {"front": front}))
