"""Telemetry without a server: platform records, log streams, the spool, summaries, metrics, the log store."""

from __future__ import annotations

import asyncio
import json
import os
import random
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from silo.api.telemetry import parse_time
from silo.errors import InvalidParameterValueException
from silo.store.db import open_database
from silo.store.logs import INSERT_SLICE, LogStore, event_size
from silo.telemetry.events import LogEvent, LogQuery, MeteringEvent, MeteringQuery
from silo.telemetry.logs import LogStream, tail
from silo.telemetry.metrics import EnvironmentView, Metrics
from silo.telemetry.platform import PlatformRecords, Report, status_of
from silo.telemetry.spool import EVENT_MEMORY_BYTES, Spool
from silo.telemetry.tenants import QUANTILE_RELATIVE_ERROR, DurationHistogram, TenantBook
from silo.types import ColdStart, FunctionError

ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"


def report(status: str = "success", init_ms: float | None = 12.5) -> Report:
    return Report("rid", 3.01, 128, 36, init_ms, status)


def test_text_platform_lines_are_lambdas() -> None:
    records = PlatformRecords("Text", None, ARN, "$LATEST", "blue")
    assert records.start("rid") == ["START RequestId: rid Version: $LATEST\n"]
    end, rep = records.finish(report())
    assert end == "END RequestId: rid\n"
    assert rep == (
        "REPORT RequestId: rid\tDuration: 3.01 ms\tBilled Duration: 4 ms\tMemory Size: 128 MB\t"
        "Max Memory Used: 36 MB\tInit Duration: 12.50 ms\t\n"
    )
    assert "Init Duration" not in records.finish(report(init_ms=None))[1]


def test_json_platform_records_carry_the_tenant_and_follow_the_level() -> None:
    info = PlatformRecords("JSON", "INFO", ARN, "$LATEST", "blue")
    start = json.loads(info.start("rid")[0])
    assert start["type"] == "platform.start" and start["time"].endswith("Z")
    assert start["record"] == {"requestId": "rid", "functionArn": ARN, "version": "$LATEST", "tenantId": "blue"}
    (done,) = [json.loads(line) for line in info.finish(report("timeout"))]
    assert done["type"] == "platform.report"
    assert done["record"]["status"] == "timeout" and done["record"]["tenantId"] == "blue"
    assert done["record"]["metrics"] == {
        "durationMs": 3.01,
        "billedDurationMs": 4,
        "memorySizeMB": 128,
        "maxMemoryUsedMB": 36,
        "initDurationMs": 12.5,
    }
    debug = PlatformRecords("JSON", "DEBUG", ARN, "$LATEST", None)
    types = [json.loads(line)["type"] for line in debug.finish(report())]
    assert types == ["platform.runtimeDone", "platform.report"]
    assert "tenantId" not in json.loads(debug.start("rid")[0])["record"]
    warn = PlatformRecords("JSON", "WARN", ARN, "$LATEST", "blue")
    assert warn.start("rid") == [] and warn.finish(report()) == []


def test_status_of_an_invocation() -> None:
    assert status_of(None, False, b"{}") == "success"
    assert status_of(FunctionError.UNHANDLED, False, b"{}") == "error"
    assert status_of(FunctionError.UNHANDLED, True, b'{"errorType": "Sandbox.Timedout"}') == "timeout"
    assert status_of(FunctionError.UNHANDLED, True, b'{"errorType": "Runtime.ExitError"}') == "failure"


class Collected:
    def __init__(self) -> None:
        self.events: list[LogEvent] = []

    def add(self, event: LogEvent) -> None:
        self.events.append(event)


def test_log_stream_stamps_lines_with_tenant_and_request() -> None:
    async def scenario() -> tuple[list[LogEvent], bytes]:
        r, w = os.pipe()
        os.set_blocking(r, False)
        sink = Collected()
        stream = LogStream(
            "2025/01/01/[$LATEST]abc", r, PlatformRecords("Text", None, ARN, "$LATEST", "t1"), sink, "f", "t1"
        )
        os.write(w, b"init line\n")
        stream.drain()
        stream.begin("r1")
        os.write(w, b"one\ntwo, without its newline")
        out = stream.end(report())
        os.write(w, b"between calls\n")
        stream.drain()
        os.close(w)
        stream.close()
        os.close(r)
        return sink.events, out

    events, out = asyncio.run(scenario())
    assert [(e.request_id, e.message) for e in events] == [
        (None, "init line"),
        ("r1", "START RequestId: rid Version: $LATEST".replace("rid", "r1")),
        ("r1", "one"),
        ("r1", "two, without its newline"),
        ("r1", "END RequestId: rid"),
        ("r1", events[5].message),
        (None, "between calls"),
    ]
    assert events[5].message.startswith("REPORT RequestId: rid\t")
    assert {(e.function, e.stream, e.tenant_id) for e in events} == {("f", "2025/01/01/[$LATEST]abc", "t1")}
    assert out.startswith(b"START RequestId: r1") and b"one\ntwo, without its newline" in out
    assert b"init line" not in out and b"between calls" not in out
    assert tail(b"x" * 5000 + out)[-len(out) :] == out and len(tail(b"x" * 5000)) == 4096


