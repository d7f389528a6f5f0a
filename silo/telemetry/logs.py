"""Per-environment log streams: the runtime's stdout and stderr, and the platform's START/END/REPORT lines.

Each environment gets one stream named as Lambda names them (`YYYY/MM/DD/[$LATEST]<32 hex>`). The
daemon reads the environment's output pipe as data arrives; `drain()` also reads synchronously what
is already in the pipe, so a runtime that flushed before posting its response has all of its lines
in the invocation's log by the time the response is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
import uuid
from collections import deque

TAIL_BYTES = 4096
# What one invocation keeps in memory for its tail; the head of a very chatty invocation is dropped.
INVOCATION_BUFFER_BYTES = 256 * 1024
HISTORY_CHUNKS = 256


def stream_name(version: str, now: float | None = None) -> str:
    day = time.strftime("%Y/%m/%d", time.gmtime(now))
    return f"{day}/[{version}]{uuid.uuid4().hex}"


def report_line(
    request_id: str, duration_ms: float, memory_mb: int, max_memory_mb: int | None, init_ms: float | None
) -> str:
    parts = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {max(1, math.ceil(duration_ms))} ms",
        f"Memory Size: {memory_mb} MB",
    ]
    if max_memory_mb is not None:
        parts.append(f"Max Memory Used: {max_memory_mb} MB")
    if init_ms is not None:
        parts.append(f"Init Duration: {init_ms:.2f} ms")
    return "\t".join(parts) + "\t\n"


class LogStream:
    """The log of one environment, and the slice of it that belongs to the running invocation."""

    def __init__(self, name: str, fd: int) -> None:
        self.name = name
        self._fd = fd
        self._current: bytearray | None = None
        self.history: deque[bytes] = deque(maxlen=HISTORY_CHUNKS)
        self._closed = False
        asyncio.get_running_loop().add_reader(fd, self.drain)

    def _append(self, data: bytes) -> None:
        self.history.append(data)
        if self._current is not None:
            self._current += data
            if len(self._current) > INVOCATION_BUFFER_BYTES:
                del self._current[: len(self._current) - INVOCATION_BUFFER_BYTES]

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
            self._append(data)

    def platform(self, line: str) -> None:
        self._append(line.encode())

    def begin(self, request_id: str, version: str) -> None:
        self._current = bytearray()
        self.platform(f"START RequestId: {request_id} Version: {version}\n")

    def end(self, request_id: str, report: str) -> bytes:
        """Close the invocation's slice with END and REPORT; return the whole slice."""
        self.drain()
        self.platform(f"END RequestId: {request_id}\n")
        self.platform(report)
        out = bytes(self._current or b"")
        self._current = None
        return out

    def _stop_reading(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)

    def close(self) -> None:
        self.drain()
        self._stop_reading()


def tail(log: bytes) -> bytes:
    return log[-TAIL_BYTES:]
