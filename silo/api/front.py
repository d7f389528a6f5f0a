"""The HTTP front: what one caller may hold of the server before any route runs.

Bounds on what a connection may make the daemon hold or wait for: connections per client address and
in all, how long a request's head may take and how large it may be, how slowly a body may arrive,
and a lingering close after an early answer (a 413 before the body is read), so the client reads
the answer instead of a reset. The protocol (`silo.api.protocol`) applies them; this module holds
the limits, the decisions and the answers.

Time is kept by one sweep a second over all connections rather than a timer per request: a warm
call then pays nothing for it (no timer armed and cancelled, no clock read), and the sweep's cost,
a few attribute reads per open connection, does not grow with the request rate. Timeouts are
therefore whole seconds, up to one second late.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import resource
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

from silo import errors
from silo.ids import request_id

if TYPE_CHECKING:
    from silo.config import Settings

log = logging.getLogger(__name__)

# Policy, as data. A request's head (request line and headers) larger than this is refused: the SDKs
# send a kilobyte or two, and the parser would otherwise buffer any size.
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
# A body must bring at least this many bytes a second, measured over each window of the body timeout.
BODY_MIN_RATE = 512
# After an answer sent before the body was read, what the client still sends is read and dropped,
# so it reads the answer instead of a reset: up to this much, for up to this long.
LINGER_BYTES = 128 * 1024 * 1024
LINGER_S = 30
# A connection refused at once (too many connections) is answered, then drained the same way, briefly.
REFUSAL_BYTES = 8 * 1024 * 1024
REFUSAL_S = 5
# Refused connections still being drained; past this, new ones are dropped without an answer.
MAX_REFUSING = 1024
SWEEP_S = 1.0


@dataclass(frozen=True, slots=True)
class FrontLimits:
    max_connections: int = 10_000
    max_per_address: int = 256  # 0: no cap per address (e.g. behind a proxy, where every caller is the proxy)
    head_timeout_s: int = 20
    body_timeout_s: int = 20
    idle_s: int = 30  # how long an idle keep-alive connection stays open

    @classmethod
    def from_settings(cls, settings: Settings) -> FrontLimits:
        """The limits a server's settings ask for; a ValueError names a setting that makes no sense."""
        limits = cls(
            max_connections=settings.http_max_connections,
            max_per_address=settings.http_max_connections_per_address,
            head_timeout_s=settings.http_head_timeout_s,
            body_timeout_s=settings.http_body_timeout_s,
            idle_s=settings.http_idle_s,
        )
        for name in ("max_connections", "head_timeout_s", "body_timeout_s", "idle_s"):
            if getattr(limits, name) < 1:
                raise ValueError(f"http_{name} must be at least 1, got {getattr(limits, name)}")
        if limits.max_per_address < 0:
            raise ValueError("http_max_connections_per_address must be 0 (no cap) or more")
        return limits


