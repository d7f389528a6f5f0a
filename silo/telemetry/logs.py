"""Per-environment log streams: the runtime's stdout and stderr, and the platform's records around each call.

Each environment gets one stream named as Lambda names them (`YYYY/MM/DD/[$LATEST]<32 hex>`). The
daemon reads the environment's output pipe as data arrives, one read per turn of the event loop, so
an environment that never stops writing cannot keep the loop from everyone else; `drain()` also reads
synchronously, up to a bound, what is already in the pipe, so a runtime that flushed before posting
its response has its lines in the invocation's log by the time the response is handled.

Every line becomes a `LogEvent` stamped with the stream's function and tenant and the request id of
the invocation running when it was read, handed to a sink that only appends it to a list: the
durable write happens later, in batches, off the invocation path. What an environment, and a tenant
of a function, may log is metered (silo.telemetry.throttle): output past the allowance is read and
dropped, and one marker line in the stream says how much.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Protocol

from silo.telemetry.events import LogEvent
from silo.telemetry.platform import PlatformRecords, Report, report_line
from silo.telemetry.throttle import Allowance, LogRates, TenantAllowances
from silo.types import FunctionSpec

__all__ = ["LogStream", "Report", "open_stream", "report_line", "stream_name", "tail"]

log = logging.getLogger(__name__)

TAIL_BYTES = 4096
# What one invocation keeps in memory for its tail; the head of a very chatty invocation is dropped.
INVOCATION_BUFFER_BYTES = 256 * 1024
# CloudWatch's largest log event; a longer line is cut into several events.
MAX_EVENT_BYTES = 256 * 1024
# One read per turn of the event loop when the pipe is readable: as much as the pipe holds by default.
READ_BYTES = 65536
# What a synchronous drain (at an answer, a bind, the end) reads at most: a runtime that flushed before it
# answered has left at most a pipe's worth; one that keeps writing must not hold the loop.
DRAIN_BYTES = 16 * READ_BYTES
# While output is being dropped, the pipe is read at most this often: reading and dropping still costs
# the daemon, and the writer, blocked on a full pipe meanwhile, is the one that pays.
DROPPING_PAUSE_S = 0.01
DEFAULT_RATES = LogRates()


def event_messages(line: bytes) -> list[str]:
    """A line of output as the messages of its events: text, each at most MAX_EVENT_BYTES in UTF-8, cut
    between characters. Bytes that are not UTF-8 become U+FFFD, three bytes each, so the cut is made
    on the decoded text, not on the output's bytes."""
    if len(line) <= MAX_EVENT_BYTES // 3:  # even all replaced, it fits: the usual case, decoded once
        return [line.decode("utf-8", "replace")]
    encoded = line.decode("utf-8", "replace").encode("utf-8")
    out = []
    start = 0
    while start < len(encoded):
        end = min(start + MAX_EVENT_BYTES, len(encoded))
        while end < len(encoded) and encoded[end] & 0xC0 == 0x80:  # never inside a character
            end -= 1
        out.append(encoded[start:end].decode("utf-8"))
        start = end
    return out