def event(function: str, message: str, tenant: str | None = "t", request: str | None = "r", ts: int = 1000) -> LogEvent:
    return LogEvent(function, "2025/01/01/[$LATEST]abc", tenant, request, ts, message)


class MemoryStore:
    def __init__(self) -> None:
        self.batches: list[tuple[list[LogEvent], list[MeteringEvent]]] = []

    def write(self, logs: list[LogEvent], metering: list[MeteringEvent]) -> None:
        self.batches.append((logs, metering))


def test_spool_writes_in_batches_and_drops_past_its_cap() -> None:
    store = MemoryStore()
    dropped: list[int] = []
    # Each event costs its text and EVENT_MEMORY_BYTES more: room for two of these five-byte ones.
    spool = Spool(store, max_pending_bytes=2 * (5 + EVENT_MEMORY_BYTES), on_drop=dropped.append)

    async def scenario() -> None:
        spool.start()
        spool.add(event("f", "12345"))
        spool.add(event("f", "67890"))
        spool.add(event("f", "x"))  # past the cap: dropped
        spool.meter(MeteringEvent("f", "$LATEST", "t", "env", 128, 1))
        await spool.flush()
        spool.add(event("f", "later"))
        await spool.close()

    asyncio.run(scenario())
    assert [[e.message for e in logs] for logs, _ in store.batches] == [["12345", "67890"], ["later"]]
    assert [len(m) for _, m in store.batches] == [1, 0]
    assert dropped == [1]


def test_duration_quantiles_are_within_the_documented_error() -> None:
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(1.0, 1.5) for _ in range(5000))
    hist = DurationHistogram()
    for v in values:
        hist.add(v)
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        got = hist.quantile(q)
        assert got is not None
        # The bucket holding the exact rank, reported as its middle: within the stated error of a
        # value of that bucket (the exact one may sit at the bucket's other edge).
        assert abs(got - exact) / exact <= 2 * QUANTILE_RELATIVE_ERROR + 1e-9
    assert DurationHistogram().quantile(0.5) is None


def test_tenant_book_counts_and_forgets_the_least_recent() -> None:
    book = TenantBook(max_tenants=2)
    book.invocation("f", "a", 1.0, False, ColdStart.FULL, now_ms=1)
    book.invocation("f", "a", 2.0, True, ColdStart.WARM, now_ms=2)
    book.invocation("f", "b", 1.0, False, ColdStart.STEM, now_ms=3)
    book.throttled("f", "a", now_ms=4)
    a = book.get("f", "a")
    assert a is not None
    assert (a.calls, a.errors, a.throttles, a.cold_starts, a.last_seen_ms) == (2, 1, 1, {"full": 1}, 4)
    book.invocation("f", "c", 1.0, False, ColdStart.WARM, now_ms=5)
    assert set(book.tenants("f")) == {"a", "c"}, "b was the least recently seen"
    assert book.get("g", "a") is None


def test_metrics_exposition_parses_and_labels_follow_the_setting() -> None:
    for tenant_labels in (False, True):
        m = Metrics(tenant_labels)
        m.invocation("f", "t", 1.5, False, ColdStart.FULL, 20.0)
        m.invocation("f", "t", 0.5, True, ColdStart.WARM, None)
        m.throttled("f", "ReservedFunctionConcurrentInvocationLimitExceeded", "t")
        m.evicted("f", "memory")
        m.watch_environments(lambda: [EnvironmentView("f", "t", "idle"), EnvironmentView("f", "u", "busy")])
        families = {f.name: f for f in text_string_to_metric_families(m.exposition().decode())}
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
        t = (("tenant", "t"),) if tenant_labels else ()
        assert samples[("silo_invocations_total", (("function", "f"), *t))] == 2
        assert samples[("silo_function_errors_total", (("function", "f"), *t))] == 1
        assert samples[("silo_cold_starts_total", (("function", "f"), ("kind", "full"), *t))] == 1
        assert samples[("silo_invocation_duration_seconds_count", (("function", "f"), *t))] == 2
        reason = ("reason", "ReservedFunctionConcurrentInvocationLimitExceeded")
        assert samples[("silo_throttles_total", (("function", "f"), reason, *t))] == 1
        assert samples[("silo_evictions_total", (("function", "f"), ("reason", "memory")))] == 1
        idle = (("function", "f"), ("state", "idle"), *t)
        assert samples[("silo_environments", idle)] == 1
        assert any("tenant" in labels for _, labels in [(k[0], dict(k[1])) for k in samples]) is tenant_labels


