"""RuntimeChannel: the Runtime API of one environment, served on a socket the daemon was given.

The state machine is small because an environment runs one invocation at a time:

    (no invocation) --submit--> queued --GET /next--> delivered --POST response|error--> (no invocation)

`submit` hands an invocation to the parked GET /next (or the next one to arrive); the future it
returns resolves when the runtime posts /response or /error. Choices where Lambda's documents are
silent, so that a broken runtime fails fast instead of hanging until the timeout:

- GET /next while an invocation is delivered and unanswered: the runtime has dropped it. The
  invocation resolves as an error `Runtime.NoResponse`, and the new poll parks as usual.
- POST /init/error after init completed: if an invocation is delivered it resolves as that error
  (a runtime that fails while loading lazily); otherwise 403 InvalidStateTransition.
- A posted body larger than `max_response_bytes`: 413 to the runtime, and the invocation resolves
  as `Function.ResponseSizeTooLarge`, as on Lambda.
- An invocation future cancelled before delivery is dropped; after delivery the runtime's answer
  is accepted (202) and thrown away.
- GET of silo's credentials routes (paths.CREDENTIALS, paths.TENANT_TOKEN) is answered by the channel's
  `credentials` (a CredentialSource), once it has checked the Authorization header; the answer may take an
  STS call, so it is parked like a GET /next and filled when ready.
- `close()` fails pending futures with ChannelClosed (already marked retrieved, so an unawaited
  one is not logged) rather than cancelling them: a cancellation would look like the awaiting
  task itself being cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from silo.runtime_api import paths, wire
from silo.runtime_api.connection import Answer, Request, RuntimeConnection
from silo.types import Invocation

DEFAULT_MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100
# A runtime needs one or two connections; the cap bounds what hostile code can make the daemon hold.
MAX_CONNECTIONS = 8
# Error answers (and new connections) an environment may have a second, after a burst: a runtime that
# works makes next to none; past it, the connection that asked is not read for a while.
ERRORS_PER_S = 20
ERRORS_BURST = 100
ERRORS_HOLD_OFF_S = 0.25
# Below this the head and the payload go out in one write (one segment); above, copying costs more.
_JOIN_BELOW = 64 * 1024

_NEXT = paths.NEXT.encode()
_INIT_ERROR = paths.INIT_ERROR.encode()
_PREFIX = paths.INVOCATION_PREFIX.encode()
_RESPONSE = paths.RESPONSE_SUFFIX.encode()
_ERROR = paths.ERROR_SUFFIX.encode()
_CREDENTIALS = paths.CREDENTIALS.encode()
_TENANT_TOKEN = paths.TENANT_TOKEN.encode()
_POSTGRES = paths.POSTGRES.encode()
_KINDS: dict[bytes, Literal["aws", "token", "postgres"]] = {
    _CREDENTIALS: "aws",
    _TENANT_TOKEN: "token",
    _POSTGRES: "postgres",
}
_JSON = "application/json"

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RuntimeReply:
    """What the runtime answered for an invocation, or for its init."""

    kind: Literal["response", "error", "init_error"]
    body: bytes  # what the runtime posted; for error kinds always a JSON error document
    content_type: str | None
    error_type: str | None  # from Lambda-Runtime-Function-Error-Type, or errorType from the body


class CredentialSource(Protocol):
    """Who answers an environment's requests for its credentials (silo.credentials.EnvironmentCredentials)."""

    def authorized(self, presented: bytes | None) -> bool:
        """Whether the Authorization header shown is the environment's own token."""
        ...

    async def answer(self, kind: Literal["aws", "token", "postgres"]) -> tuple[int, bytes]:
        """The status and JSON body of the answer."""
        ...


