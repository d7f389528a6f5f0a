"""Events waiting for their durable write, and the background task that writes them in batches.

The invocation path only appends to a list (O(1), no lock: everything here runs on the event loop).
Every `interval_s`, or as soon as `batch` events wait, the list is swapped for an empty one and the
batch goes to the store in one worker thread, one transaction at a time and in order. If the store
falls so far behind that `max_pending_bytes` of log events wait (their text and what each event costs
in memory besides), new log lines are dropped and counted rather than letting the daemon's memory grow
without bound; metering events are never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from silo.telemetry.events import EventWriter, LogEvent, MeteringEvent

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
FLUSH_BATCH = 10_000
MAX_PENDING_BYTES = 64 * 1024 * 1024
# What a waiting event costs in memory besides its text (its tuple, timestamp and list slot; the other
# strings are shared with its stream), measured with tracemalloc: about 100 bytes.
EVENT_MEMORY_BYTES = 128


class Spool:
    """Log and metering events on their way to the store."""

    def __init__(
        self,
        store: EventWriter | None,
        *,
        interval_s: float = FLUSH_INTERVAL_S,
        batch: int = FLUSH_BATCH,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self._interval_s = interval_s
        self._batch = batch
        self._max_pending_bytes = max_pending_bytes
        self._on_drop = on_drop
        self._logs: list[LogEvent] = []
        self._metering: list[MeteringEvent] = []
        self._pending_bytes = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._writing: asyncio.Future[None] | None = None  # the latest batch handed to the writer thread

    def add(self, event: LogEvent) -> None:
        if self.store is None:
            return
        size = len(event.message) + EVENT_MEMORY_BYTES
        if self._pending_bytes + size > self._max_pending_bytes:
            if self._on_drop is not None:
                self._on_drop(1)
            return
        self._logs.append(event)
        self._pending_bytes += size
        if len(self._logs) >= self._batch and self._wake is not None:
            self._wake.set()

    def meter(self, event: MeteringEvent) -> None:
        if self.store is not None:
            self._metering.append(event)

    def start(self) -> None:
        """Start the background writer; call from the event loop."""
        if self.store is None or self._task is not None:
            return
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silo-telemetry")
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                # A failed write loses that batch, not the server; the next batch tries again.
                log.exception("could not write log and metering events")

    async def flush(self) -> None:
        """Write everything that waits now; returns when it is durable (and earlier batches too)."""
        if self.store is None:
            return
        if not self._logs and not self._metering:
            # Nothing new, but a batch taken by another flush may still be on its way: wait for it, or a
            # reader could miss what was logged before it asked. (Its failure is that flush's to report.)
            if self._writing is not None and not self._writing.done():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._writing)
            return
        logs, metering = self._logs, self._metering
        self._logs, self._metering, self._pending_bytes = [], [], 0
        if self._executor is None:  # not started: write inline (tests, shutdown)
            self.store.write(logs, metering)
            return
        # One writer thread, first in first out: when this batch is durable, so is every earlier one.
        self._writing = asyncio.get_running_loop().run_in_executor(self._executor, self.store.write, logs, metering)
        await self._writing

    async def close(self) -> None:
        """Stop the writer after a last flush."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