def descriptor_room(max_connections: int) -> int:
    """The connection cap, lowered to half of the open-files limit: environments need descriptors too, and
    a flood of connections must not leave the daemon unable to start one."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections > soft // 2:
        log.warning(
            "silo may open %d files, so it takes at most %d HTTP connections instead of %d; raise the limit "
            "(ulimit -n) for more",
            soft,
            soft // 2,
            max_connections,
        )
        return max(1, soft // 2)
    return max_connections


class HeadTooLarge(errors.LambdaError):
    code = "RequestHeaderFieldsTooLargeException"
    status = 431
    message_key = "message"
    error_type = "User"


class RequestTimeout(errors.LambdaError):
    """botocore retries this code, as it does on Lambda."""

    code = "RequestTimeoutException"
    status = 408
    message_key = "message"
    error_type = "User"


class ServiceUnavailable(errors.LambdaError):
    code = "ServiceUnavailableException"
    status = 503
    error_type = "Service"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


def head_too_large() -> HeadTooLarge:
    return HeadTooLarge(
        f"The request's head (request line and headers) is larger than {MAX_HEAD_BYTES} bytes; send smaller headers."
    )


def too_many_headers() -> HeadTooLarge:
    return HeadTooLarge(f"The request has more than {MAX_HEADERS} header fields; send fewer headers.")


def head_timeout(limits: FrontLimits) -> RequestTimeout:
    return RequestTimeout(
        f"The request's head did not arrive within {limits.head_timeout_s} s; silo closes connections that send "
        "their head this slowly."
    )


def body_timeout(limits: FrontLimits) -> RequestTimeout:
    return RequestTimeout(
        f"The request's body arrived slower than {BODY_MIN_RATE} bytes a second over {limits.body_timeout_s} s; "
        "silo closes connections whose body stalls."
    )


def refusal(limits: FrontLimits, *, serving: int, from_address: int, address: str) -> errors.LambdaError | None:
    """Why a new connection may not be served (None: it may), given the connections served now in all and
    from its address."""
    if serving >= limits.max_connections:
        return ServiceUnavailable(
            f"silo is serving {serving} connections, its limit (http_max_connections); retry in a moment, or ask "
            "its operator to raise the limit."
        )
    if limits.max_per_address and from_address >= limits.max_per_address:
        return errors.TooManyRequestsException(
            f"Too many connections from {address}: at most {limits.max_per_address} may be open at once "
            "(http_max_connections_per_address). Reuse connections (keep-alive) and close idle ones, or ask the "
            "operator to raise the cap.",
            reason="CallerRateLimitExceeded",
        )
    return None


def address_key(client: tuple[str, int] | None) -> str:
    """What the per-address cap counts by: the IPv4 address, or the /64 of an IPv6 one (one host's share)."""
    if client is None:
        return "local socket"
    host = client[0]
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


def answer(error: errors.LambdaError) -> bytes:
    """A whole HTTP answer in Lambda's error shape (as `render.error_response`), closing the connection."""
    body = json.dumps(error.body(), separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}",
        f"x-amzn-RequestId: {request_id()}",
        f"x-amzn-ErrorType: {error.code}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in error.headers().items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Watched(Protocol):
    """A connection the sweep looks at once a second."""

    def sweep(self, tick: int) -> None: ...


class Front:
    """The counts and the clock every connection of one server shares."""

    def __init__(self, limits: FrontLimits) -> None:
        self.limits = limits
        self.tick = 0  # whole seconds since the sweep started
        self._serving = 0
        self._per_address: dict[str, int] = {}
        self._refusing = 0
        self._watched: set[Watched] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._events: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._reported = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = loop.call_later(SWEEP_S, self._sweep, loop)

    def close(self) -> None:
        """Stop the sweep and drop what is left (connections being drained)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conn in list(self._watched):
            if isinstance(conn, Discard):
                conn.transport.abort()

    def admit(self, key: str) -> errors.LambdaError | None:
        """Count a new connection from `key` as served, or say why it is refused (then it is not counted)."""
        from_address = self._per_address.get(key, 0)
        error = refusal(self.limits, serving=self._serving, from_address=from_address, address=key)
        if error is None:
            self._serving += 1
            self._per_address[key] = from_address + 1
        else:
            self.note("refused: " + error.code, key)
        return error

    def leave(self, key: str) -> None:
        """A served connection from `key` is closed."""
        self._serving -= 1
        left = self._per_address[key] - 1
        if left:
            self._per_address[key] = left
        else:
            del self._per_address[key]

    def start_refusing(self) -> bool:
        """Whether one more refused connection may be answered and drained (else it is dropped)."""
        if self._refusing >= MAX_REFUSING:
            self.note("dropped: too many refused connections being drained", None)
            return False
        self._refusing += 1
        return True

    def stop_refusing(self) -> None:
        self._refusing -= 1

    def watch(self, conn: Watched) -> None:
        self._watched.add(conn)

    def unwatch(self, conn: Watched) -> None:
        self._watched.discard(conn)

    def note(self, event: str, source: str | None) -> None:
        """Count something the front did to a caller, for the next summary in the log (one a minute at most:
        an attack must not flood the log)."""
        self._events[event] += 1
        if source is not None:
            self._sources[source] += 1

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tick += 1
        tick = self.tick
        for conn in list(self._watched):
            conn.sweep(tick)
        if self._events and tick - self._reported >= 60:
            self._report()
        self._timer = loop.call_later(SWEEP_S, self._sweep, loop)

    def _report(self) -> None:
        self._reported = self.tick
        what = ", ".join(f"{event} {n}" for event, n in self._events.most_common())
        sources = ", ".join(f"{source} ({n})" for source, n in self._sources.most_common(5))
        log.warning("HTTP front, since the last report: %s%s", what, f"; mostly from {sources}" if sources else "")
        self._events.clear()
        self._sources.clear()


class Discard(asyncio.Protocol):
    """A connection that has had its answer: what the client still sends is read and dropped, up to a budget
    and a time, so that the client reads the answer instead of a reset (nginx's lingering close). The
    server's side is shut for writing, so the client sees the answer end; the connection closes when the
    client closes its side, or the budget or the time runs out."""

    def __init__(
        self, front: Front, transport: asyncio.Transport, *, budget: int, seconds: int, release: str | None
    ) -> None:
        self.front = front
        self.transport = transport
        self._budget = budget
        self._until = front.tick + seconds + 1
        self._release = release  # the address whose served count it holds, None for a refused connection
        front.watch(self)

    def start(self, answer_bytes: bytes) -> None:
        self.transport.set_protocol(self)
        self.transport.write(answer_bytes)
        if self.transport.can_write_eof():
            self.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        self._budget -= len(data)
        if self._budget < 0:
            self.transport.abort()

    def eof_received(self) -> bool | None:
        return None  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.unwatch(self)
        if self._release is None:
            self.front.stop_refusing()
        else:
            self.front.leave(self._release)

    def sweep(self, tick: int) -> None:
        if tick >= self._until:
            self.transport.abort()
