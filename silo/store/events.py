"""The durable queue of asynchronous invocations, and the EventInvokeConfig of each function.

An event's life is an explicit state machine: PENDING -> RUNNING -> PENDING (a retry) ... -> SUCCEEDED,
FAILED (its record went to an on-failure destination) or DEAD (kept in the dead-letter list, from where a
replay moves it to REPLAYED). Every transition is one transaction guarded by the state it leaves, so a
stale writer (a task of a server that was stopped) changes nothing.

Before the dispatcher hands an event to the router it writes an attempt row in the same transaction
that marks the event RUNNING. A handler therefore never runs without a row saying so, which is what
lets anyone check that an event ran once, and not again after it completed. The repository decides
nothing; silo.events does.
"""

from __future__ import annotations

import enum
import json
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from silo.store.db import Database


class EventState(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # finally failed; its record was handed to the on-failure destination
    DEAD = "dead"  # finally failed with no destination: in the dead-letter list
    REPLAYED = "replayed"  # a dead letter that was queued again as a new event


# Outcomes of a hand-over that never reached the handler: retried later, using no retry attempt.
DEFERRALS = ("throttled", "unavailable")
FINAL_STATES = (EventState.SUCCEEDED, EventState.FAILED, EventState.DEAD, EventState.REPLAYED)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as Invoke (or a destination, or a replay) hands it over."""

    request_id: str
    function_name: str
    qualifier: str | None
    tenant_id: str | None
    payload: bytes
    enqueued_at: float
    replay_of: str | None = None
    caller_key: str | None = None  # the id of the key that sent it (silo.control.keys), None without one


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One stored event. `runs` counts hand-overs that reached the handler; `throttles` those the router
    refused (throttled, or the backend unavailable), which are retried without using a retry attempt."""

    seq: int
    request_id: str
    function_name: str
    qualifier: str | None
    tenant_id: str | None
    payload: bytes
    state: EventState
    runs: int
    throttles: int
    enqueued_at: float
    next_attempt_at: float
    boot_id: str | None
    condition: str | None
    finished_at: float | None
    function_error: str | None
    response: bytes | None
    executed_version: str | None
    destination_id: str | None
    replay_of: str | None
    replayed_as: str | None
    attempt_id: int | None = None  # the attempt a claim just opened
    caller_key: str | None = None  # the id of the key that sent it


@dataclass(frozen=True, slots=True)
class Attempt:
    """One hand-over of an event to the router, written before it happens."""

    id: int
    request_id: str
    boot_id: str
    started_at: float
    finished_at: float | None
    outcome: str | None  # None while running; "interrupted" when the server stopped first
    detail: str | None


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one attempt ended and where the event goes next (PENDING again, or a final state)."""

    request_id: str
    attempt_id: int
    outcome: str  # success | error | throttled | unavailable | skipped
    detail: str | None
    ran: bool
    state: EventState
    next_attempt_at: float | None = None
    condition: str | None = None
    response: bytes | None = None
    function_error: str | None = None
    executed_version: str | None = None
    destination: NewEvent | None = None


def _event(row: sqlite3.Row, attempt_id: int | None = None) -> QueuedEvent:
    return QueuedEvent(
        seq=int(row["seq"]),
        request_id=row["request_id"],
        function_name=row["function_name"],
        qualifier=row["qualifier"],
        tenant_id=row["tenant_id"],
        payload=bytes(row["payload"]),
        state=EventState(row["state"]),
        runs=int(row["runs"]),
        throttles=int(row["throttles"]),
        enqueued_at=float(row["enqueued_at"]),
        next_attempt_at=float(row["next_attempt_at"]),
        boot_id=row["boot_id"],
        condition=row["condition"],
        finished_at=row["finished_at"],
        function_error=row["function_error"],
        response=None if row["response"] is None else bytes(row["response"]),
        executed_version=row["executed_version"],
        destination_id=row["destination_id"],
        replay_of=row["replay_of"],
        replayed_as=row["replayed_as"],
        attempt_id=attempt_id,
        caller_key=row["caller_key"],
    )


_SELECT = "SELECT rowid AS seq, * FROM async_events"


def _insert(conn: sqlite3.Connection, ev: NewEvent) -> None:
    conn.execute(
        "INSERT INTO async_events (request_id, function_name, qualifier, tenant_id, payload, state, "
        "enqueued_at, next_attempt_at, replay_of, caller_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            ev.request_id,
            ev.function_name,
            ev.qualifier,
            ev.tenant_id,
            ev.payload,
            EventState.PENDING.value,
            ev.enqueued_at,
            ev.enqueued_at,
            ev.replay_of,
            ev.caller_key,
        ),
    )


class EventQueue:
    """The async_events and async_attempts tables. Every method is one short transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(self, ev: NewEvent) -> None:
        """Store a new PENDING event; committed when this returns."""
        with self.db.transaction() as conn:
            _insert(conn, ev)

    def recover(self, boot_id: str, now: float) -> int:
        """At start: events a previous server left RUNNING go back to PENDING, due now.

        Their open attempts are closed as `interrupted`: the handler may or may not have run, so such an
        event runs again (at least once). Interruptions are silo's doing, so they use no retry attempt.
        """
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE async_attempts SET outcome = 'interrupted', finished_at = ? WHERE finished_at IS NULL "
                "AND boot_id != ?",
                (now, boot_id),
            )
            cur = conn.execute(
                "UPDATE async_events SET state = ?, boot_id = NULL, next_attempt_at = ? "
                "WHERE state = ? AND (boot_id IS NULL OR boot_id != ?)",
                (EventState.PENDING.value, now, EventState.RUNNING.value, boot_id),
            )
            return cur.rowcount

    def release(self, boot_id: str, now: float) -> int:
        """At a clean stop: this server's RUNNING events go back to PENDING, their attempts `interrupted`."""
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE async_attempts SET outcome = 'interrupted', finished_at = ? "
                "WHERE finished_at IS NULL AND boot_id = ?",
                (now, boot_id),
            )
            cur = conn.execute(
                "UPDATE async_events SET state = ?, boot_id = NULL, next_attempt_at = ? "
                "WHERE state = ? AND boot_id = ?",
                (EventState.PENDING.value, now, EventState.RUNNING.value, boot_id),
            )
            return cur.rowcount

    def claim_due(self, boot_id: str, now: float, limit: int) -> tuple[list[QueuedEvent], float | None]:
        """Mark up to `limit` due events RUNNING for `boot_id`, opening an attempt for each.

        Due events are taken in turns across (function, tenant) pairs, oldest first within each, so a
        tenant with thousands of queued events does not hold back another tenant's one event. Also
        returns when the next PENDING event falls due (None when nothing is pending).
        """
        claimed: list[QueuedEvent] = []
        with self.db.transaction() as conn:
            if limit > 0:
                rows = conn.execute(
                    "SELECT * FROM (SELECT rowid AS seq, *, ROW_NUMBER() OVER "
                    "(PARTITION BY function_name, tenant_id ORDER BY next_attempt_at, rowid) AS turn "
                    "FROM async_events WHERE state = ? AND next_attempt_at <= ?) "
                    "ORDER BY turn, next_attempt_at, seq LIMIT ?",
                    (EventState.PENDING.value, now, limit),
                ).fetchall()
                for row in rows:
                    conn.execute(
                        "UPDATE async_events SET state = ?, boot_id = ? WHERE request_id = ?",
                        (EventState.RUNNING.value, boot_id, row["request_id"]),
                    )
                    cur = conn.execute(
                        "INSERT INTO async_attempts (request_id, boot_id, started_at) VALUES (?, ?, ?)",
                        (row["request_id"], boot_id, now),
                    )
                    ev = _event(row, cur.lastrowid)
                    claimed.append(replace(ev, state=EventState.RUNNING, boot_id=boot_id))
            nxt = conn.execute(
                "SELECT MIN(next_attempt_at) FROM async_events WHERE state = ?", (EventState.PENDING.value,)
            ).fetchone()[0]
        return claimed, None if nxt is None else float(nxt)

    def settle(self, boot_id: str, now: float, s: Settlement) -> bool:
        """Close an attempt and move its event on, in one transaction. False when the event is no
        longer this server's (it was released), and then nothing changes."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT state, boot_id FROM async_events WHERE request_id = ?", (s.request_id,)
            ).fetchone()
            if row is None or row["state"] != EventState.RUNNING.value or row["boot_id"] != boot_id:
                return False
            conn.execute(
                "UPDATE async_attempts SET finished_at = ?, outcome = ?, detail = ? WHERE id = ?",
                (now, s.outcome, s.detail, s.attempt_id),
            )
            destination_id = None
            if s.destination is not None:
                _insert(conn, s.destination)
                destination_id = s.destination.request_id
            final = s.state in FINAL_STATES
            conn.execute(
                "UPDATE async_events SET state = ?, boot_id = NULL, runs = runs + ?, throttles = throttles + ?, "
                "next_attempt_at = COALESCE(?, next_attempt_at), condition = COALESCE(?, condition), "
                "finished_at = ?, function_error = CASE WHEN ? THEN ? ELSE function_error END, "
                "response = CASE WHEN ? THEN ? ELSE response END, "
                "executed_version = COALESCE(?, executed_version), destination_id = ? WHERE request_id = ?",
                (
                    s.state.value,
                    1 if s.ran else 0,
                    0 if s.ran or s.outcome not in DEFERRALS else 1,
                    s.next_attempt_at,
                    s.condition,
                    now if final else None,
                    1 if s.ran else 0,
                    s.function_error,
                    1 if s.ran else 0,
                    s.response,
                    s.executed_version,
                    destination_id,
                    s.request_id,
                ),
            )
            return True

    def dead_letter_pending(self, function_name: str, now: float, condition: str) -> int:
        """Move a function's PENDING events to the dead-letter list (its function is gone)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE async_events SET state = ?, condition = ?, finished_at = ? "
                "WHERE function_name = ? AND state = ?",
                (EventState.DEAD.value, condition, now, function_name, EventState.PENDING.value),
            )
            return cur.rowcount

    def replay(self, function_name: str, request_id: str, new: NewEvent) -> QueuedEvent | None:
        """Queue a dead letter again as `new`, if it is DEAD; returns the dead letter as it was (None: no such)."""
        with self.db.transaction() as conn:
            row = conn.execute(
                _SELECT + " WHERE request_id = ? AND function_name = ?", (request_id, function_name)
            ).fetchone()
            if row is None:
                return None
            if row["state"] == EventState.DEAD.value:
                _insert(conn, new)
                conn.execute(
                    "UPDATE async_events SET state = ?, replayed_as = ? WHERE request_id = ?",
                    (EventState.REPLAYED.value, new.request_id, request_id),
                )
            return _event(row)

    def get(self, request_id: str) -> QueuedEvent | None:
        with self.db.reading() as conn:
            row = conn.execute(_SELECT + " WHERE request_id = ?", (request_id,)).fetchone()
        return None if row is None else _event(row)

    def attempts(self, request_id: str) -> list[Attempt]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT * FROM async_attempts WHERE request_id = ? ORDER BY id", (request_id,)
            ).fetchall()
        return [
            Attempt(
                id=int(r["id"]),
                request_id=r["request_id"],
                boot_id=r["boot_id"],
                started_at=float(r["started_at"]),
                finished_at=r["finished_at"],
                outcome=r["outcome"],
                detail=r["detail"],
            )
            for r in rows
        ]

    def list_events(
        self, function_name: str, states: tuple[EventState, ...], after_seq: int | None, limit: int
    ) -> list[QueuedEvent]:
        """A function's events in these states, in arrival order, after `after_seq`."""
        marks = ", ".join("?" for _ in states)
        with self.db.reading() as conn:
            rows = conn.execute(
                _SELECT + f" WHERE function_name = ? AND state IN ({marks}) AND rowid > ? ORDER BY rowid LIMIT ?",
                (function_name, *(s.value for s in states), after_seq or 0, limit),
            ).fetchall()
        return [_event(r) for r in rows]

    def counts(self) -> dict[EventState, int]:
        with self.db.reading() as conn:
            rows = conn.execute("SELECT state, COUNT(*) FROM async_events GROUP BY state").fetchall()
        return {EventState(r[0]): int(r[1]) for r in rows}

    def prune(self, finished_before: float) -> int:
        """Forget events that ended well (succeeded, handed to a destination, replayed) before a time.

        Dead letters stay until they are replayed: they are the user's to read.
        """
        with self.db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM async_events WHERE state IN (?, ?, ?) AND finished_at < ?",
                (EventState.SUCCEEDED.value, EventState.FAILED.value, EventState.REPLAYED.value, finished_before),
            )
            return cur.rowcount


