"""Per-environment log streams: the runtime's stdout and stderr, and the platform's records around each call.

Each environment gets one stream named as Lambda names them (`YYYY/MM/DD/[$LATEST]<32 hex>`). The
daemon reads the environment's output pipe as data arrives; `drain()` also reads synchronously what
is already in the pipe, so a runtime that flushed before posting its response has all of its lines
in the invocation's log by the time the response is handled.

Every line becomes a `LogEvent` stamped with the stream's function and tenant and the request id of
the invocation running when it was read, handed to a sink that only appends it to a list: the
durable write happens later, in batches, off the invocation path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import deque
from typing import Protocol

from silo.telemetry.events import LogEvent
from silo.telemetry.platform import PlatformRecords, Report, report_line
from silo.types import FunctionSpec

__all__ = ["LogStream", "Report", "open_stream", "report_line", "stream_name", "tail"]

TAIL_BYTES = 4096
# What one invocation keeps in memory for its tail; the head of a very chatty invocation is dropped.
INVOCATION_BUFFER_BYTES = 256 * 1024
HISTORY_CHUNKS = 256
# CloudWatch's largest log event; a longer line is cut into several events.
MAX_EVENT_BYTES = 256 * 1024


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
    ) -> None:
        self.name = name
        self._fd = fd
        self._records = records
        self._sink = sink
        self._function = function
        self._tenant_id = tenant_id
        self._request_id: str | None = None
        self._partial = b""
        self._current: bytearray | None = None
        self._answered = False  # drained when the runtime answered the current invocation
        self.history: deque[bytes] = deque(maxlen=HISTORY_CHUNKS)
        self._closed = False
        asyncio.get_running_loop().add_reader(fd, self.drain)

    def bind_tenant(self, tenant_id: str | None) -> None:
        """A stem's stream learns its tenant when the stem is bound; everything before was init, tenantless."""
        self.drain()
        self._tenant_id = tenant_id
        self._records.bind_tenant(tenant_id)

    def _append(self, data: bytes) -> None:
        self.history.append(data)
        if self._current is not None:
            self._current += data
            if len(self._current) > INVOCATION_BUFFER_BYTES:
                del self._current[: len(self._current) - INVOCATION_BUFFER_BYTES]

    def _emit(self, line: bytes, timestamp_ms: int) -> None:
        assert self._sink is not None  # checked by the callers
        for i in range(0, len(line), MAX_EVENT_BYTES):
            message = line[i : i + MAX_EVENT_BYTES].decode("utf-8", "replace")
            self._sink.add(
                LogEvent(self._function, self.name, self._tenant_id, self._request_id, timestamp_ms, message)
            )

    def _output(self, data: bytes) -> None:
        self._append(data)
        if self._sink is None:
            return
        lines = (self._partial + data if self._partial else data).split(b"\n")
        self._partial = lines.pop()
        now_ms = int(time.time() * 1000)
        for line in lines:
            if line:
                self._emit(line, now_ms)
        if len(self._partial) >= MAX_EVENT_BYTES:
            self._flush_partial()

    def _flush_partial(self) -> None:
        """Output without its newline yet becomes an event of its own before the next platform record."""
        if self._partial and self._sink is not None:
            self._emit(self._partial, int(time.time() * 1000))
        self._partial = b""

    def drain(self) -> None:
        """Read everything the pipe holds now, without waiting."""
        while not self._closed:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._stop_reading()
                return
            self._output(data)

    def platform(self, line: str) -> None:
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
                )
            )

    def answered(self) -> None:
        """The runtime answered (it flushed its output first): read what the pipe holds, once."""
        self.drain()
        self._answered = True

    def begin(self, request_id: str) -> None:
        self._flush_partial()
        self._answered = False
        self._current = bytearray()
        self._request_id = request_id
        for line in self._records.start(request_id):
            self.platform(line)

    def end(self, report: Report) -> bytes:
        """Close the invocation's slice with the platform's records; return the whole slice."""
        if not self._answered:
            self.drain()
        for line in self._records.finish(report):
            self.platform(line)
        out = bytes(self._current or b"")
        self._current = None
        self._request_id = None
        return out

    def _stop_reading(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)

    def close(self) -> None:
        self.drain()
        self._flush_partial()
        self._stop_reading()


def open_stream(
    name: str, fd: int, spec: FunctionSpec, tenant_id: str | None, sink: EventSink | None = None
) -> LogStream:
    """The log stream of an environment of `spec` for `tenant_id`, in the function's log format."""
    records = PlatformRecords(spec.log_format, spec.system_log_level, spec.function_arn, spec.version, tenant_id)
    return LogStream(name, fd, records, sink, spec.function_name, tenant_id)


def tail(log: bytes) -> bytes:
    return log[-TAIL_BYTES:]
