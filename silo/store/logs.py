"""Durable log and metering events, with a bounded size of logs per function, shared fairly by its tenants.

Tables `log_events`, `log_usage`, `log_usage_tenants` and `metering_events` (migrations in
silo.store.db). Writes come in batches from the telemetry spool's worker thread, in transactions of at
most `TRANSACTION_ROWS` events; `log_usage` and `log_usage_tenants` keep each function's and each of its
tenants' stored size so retention needs no scan. The size of an event is its message's UTF-8 bytes
plus `EVENT_OVERHEAD_BYTES` for its other columns and indexes: an estimate of what it costs on disk,
not an exact count.

When a function passes its budget, events are deleted until it is back under `TRIM_TO` of it, so
trimming happens once in a while, not on every batch; they are taken from the tenants that store the
most, oldest first, down to a common level (water-filling): a tenant that floods the log trims its
own lines, and another tenant's lines go only once it stores as much as the flooding one.

The store has its own connection (its own `Database`), so log writes never wait on the control
plane's lock in the daemon. SQLite still has one writer at a time per file: the control plane's
writes wait for a log transaction to end, which is why a transaction holds a bounded number of rows.
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
# Rows per write transaction: a few milliseconds of SQLite's one write lock, which the control plane's
# writes (CreateFunction, the async queue) wait for.
TRANSACTION_ROWS = 2_000
TRIM_TO = 0.9


def event_size(message: str) -> int:
    return len(message.encode("utf-8", "replace")) + EVENT_OVERHEAD_BYTES


def fair_cuts(stored: list[tuple[str, int]], excess: int) -> dict[str, int]:
    """How much to take from each tenant (tenant, bytes stored) to free `excess` bytes: the biggest are cut
    down to one level, so nobody loses lines while another stores more than it (water-filling)."""
    if excess <= 0:
        return {}
    ordered = sorted(stored, key=lambda t: t[1], reverse=True)
    # Find the level: with the k biggest cut to `level`, they give up sum(their bytes) - k * level.
    total = 0
    level = 0
    for k, (_, size) in enumerate(ordered, start=1):
        total += size
        following = ordered[k][1] if k < len(ordered) else 0
        if total - k * following >= excess:
            level = max(following, (total - excess) // k)
            break
    return {tenant: size - level for tenant, size in ordered if size > level}


class LogStore:
    """Writes and reads log and metering events; implements telemetry's EventStore."""

    def __init__(self, db: Database, retention_bytes: int) -> None:
        self.db = db
        self.retention_bytes = retention_bytes

    # Writing.
    def write(self, logs: list[LogEvent], metering: list[MeteringEvent]) -> None:
        for start in range(0, max(1, len(logs)), TRANSACTION_ROWS):
            self._write(logs[start : start + TRANSACTION_ROWS], metering if start == 0 else [])

    def _write(self, logs: list[LogEvent], metering: list[MeteringEvent]) -> None:
        added: dict[tuple[str, str], int] = {}
        rows = []
        for e in logs:
            size = event_size(e.message)
            key = (e.function, e.tenant_id or "")
            added[key] = added.get(key, 0) + size
            rows.append(
                (e.function, e.stream, e.tenant_id, e.request_id, e.timestamp_ms, e.message, size, e.caller_key)
            )
        functions: dict[str, int] = {}
        for (function, _), size in added.items():
            functions[function] = functions.get(function, 0) + size
        with self.db.transaction() as conn:
            # A statement per slice of rows, each over one JSON document: the insert runs in SQLite without
            # the GIL from start to end, where a statement per row would take it back for every row, each
            # time waiting on the event loop's thread. Slices, because encoding a document holds the GIL
            # throughout (C code never offers it to the event loop).
            for start in range(0, len(rows), INSERT_SLICE):
                conn.execute(
                    "INSERT INTO log_events "
                    "(function, stream, tenant_id, request_id, ts_ms, message, size, caller_key) "
                    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), "
                    "json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), "
                    "json_extract(value, '$[6]'), json_extract(value, '$[7]') "
                    "FROM json_each(?)",
                    (json.dumps(rows[start : start + INSERT_SLICE], separators=(",", ":")),),
                )
            conn.executemany(
                "INSERT INTO metering_events (function, version, tenant_id, environment_id, memory_mb, ts_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(m.function, m.version, m.tenant_id, m.environment_id, m.memory_mb, m.timestamp_ms) for m in metering],
            )
            conn.executemany(
                "INSERT INTO log_usage_tenants (function, tenant, bytes) VALUES (?, ?, ?) "
                "ON CONFLICT(function, tenant) DO UPDATE SET bytes = bytes + excluded.bytes",
                [(function, tenant, size) for (function, tenant), size in added.items()],
            )
            for function, size in functions.items():
                conn.execute(
                    "INSERT INTO log_usage (function, bytes) VALUES (?, ?) "
                    "ON CONFLICT(function) DO UPDATE SET bytes = bytes + excluded.bytes",
                    (function, size),
                )
                self._trim(conn, function)

    def _trim(self, conn: sqlite3.Connection, function: str) -> None:
        """Back under TRIM_TO of the budget when the function stores more than it, from its biggest tenants."""
        row = conn.execute("SELECT bytes FROM log_usage WHERE function = ?", (function,)).fetchone()
        used = int(row[0]) if row else 0
        if used <= self.retention_bytes:
            return
        tenants = [
            (str(r[0]), int(r[1]))
            for r in conn.execute("SELECT tenant, bytes FROM log_usage_tenants WHERE function = ?", (function,))
        ]
        freed = 0
        for tenant, excess in fair_cuts(tenants, used - int(self.retention_bytes * TRIM_TO)).items():
            freed += self._trim_tenant(conn, function, tenant, excess)
        conn.execute("UPDATE log_usage SET bytes = MAX(0, bytes - ?) WHERE function = ?", (freed, function))

    def _trim_tenant(self, conn: sqlite3.Connection, function: str, tenant: str, excess: int) -> int:
        """Drop at least `excess` bytes of one tenant's oldest events of the function; return what was freed.

        The cut is found by SQLite (a running sum over the tenant's index), not by stepping through the rows
        in Python, which held the GIL, away from the event loop, for every row of a large trim."""
        tenant_id = tenant or None
        row = conn.execute(
            "SELECT id, running FROM (SELECT id, SUM(size) OVER (ORDER BY id) AS running FROM log_events "
            "WHERE function = ? AND tenant_id IS ?) WHERE running >= ? LIMIT 1",
            (function, tenant_id, excess),
        ).fetchone()
        if row is None:  # less than `excess` stored: all of it goes
            row = conn.execute(
                "SELECT MAX(id), COALESCE(SUM(size), 0) FROM log_events WHERE function = ? AND tenant_id IS ?",
                (function, tenant_id),
            ).fetchone()
        last_id, freed = row[0], int(row[1] or 0)
        if last_id is not None:
            conn.execute(
                "DELETE FROM log_events WHERE function = ? AND tenant_id IS ? AND id <= ?",
                (function, tenant_id, last_id),
            )
        conn.execute(
            "UPDATE log_usage_tenants SET bytes = MAX(0, bytes - ?) WHERE function = ? AND tenant = ?",
            (freed, function, tenant),
        )
        return freed

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
            "SELECT id, function, stream, tenant_id, request_id, ts_ms, message, caller_key FROM log_events "
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
                LogEvent(
                    r["function"],
                    r["stream"],
                    r["tenant_id"],
                    r["request_id"],
                    r["ts_ms"],
                    r["message"],
                    r["caller_key"],
                ),
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
