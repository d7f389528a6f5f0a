"""Durable log and metering events, with a bounded size of logs per function (oldest dropped first).

Tables `log_events`, `log_usage` and `metering_events` (migration in silo.store.db). Writes come in
batches from the telemetry spool's worker thread, one transaction per batch; `log_usage` keeps each
function's stored size so retention needs no scan. The size of an event is its message's UTF-8
bytes plus `EVENT_OVERHEAD_BYTES` for its other columns and indexes: an estimate of what it costs
on disk, not an exact count. When a function passes its budget, its oldest events are deleted until
it is back under `TRIM_TO` of it, so trimming happens once in a while, not on every batch.

The store has its own connection (its own `Database`), so log writes never wait on the control
plane's lock, and SQLite's WAL lets both write one after the other without blocking readers.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from silo.store.db import Database
from silo.telemetry.events import (
    LogEvent,
    LogPage,
    LogQuery,
    MeteringEvent,
    MeteringPage,
    MeteringQuery,
    MeteringTotal,
)

EVENT_OVERHEAD_BYTES = 100
INSERT_SLICE = 500
TRIM_TO = 0.9


def event_size(message: str) -> int:
    return len(message.encode("utf-8", "replace")) + EVENT_OVERHEAD_BYTES


class LogStore:
    """Writes and reads log and metering events; implements telemetry's EventStore."""

    def __init__(self, db: Database, retention_bytes: int) -> None:
        self.db = db
        self.retention_bytes = retention_bytes

    # Writing.
    def write(self, logs: list[LogEvent], metering: list[MeteringEvent]) -> None:
        added: dict[str, int] = {}
        rows = []
        for e in logs:
            size = event_size(e.message)
            added[e.function] = added.get(e.function, 0) + size
            rows.append((e.function, e.stream, e.tenant_id, e.request_id, e.timestamp_ms, e.message, size))
        with self.db.transaction() as conn:
            # A statement per slice of rows, each over one JSON document: the insert runs in SQLite without
            # the GIL from start to end, where a statement per row would take it back for every row, each
            # time waiting on the event loop's thread. Slices, because encoding a document holds the GIL
            # throughout (C code never offers it to the event loop), and a batch may hold 10,000 rows.
            for start in range(0, len(rows), INSERT_SLICE):
                conn.execute(
                    "INSERT INTO log_events (function, stream, tenant_id, request_id, ts_ms, message, size) "
                    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
                    "json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), "
                    "json_extract(value, '$[6]') "
                    "FROM json_each(?)",
                    (json.dumps(rows[start : start + INSERT_SLICE], separators=(",", ":")),),
                )
            conn.executemany(
                "INSERT INTO metering_events (function, version, tenant_id, environment_id, memory_mb, ts_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(m.function, m.version, m.tenant_id, m.environment_id, m.memory_mb, m.timestamp_ms) for m in metering],
            )
            for function, size in added.items():
                conn.execute(
                    "INSERT INTO log_usage (function, bytes) VALUES (?, ?) "
                    "ON CONFLICT(function) DO UPDATE SET bytes = bytes + excluded.bytes",
                    (function, size),
                )
                self._trim(conn, function)

    def _trim(self, conn: sqlite3.Connection, function: str) -> None:
        """Drop the function's oldest events while it stores more than its budget."""
        row = conn.execute("SELECT bytes FROM log_usage WHERE function = ?", (function,)).fetchone()
        used = int(row[0]) if row else 0
        if used <= self.retention_bytes:
            return
        excess = used - int(self.retention_bytes * TRIM_TO)
        freed = 0
        last_id = None
        for event_id, size in conn.execute(
            "SELECT id, size FROM log_events WHERE function = ? ORDER BY id", (function,)
        ):
            freed += int(size)
            last_id = int(event_id)
            if freed >= excess:
                break
        if last_id is None:
            return
        conn.execute("DELETE FROM log_events WHERE function = ? AND id <= ?", (function, last_id))
        conn.execute("UPDATE log_usage SET bytes = MAX(0, bytes - ?) WHERE function = ?", (freed, function))

    # Reading.
    def stored_bytes(self, function: str) -> int:
        with self.db.reading() as conn:
            row = conn.execute("SELECT bytes FROM log_usage WHERE function = ?", (function,)).fetchone()
        return int(row[0]) if row else 0

    def read_logs(self, query: LogQuery) -> LogPage:
        where = ["function = ?"]
        params: list[Any] = [query.function]
        for column, value in (
            ("tenant_id = ?", query.tenant_id),
            ("request_id = ?", query.request_id),
            ("stream = ?", query.stream),
            ("ts_ms >= ?", query.since_ms),
            ("ts_ms <= ?", query.until_ms),
            ("id > ?", query.after_id),
        ):
            if value is not None:
                where.append(column)
                params.append(value)
        forward = query.after_id is not None or query.since_ms is not None
        sql = (
            "SELECT id, function, stream, tenant_id, request_id, ts_ms, message FROM log_events "
            f"WHERE {' AND '.join(where)} ORDER BY id {'ASC' if forward else 'DESC'} LIMIT ?"
        )
        with self.db.reading() as conn:
            rows = conn.execute(sql, (*params, query.limit + 1)).fetchall()
            newest = conn.execute("SELECT MAX(id) FROM log_events").fetchone()[0]
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        if not forward:
            rows.reverse()
            more = False  # nothing newer than the newest events
        events = [
            (
                int(r["id"]),
                LogEvent(r["function"], r["stream"], r["tenant_id"], r["request_id"], r["ts_ms"], r["message"]),
            )
            for r in rows
        ]
        if events:
            cursor = events[-1][0]
        elif query.after_id is not None:
            cursor = query.after_id
        else:
            cursor = int(newest or 0)
        return LogPage(events, cursor, more)

    def read_metering(self, query: MeteringQuery) -> MeteringPage:
        where = ["1 = 1"]
        params: list[Any] = []
        for column, value in (
            ("function = ?", query.function),
            ("tenant_id = ?", query.tenant_id),
            ("ts_ms >= ?", query.from_ms),
            ("ts_ms < ?", query.to_ms),
        ):
            if value is not None:
                where.append(column)
                params.append(value)
        condition = " AND ".join(where)
        page_condition = condition + (" AND id > ?" if query.after_id is not None else "")
        page_params = [*params, query.after_id] if query.after_id is not None else params
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT id, function, version, tenant_id, environment_id, memory_mb, ts_ms FROM metering_events "
                f"WHERE {page_condition} ORDER BY id LIMIT ?",
                (*page_params, query.limit + 1),
            ).fetchall()
            totals = conn.execute(
                "SELECT function, tenant_id, COUNT(*), SUM(memory_mb) FROM metering_events "
                f"WHERE {condition} GROUP BY function, tenant_id ORDER BY function, tenant_id",
                params,
            ).fetchall()
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        events = [
            (
                int(r["id"]),
                MeteringEvent(
                    r["function"],
                    r["version"],
                    r["tenant_id"],
                    r["environment_id"],
                    int(r["memory_mb"]),
                    int(r["ts_ms"]),
                ),
            )
            for r in rows
        ]
        cursor = events[-1][0] if events else (query.after_id or 0)
        return MeteringPage(
            events,
            cursor,
            more,
            [MeteringTotal(t[0], t[1], int(t[2]), int(t[3] or 0)) for t in totals],
        )