@pytest.fixture()
def store(tmp_path: Path) -> LogStore:
    return LogStore(open_database(tmp_path / "silo.db"), retention_bytes=10 * event_size("x" * 100))


def test_store_queries_filter_and_page(store: LogStore) -> None:
    store.write(
        [
            event("f", "a1", tenant="a", request="r1", ts=1000),
            event("f", "b1", tenant="b", request="r2", ts=2000),
            event("f", "a2", tenant="a", request="r3", ts=3000),
            event("g", "other function", ts=3000),
        ],
        [],
    )
    newest = store.read_logs(LogQuery("f", limit=2))
    assert [e.message for _, e in newest.events] == ["b1", "a2"] and not newest.more
    assert [e.message for _, e in store.read_logs(LogQuery("f", tenant_id="a")).events] == ["a1", "a2"]
    assert [e.message for _, e in store.read_logs(LogQuery("f", request_id="r2")).events] == ["b1"]
    assert [e.message for _, e in store.read_logs(LogQuery("f", since_ms=2000)).events] == ["b1", "a2"]
    first = store.read_logs(LogQuery("f", since_ms=0, limit=1))
    assert [e.message for _, e in first.events] == ["a1"] and first.more
    second = store.read_logs(LogQuery("f", after_id=first.next_cursor, limit=5))
    assert [e.message for _, e in second.events] == ["b1", "a2"] and not second.more
    empty = store.read_logs(LogQuery("f", after_id=second.next_cursor))
    assert empty.events == [] and empty.next_cursor == second.next_cursor
    assert store.read_logs(LogQuery("nobody")).next_cursor >= second.next_cursor, "follow starts from now"


def test_store_writes_a_batch_larger_than_one_statement_whole_and_in_order(tmp_path: Path) -> None:
    big = LogStore(open_database(tmp_path / "big.db"), retention_bytes=10**9)
    count = 2 * INSERT_SLICE + 7
    big.write([event("f", f"{i:05d}", tenant=f"t{i % 3}", ts=i) for i in range(count)], [])
    page = big.read_logs(LogQuery("f", since_ms=0, limit=count + 1))
    assert [e.message for _, e in page.events] == [f"{i:05d}" for i in range(count)]
    assert big.stored_bytes("f") == count * event_size("00000")


def test_store_retention_drops_the_oldest_first(store: LogStore) -> None:
    for i in range(30):
        store.write([event("f", f"{i:03d}" + "x" * 97), *([event("g", "small")] if i < 10 else [])], [])
    kept = [e.message[:3] for _, e in store.read_logs(LogQuery("f", since_ms=0, limit=100)).events]
    assert kept == [f"{i:03d}" for i in range(30 - len(kept), 30)]
    assert 0 < len(kept) <= 10
    assert store.stored_bytes("f") == len(kept) * event_size("x" * 100)
    assert len(store.read_logs(LogQuery("g", since_ms=0, limit=100)).events) == 10, "budgets are per function"


def test_store_metering_totals(store: LogStore) -> None:
    store.write(
        [],
        [
            MeteringEvent("f", "$LATEST", "a", "e1", 128, 1000),
            MeteringEvent("f", "$LATEST", "a", "e2", 128, 2000),
            MeteringEvent("f", "$LATEST", "b", "e3", 512, 3000),
            MeteringEvent("g", "$LATEST", "a", "e4", 128, 3000),
        ],
    )
    page = store.read_metering(MeteringQuery(function="f"))
    assert [(t.tenant_id, t.environments, t.memory_mb) for t in page.totals] == [("a", 2, 256), ("b", 1, 512)]
    assert [m.environment_id for _, m in store.read_metering(MeteringQuery(tenant_id="a", to_ms=3000)).events] == [
        "e1",
        "e2",
    ]
    assert len(store.read_metering(MeteringQuery(from_ms=3000)).events) == 2


def test_parse_time() -> None:
    now = 10_000_000
    assert parse_time("1700000000000", "since", now) == 1700000000000
    assert parse_time("10m", "since", now) == now - 600_000
    assert parse_time("2h", "since", now) == now - 7_200_000
    assert parse_time("1970-01-01T00:00:01Z", "since", now) == 1000
    assert parse_time("1970-01-01T00:00:02", "since", now) == 2000
    assert parse_time(None, "since", now) is None
    with pytest.raises(InvalidParameterValueException):
        parse_time("soon", "since", now)