class Budget:
    """A token bucket: `take` is True while tokens are left, refilled at `rate` a second up to `burst`."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class ChannelClosed(ConnectionError):
    """The channel was closed before the runtime answered."""


class _InFlight:
    __slots__ = ("delivered", "future", "parts", "request_id", "rid")

    def __init__(self, request_id: str, future: asyncio.Future[RuntimeReply], parts: tuple[bytes, ...]):
        self.request_id = request_id
        self.rid = request_id.encode()
        self.future = future
        self.parts = parts
        self.delivered = False


class RuntimeChannel:
    """The Runtime API of ONE environment. Construct it inside the running event loop."""

    def __init__(self, *, max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES) -> None:
        self._loop = asyncio.get_running_loop()
        self.max_body_bytes = max_response_bytes
        # None once the runtime first asks for work; an init_error reply if it reports failure first.
        self.initialized: asyncio.Future[RuntimeReply | None] = self._loop.create_future()
        # Called right before a posted answer resolves its future, so that the caller can drain the
        # environment's output first: the runtime flushed its output before posting.
        self.on_output_flush: Callable[[], None] | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[RuntimeConnection] = set()
        self._pollers: deque[tuple[RuntimeConnection, Answer]] = deque()
        self._current: _InFlight | None = None
        self._last_answered = b""
        self._closed = False
        # The one connection whose posted body is being buffered: one body per environment at a time, so
        # that eight connections posting 6 MB each cannot make the daemon hold eight of them.
        self._body_conn: RuntimeConnection | None = None
        self._errors = Budget(ERRORS_PER_S, ERRORS_BURST)
        # The environment's per-tenant credentials; None: its function has none, and the routes answer 404.
        self.credentials: CredentialSource | None = None
        self._answering: set[asyncio.Task[None]] = set()

    async def start(self, listen_sock: socket.socket, connection: socket.socket | None = None) -> None:
        """Serve `listen_sock` (bound and listening), and `connection` when the runtime is already
        connected. The channel owns and closes both from now on."""
        if self._closed:
            raise ChannelClosed("the Runtime API channel is closed")
        if self._server is not None:
            raise RuntimeError("the Runtime API channel is already serving")
        self._server = await self._loop.create_server(lambda: RuntimeConnection(self), sock=listen_sock)
        if connection is not None:
            await self._loop.connect_accepted_socket(lambda: RuntimeConnection(self), connection)

    async def close(self) -> None:
        """Stop serving, drop every connection, fail what still waits with ChannelClosed."""
        if self._closed:
            return
        self._closed = True
        server = self._server
        if server is not None:
            server.close()
        for task in list(self._answering):
            task.cancel()
        for conn in list(self._connections):
            conn.abort()
        self._pollers.clear()
        _fail(self.initialized)
        if self._current is not None:
            _fail(self._current.future)
            self._current = None
        if server is not None:
            await server.wait_closed()

    @property
    def in_flight(self) -> str | None:
        """The request id submitted and not yet answered, if any."""
        current = self._current
        if current is None or (current.future.done() and not current.delivered):
            return None
        return current.request_id

    @property
    def delivered(self) -> bool:
        """Whether the invocation submitted last has been handed to the runtime (a GET /next took it)."""
        current = self._current
        return current is not None and current.delivered

    def submit(
        self,
        inv: Invocation,
        deadline_ms: int,
        tenant_token: str | None = None,
        postgres: tuple[str, str] | None = None,
    ) -> asyncio.Future[RuntimeReply]:
        """Hand `inv` to the runtime (now if it is polling, else on its next GET /next).

        `deadline_ms` is the epoch millisecond at which the invocation times out. The future resolves
        when the runtime posts /response or /error. Raises RuntimeError while another invocation is
        in flight, ValueError when a header value would contain a line break.
        """
        if self._closed:
            raise ChannelClosed("the Runtime API channel is closed")
        if self.in_flight is not None:
            raise RuntimeError(f"invocation {self.in_flight} is still in flight")
        head = wire.next_head(inv, deadline_ms, tenant_token, postgres)
        payload = inv.payload
        parts = (head + payload,) if len(payload) < _JOIN_BELOW else (head, payload)
        current = _InFlight(inv.request_id, self._loop.create_future(), parts)
        self._current = current
        pollers = self._pollers
        while pollers:
            # Newest first: a poll the runtime gave up on (a client-side timeout, then a fresh
            # connection) must not swallow the invocation while the live poll keeps waiting.
            conn, answer = pollers.pop()
            if conn.deliver(answer, *parts):
                current.delivered = True
                break
        return current.future

    # Dispatcher: called by RuntimeConnection

    def admit(self, conn: RuntimeConnection) -> bool:
        if self._closed or len(self._connections) >= MAX_CONNECTIONS:
            return False
        if not self._errors.take(time.monotonic()):
            return False  # connections made and dropped without end cost the daemon as errors do
        self._connections.add(conn)
        return True

    def release(self, conn: RuntimeConnection) -> None:
        self._connections.discard(conn)
        if self._body_conn is conn:
            self._body_conn = None
        if any(polling is conn for polling, _ in self._pollers):
            self._pollers = deque(p for p in self._pollers if p[0] is not conn)

    def wants_body(self, conn: RuntimeConnection, method: bytes, path: bytes) -> bool:
        """Buffer a body only where it can be used, and one at a time, so a runtime cannot make the daemon
        hoard bytes."""
        if method != b"POST":
            return False
        current = self._current
        usable = path == _INIT_ERROR or (
            current is not None
            and current.delivered
            and path.startswith(_PREFIX)
            and path[len(_PREFIX) :].partition(b"/")[0] == current.rid
        )
        if not usable or (self._body_conn is not None and self._body_conn is not conn and self._body_conn.is_open):
            return False
        self._body_conn = conn
        return True

    def handle(self, conn: RuntimeConnection, answer: Answer, request: Request) -> bytes | None:
        if self._body_conn is conn:
            self._body_conn = None
        out = self._route(conn, answer, request)
        if out is not None and out is not wire.ACCEPTED and not self._errors.take(time.monotonic()):
            # A runtime makes an error now and then; one that makes them without end is flooding the
            # daemon, whose every answer costs the loop: its connection is not read for a while.
            conn.hold_off(ERRORS_HOLD_OFF_S)
        return out

    def _route(self, conn: RuntimeConnection, answer: Answer, request: Request) -> bytes | None:
        path = request.path
        method = request.method
        if path == _NEXT:
            if method != b"GET":
                return wire.method_not_allowed(method, path)
            return self._next(conn, answer)
        if path == _INIT_ERROR:
            if method != b"POST":
                return wire.method_not_allowed(method, path)
            return self._init_error(request)
        if path.startswith(_PREFIX):
            rid, _, action = path[len(_PREFIX) :].partition(b"/")
            if action == _RESPONSE or action == _ERROR:
                if method != b"POST":
                    return wire.method_not_allowed(method, path)
                return self._answer(rid, request, is_error=action == _ERROR)
        kind = _KINDS.get(path)
        if kind is not None:
            if method != b"GET":
                return wire.method_not_allowed(method, path)
            return self._credentials(conn, answer, request, kind)
        return wire.not_found(method, path)

    def _credentials(
        self, conn: RuntimeConnection, answer: Answer, request: Request, kind: Literal["aws", "token", "postgres"]
    ) -> bytes | None:
        source = self.credentials
        if source is None:
            return wire.answer(
                404, wire.error_doc("the function has no Credentials setting: nothing is served here", "NoCredentials")
            )
        if not source.authorized(request.authorization):
            return wire.forbidden(
                "the Authorization header is not this environment's AWS_CONTAINER_AUTHORIZATION_TOKEN"
            )
        task = self._loop.create_task(self._answer_credentials(conn, answer, source, kind))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)
        return None

    async def _answer_credentials(
        self,
        conn: RuntimeConnection,
        answer: Answer,
        source: CredentialSource,
        kind: Literal["aws", "token", "postgres"],
    ) -> None:
        try:
            status, body = await source.answer(kind)
        except Exception:
            log.exception("the credentials of an environment could not be answered")
            status, body = 500, wire.error_doc("silo failed to answer; the server's log says why", "ServiceError")
        conn.deliver(answer, wire.answer(status, body))

    # the state machine

    def _next(self, conn: RuntimeConnection, answer: Answer) -> bytes | None:
        if not self.initialized.done():
            self.initialized.set_result(None)
        current = self._current
        if current is not None:
            if current.delivered:
                doc = wire.no_response_doc(current.request_id)
                self._finish(current, RuntimeReply("error", doc, _JSON, "Runtime.NoResponse"))
            elif current.future.done():
                self._current = None  # cancelled before the runtime asked for it
            else:
                current.delivered = conn.deliver(answer, *current.parts)
                return None
        self._pollers.append((conn, answer))
        return None

    def _answer(self, rid: bytes, request: Request, *, is_error: bool) -> bytes:
        current = self._current
        if current is None or not current.delivered or rid != current.rid:
            if rid == self._last_answered:
                return wire.invalid_state_transition("the invocation was already answered")
            return wire.invalid_request_id(rid)
        if request.too_large:
            doc = wire.response_too_large_doc(self.max_body_bytes)
            self._finish(current, RuntimeReply("error", doc, _JSON, "Function.ResponseSizeTooLarge"))
            return wire.too_large(self.max_body_bytes, close=not request.keep_alive)
        if not request.body_kept:
            return wire.invalid_state_transition("another connection is posting this invocation's answer")
        if is_error:
            body, error_type = wire.normalise_error(request.body, request.error_type)
            self._finish(current, RuntimeReply("error", body, _JSON, error_type))
        else:
            self._finish(current, RuntimeReply("response", request.body, request.content_type, None))
        return wire.ACCEPTED

    def _init_error(self, request: Request) -> bytes:
        if not request.body_kept and not request.too_large:
            return wire.invalid_state_transition("another connection is posting an error")
        if request.too_large:
            body, error_type = wire.response_too_large_doc(self.max_body_bytes), "Function.ResponseSizeTooLarge"
            out = wire.too_large(self.max_body_bytes)
        else:
            body, error_type = wire.normalise_error(request.body, request.error_type)
            out = wire.ACCEPTED
        if not self.initialized.done():
            self._flush_output()
            self.initialized.set_result(RuntimeReply("init_error", body, _JSON, error_type))
            return out
        current = self._current
        if current is not None and current.delivered:
            self._finish(current, RuntimeReply("error", body, _JSON, error_type))
            return out
        return wire.invalid_state_transition("init error reported after init completed")

    def _finish(self, current: _InFlight, reply: RuntimeReply) -> None:
        self._current = None
        self._last_answered = current.rid
        self._flush_output()
        if not current.future.done():
            current.future.set_result(reply)

    def _flush_output(self) -> None:
        hook = self.on_output_flush
        if hook is None:
            return
        try:
            hook()
        except Exception:
            # The answer must still reach its caller; a broken hook only costs log lines.
            log.exception("on_output_flush hook failed")


def _fail(future: asyncio.Future[RuntimeReply] | asyncio.Future[RuntimeReply | None]) -> None:
    if not future.done():
        future.set_exception(ChannelClosed("the Runtime API channel was closed"))
        future.exception()  # marks it retrieved: nobody may be waiting any more