def complete_prefix(data: bytes) -> int:
    """How much of `data` is whole UTF-8 characters: all of it, but for a character cut off at its end."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # a continuation byte: the character starts further back
        length = 1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
        return len(data) - back if length > back and byte >= 0xC0 else len(data)
    return len(data)


class EventSink(Protocol):
    def add(self, event: LogEvent) -> None: ...


def stream_name(version: str, now: float | None = None) -> str:
    day = time.strftime("%Y/%m/%d", time.gmtime(now))
    return f"{day}/[{version}]{uuid.uuid4().hex}"


class LogStream:
    """The log of one environment, and the slice of it that belongs to the running invocation."""

    def __init__(
        self,
        name: str,
        fd: int,
        records: PlatformRecords,
        sink: EventSink | None = None,
        function: str = "",
        tenant_id: str | None = None,
        *,
        rates: LogRates = DEFAULT_RATES,
        tenants: TenantAllowances | None = None,
        on_dropped: Callable[[str, int], None] | None = None,
    ) -> None:
        """`tenants`: the allowances shared by each tenant of a function; `on_dropped(function, lines)` is told
        of every marker."""
        self.name = name
        self._on_dropped = on_dropped
        self._fd = fd
        self._records = records
        self._sink = sink
        self._function = function
        self._tenant_id = tenant_id
        self._request_id: str | None = None
        self._partial = b""
        self._current: bytearray | None = None
        self._answered = False  # drained when the runtime answered the current invocation
        self._closed = False
        self._paused: asyncio.TimerHandle | None = None
        now = time.monotonic()
        self._own = Allowance(rates, now)
        self._tenants = tenants
        self._shared = tenants.acquire(function, tenant_id, now) if tenants is not None else None
        self._dropping = False  # dropping now: what is read is counted, not kept
        self.dropped_lines = 0  # dropped since the last marker
        self.dropped_bytes = 0
        self._warned = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._readable)

    def bind_tenant(self, tenant_id: str | None) -> None:
        """A stem's stream learns its tenant when the stem is bound; everything before was init, tenantless."""
        self.drain()
        self._report_dropped()
        if self._tenants is not None:
            self._tenants.release(self._function, self._tenant_id)
            self._shared = self._tenants.acquire(self._function, tenant_id, time.monotonic())
        self._tenant_id = tenant_id
        self._records.bind_tenant(tenant_id)

    def _append(self, data: bytes) -> None:
        if self._current is not None:
            self._current += data
            if len(self._current) > INVOCATION_BUFFER_BYTES:
                del self._current[: len(self._current) - INVOCATION_BUFFER_BYTES]

    def _emit(self, line: bytes, timestamp_ms: int) -> None:
        assert self._sink is not None  # checked by the callers
        for message in event_messages(line):
            self._sink.add(
                LogEvent(self._function, self.name, self._tenant_id, self._request_id, timestamp_ms, message)
            )

    def _admit(self, data: bytes) -> bool:
        """Whether this read is within the allowances (which it then spends); counted as dropped if not."""
        now = time.monotonic()
        shared = self._shared
        host = self._tenants.host if self._tenants is not None else None
        if (
            self._own.has_room(now)
            and (shared is None or shared.has_room(now))
            and (host is None or host.has_room(now))
        ):
            lines = data.count(b"\n")
            self._own.spend(len(data), lines)
            if shared is not None:
                shared.spend(len(data), lines)
            if host is not None:
                host.spend(len(data), lines)
            if self._dropping:
                self._dropping = False
                self._report_dropped()
            return True
        self._dropping = True
        self.dropped_lines += data.count(b"\n")
        self.dropped_bytes += len(data)
        if not self._warned:
            self._warned = True
            log.warning(
                "an environment of %s (tenant %s) writes output faster than silo keeps (%s); what passes it is "
                "dropped and counted in its log stream %s",
                self._function,
                self._tenant_id,
                self._limits(),
                self.name,
            )
        return False

    def _output(self, data: bytes) -> None:
        self._append(data)
        if self._sink is None:
            return
        if not self._admit(data):
            # The line cut by the drop is dropped whole: what came before it stays an event of its own.
            self._flush_partial()
            return
        lines = (self._partial + data if self._partial else data).split(b"\n")
        self._partial = lines.pop()
        now_ms = int(time.time() * 1000)
        for line in lines:
            if line:
                self._emit(line, now_ms)
        if len(self._partial) >= MAX_EVENT_BYTES:
            # An event of its own, but not the start of a character whose other bytes are still to come.
            cut = complete_prefix(self._partial)
            rest = self._partial[cut:]
            self._partial = self._partial[:cut]
            self._flush_partial()
            self._partial = rest

    def _flush_partial(self) -> None:
        """Output without its newline yet becomes an event of its own before the next platform record."""
        if self._partial and self._sink is not None:
            self._emit(self._partial, int(time.time() * 1000))
        self._partial = b""

    def _report_dropped(self) -> None:
        """One line in the stream for what was dropped since the last one, like Lambda's log throttling."""
        if not self.dropped_lines and not self.dropped_bytes:
            return
        lines, size = self.dropped_lines, self.dropped_bytes
        self.dropped_lines = self.dropped_bytes = 0
        if self._on_dropped is not None:
            self._on_dropped(self._function, lines)
        self.platform(
            f"[silo] {lines} lines ({size} bytes) of output dropped: this environment wrote more than silo keeps "
            f"({self._limits()}). Log less, or at a coarser level.\n"
        )

    def _limits(self) -> str:
        parts = [f"{self._own.rates.describe()} per environment"]
        if self._shared is not None:
            parts.append(f"{self._shared.rates.describe()} per tenant of the function")
        if self._tenants is not None:
            parts.append(f"{self._tenants.host.rates.describe()} for the whole host")
        return ", ".join(parts)

    def _read_once(self) -> bool:
        """One read of the pipe; False when it holds nothing now (or has ended)."""
        try:
            data = os.read(self._fd, READ_BYTES)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._stop_reading()
            return False
        self._output(data)
        return True

    def _readable(self) -> None:
        if self._closed:
            return
        self._read_once()
        if self._dropping and not self._closed and self._paused is None:
            self._loop.remove_reader(self._fd)
            self._paused = self._loop.call_later(DROPPING_PAUSE_S, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self._closed:
            self._loop.add_reader(self._fd, self._readable)

    def drain(self) -> None:
        """Read what the pipe holds now, without waiting, up to DRAIN_BYTES."""
        for _ in range(DRAIN_BYTES // READ_BYTES):
            if self._closed or not self._read_once():
                return

    def platform(self, line: str, caller_key: str | None = None) -> None:
        self._flush_partial()
        self._append(line.encode())
        if self._sink is not None:
            self._sink.add(
                LogEvent(
                    self._function,
                    self.name,
                    self._tenant_id,
                    self._request_id,
                    int(time.time() * 1000),
                    line.rstrip("\n"),
                    caller_key,
                )
            )

    def answered(self) -> None:
        """The runtime answered (it flushed its output first): read what the pipe holds, once."""
        self.drain()
        self._answered = True

    def begin(self, request_id: str, caller_key: str | None = None) -> None:
        """Open an invocation's slice with the platform's START record, which keeps `caller_key`."""
        self._flush_partial()
        self._answered = False
        self._current = bytearray()
        self._request_id = request_id
        for line in self._records.start(request_id):
            self.platform(line, caller_key)

    def end(self, report: Report) -> bytes:
        """Close the invocation's slice with the platform's records; return the whole slice."""
        if not self._answered:
            self.drain()
        self._report_dropped()
        for line in self._records.finish(report):
            self.platform(line)
        out = bytes(self._current or b"")
        self._current = None
        self._request_id = None
        return out

    def _stop_reading(self) -> None:
        if not self._closed:
            self._closed = True
            if self._paused is not None:
                self._paused.cancel()
                self._paused = None
            else:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._fd)
            if self._tenants is not None:
                self._tenants.release(self._function, self._tenant_id)
                self._tenants = None

    def close(self) -> None:
        self.drain()
        self._flush_partial()
        self._report_dropped()
        self._stop_reading()


def open_stream(
    name: str,
    fd: int,
    spec: FunctionSpec,
    tenant_id: str | None,
    sink: EventSink | None = None,
    tenants: TenantAllowances | None = None,
    on_dropped: Callable[[str, int], None] | None = None,
) -> LogStream:
    """The log stream of an environment of `spec` for `tenant_id`, in the function's log format."""
    records = PlatformRecords(spec.log_format, spec.system_log_level, spec.function_arn, spec.version, tenant_id)
    rates = tenants.rates if tenants is not None else DEFAULT_RATES
    return LogStream(
        name, fd, records, sink, spec.function_name, tenant_id, rates=rates, tenants=tenants, on_dropped=on_dropped
    )


def tail(log: bytes) -> bytes:
    return log[-TAIL_BYTES:]
