"""What an environment may log: bounded reads of its output, its allowance and its tenant's, the marker of
what was dropped, and retention that takes from the tenants that store the most."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from silo.store.db import open_database
from silo.store.logs import LogStore, event_size, fair_cuts
from silo.telemetry import logs
from silo.telemetry.events import LogEvent, LogQuery
from silo.telemetry.platform import PlatformRecords
from silo.telemetry.throttle import Allowance, LogRates, TenantAllowances

SMALL = LogRates(bytes_per_s=1000, burst_bytes=2000, lines_per_s=10, burst_lines=20, tenant_factor=2)


class Sink:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def add(self, event: LogEvent) -> None:
        self.events.append(event)


def stream(fd: int, sink: Sink, tenants: TenantAllowances | None = None, tenant: str = "t") -> logs.LogStream:
    os.set_blocking(fd, False)  # as an environment's output is
    records = PlatformRecords("Text", "INFO", "arn:aws:lambda:us-east-1:000000000000:function:f", "$LATEST", tenant)
    return logs.LogStream("s", fd, records, sink, "f", tenant, rates=SMALL, tenants=tenants)


def test_an_allowance_refills_at_its_rate_up_to_its_burst() -> None:
    allowance = Allowance(SMALL, now=0.0)
    assert allowance.has_room(0.0)
    allowance.spend(2500, 1)  # one read may overdraw it
    assert not allowance.has_room(0.0)
    assert not allowance.has_room(0.4)  # -500 + 400
    assert allowance.has_room(0.6)
    allowance.spend(0, 30)
    assert not allowance.has_room(0.6)
    assert allowance.has_room(100.0)  # refilled, but only to the burst
    allowance.spend(2001, 0)
    assert not allowance.has_room(100.0)


def test_tenant_allowances_are_shared_and_let_go_with_the_last_stream() -> None:
    tenants = TenantAllowances(SMALL)
    a = tenants.acquire("f", "t", 0.0)
    b = tenants.acquire("f", "t", 0.0)
    assert a is b and a.rates.burst_bytes == 4000
    assert tenants.acquire("f", "u", 0.0) is not a
    tenants.release("f", "t")
    tenants.release("f", "t")
    tenants.release("f", "u")
    assert len(tenants) == 0


def test_a_stream_reads_a_bounded_slice_per_turn() -> None:
    async def main() -> tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        sink = Sink()
        s = logs.LogStream("s", r, PlatformRecords("Text", "INFO", "arn", "$LATEST", "t"), sink, "f", "t")
        written = 0
        try:
            while True:
                written += os.write(w, b"x" * 4095 + b"\n")
        except BlockingIOError:
            pass
        s.drain()  # at most DRAIN_BYTES, even from a writer that keeps the pipe full
        read = sum(len(e.message) + 1 for e in sink.events)
        s.close()
        os.close(w)
        return written, read

    written, read = asyncio.run(main())
    assert 0 < read <= logs.DRAIN_BYTES
    assert read <= written


def test_output_past_the_allowance_is_dropped_and_said_once() -> None:
    async def main() -> list[str]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        sink = Sink()
        s = stream(r, sink)
        s.begin("req-1")
        for i in range(50):
            os.write(w, f"line {i}\n".encode() * 20)  # 20 lines per read, past 20 lines of burst
            s.drain()
        s.end(logs.Report("req-1", 1.0, 128, None, None, "success"))
        s.close()
        os.close(w)
        return [e.message for e in sink.events]

    messages = asyncio.run(main())
    kept = [m for m in messages if m.startswith("line")]
    markers = [m for m in messages if "of output dropped" in m]
    assert 0 < len(kept) <= 40
    assert len(markers) == 1, markers
    assert markers[0].startswith(f"[silo] {50 * 20 - len(kept)} lines")


def test_a_tenants_environments_share_one_allowance() -> None:
    async def main() -> tuple[int, int]:
        tenants = TenantAllowances(SMALL)
        pipes = [os.pipe() for _ in range(4)]
        sinks = [Sink() for _ in pipes]
        streams = [stream(r, sink, tenants) for (r, _), sink in zip(pipes, sinks, strict=True)]
        other_r, other_w = os.pipe()
        other_sink = Sink()
        other = stream(other_r, other_sink, tenants, tenant="other")
        for _ in range(10):
            for (_, w), s in zip(pipes, streams, strict=True):
                os.write(w, b"a\n" * 10)
                s.drain()
        os.write(other_w, b"b\n" * 10)
        other.drain()
        kept = sum(1 for sink in sinks for e in sink.events if e.message == "a")
        return kept, sum(1 for e in other_sink.events if e.message == "b")

    kept, other = asyncio.run(main())
    # Each stream alone may keep 20 lines; together the tenant keeps 40 (twice one), however many it runs.
    assert kept <= 40 + 10
    assert other == 10, "another tenant's allowance is its own"


def test_fair_cuts_take_from_the_biggest_first() -> None:
    assert fair_cuts([("a", 100), ("b", 10)], 50) == {"a": 50}
    cuts = fair_cuts([("a", 100), ("b", 10), ("c", 10)], 95)
    assert sum(cuts.values()) >= 95 and cuts["a"] >= 90
    assert fair_cuts([("a", 5)], 10) == {"a": 5}
    assert fair_cuts([("a", 5)], 0) == {}


def event(tenant: str | None, message: str) -> LogEvent:
    return LogEvent("f", "s", tenant, None, 1, message)


def test_one_tenants_flood_does_not_trim_another_tenants_logs(tmp_path: Path) -> None:
    store = LogStore(open_database(tmp_path / "silo.db"), retention_bytes=100 * event_size("x" * 100))
    store.write([event("quiet", "q" * 100) for _ in range(10)], [])
    for _ in range(20):
        store.write([event("loud", "l" * 100) for _ in range(50)], [])
    quiet = store.read_logs(LogQuery("f", tenant_id="quiet", since_ms=0, limit=1000)).events
    loud = store.read_logs(LogQuery("f", tenant_id="loud", since_ms=0, limit=1000)).events
    assert len(quiet) == 10, "the quiet tenant's lines stay"
    assert 0 < len(loud) <= 90
    assert store.stored_bytes("f") == (len(quiet) + len(loud)) * event_size("x" * 100)


def test_a_large_batch_is_written_in_bounded_transactions(tmp_path: Path) -> None:
    db = open_database(tmp_path / "silo.db")
    store = LogStore(db, retention_bytes=10**9)
    commits = 0

    def trace(statement: str) -> None:
        nonlocal commits
        commits += statement.strip().upper() == "COMMIT"

    db.conn.set_trace_callback(trace)
    store.write([event("t", f"{i}") for i in range(5_000)], [])
    db.conn.set_trace_callback(None)
    assert commits == 3  # 2,000 rows at most per transaction
    assert len(store.read_logs(LogQuery("f", since_ms=0, limit=10_000)).events) == 5_000