@dataclass(frozen=True, slots=True)
class StoredInvokeConfig:
    """One function's (or one qualifier's) EventInvokeConfig, as the control plane validated it."""

    function_name: str
    qualifier: str
    config: dict[str, Any]
    last_modified: float


class EventInvokeConfigRepository:
    """The event_invoke_configs table: one row per (function, qualifier)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def put(self, item: StoredInvokeConfig) -> bool:
        """Insert or replace; False when the function does not exist (any more)."""
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO event_invoke_configs (function_name, qualifier, config, last_modified) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (function_name, qualifier) DO UPDATE SET "
                    "config = excluded.config, last_modified = excluded.last_modified",
                    (item.function_name, item.qualifier, json.dumps(item.config), item.last_modified),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def get(self, function_name: str, qualifier: str) -> StoredInvokeConfig | None:
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT * FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?",
                (function_name, qualifier),
            ).fetchone()
        return None if row is None else _config(row)

    def delete(self, function_name: str, qualifier: str) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute(
                "DELETE FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?",
                (function_name, qualifier),
            )
            return cur.rowcount == 1

    def list_page(self, function_name: str, after: str | None, limit: int) -> list[StoredInvokeConfig]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT * FROM event_invoke_configs WHERE function_name = ? AND qualifier > ? "
                "ORDER BY qualifier LIMIT ?",
                (function_name, after or "", limit),
            ).fetchall()
        return [_config(r) for r in rows]


def _config(row: sqlite3.Row) -> StoredInvokeConfig:
    return StoredInvokeConfig(
        function_name=row["function_name"],
        qualifier=row["qualifier"],
        config=json.loads(row["config"]),
        last_modified=float(row["last_modified"]),
    )
