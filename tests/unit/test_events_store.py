"""The durable queue: claims, attempts, settling, recovery after a crash, replay and pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from silo.store.db import open_database
from silo.store.events import EventQueue, EventState, NewEvent, Settlement


@pytest.fixture()
def queue(tmp_path: Path) -> EventQueue:
    return EventQueue(open_database(tmp_path / "silo.db"))


def new(request_id: str, function: str = "f", tenant: str | None = None, at: float = 0.0) -> NewEvent:
    return NewEvent(request_id, function, None, tenant, b'{"x":1}', at)


def test_a_claim_marks_running_and_opens_an_attempt(queue: EventQueue) -> None:
    queue.enqueue(new("a", at=1.0))
    queue.enqueue(new("b", at=5.0))
    claimed, next_due = queue.claim_due("boot", 2.0, 10)
    assert [e.request_id for e in claimed] == ["a"]
    assert claimed[0].state is EventState.RUNNING and claimed[0].attempt_id is not None
    assert next_due == 5.0
    stored = queue.get("a")
    assert stored is not None and stored.state is EventState.RUNNING and stored.boot_id == "boot"
    [attempt] = queue.attempts("a")
    assert (attempt.boot_id, attempt.outcome, attempt.finished_at) == ("boot", None, None)
    assert queue.claim_due("boot", 2.0, 10)[0] == [], "a running event is not claimed twice"


def test_claims_take_tenants_in_turn(queue: EventQueue) -> None:
    for i in range(5):
        queue.enqueue(new(f"loud-{i}", tenant="loud", at=float(i)))
    queue.enqueue(new("quiet", tenant="quiet", at=10.0))
    claimed, _ = queue.claim_due("boot", 20.0, 2)
    assert [e.request_id for e in claimed] == ["loud-0", "quiet"]


def test_settling_a_retry_and_then_a_success(queue: EventQueue) -> None:
    queue.enqueue(new("a"))
    [ev], _ = queue.claim_due("boot", 1.0, 1)
    assert ev.attempt_id is not None
    retry = Settlement(
        "a",
        ev.attempt_id,
        "error",
        "ValueError",
        True,
        EventState.PENDING,
        3.0,
        response=b"e",
        function_error="Unhandled",
        executed_version="$LATEST",
    )
    assert queue.settle("boot", 2.0, retry)
    again = queue.get("a")
    assert again is not None
    assert (again.state, again.runs, again.next_attempt_at, again.function_error) == (
        EventState.PENDING,
        1,
        3.0,
        "Unhandled",
    )
    [ev], _ = queue.claim_due("boot", 3.0, 1)
    assert ev.attempt_id is not None
    throttled = Settlement("a", ev.attempt_id, "throttled", "Reason", False, EventState.PENDING, 4.0)
    assert queue.settle("boot", 3.5, throttled)
    kept = queue.get("a")
    assert kept is not None and (kept.runs, kept.throttles, kept.response) == (1, 1, b"e")
    [ev], _ = queue.claim_due("boot", 4.0, 1)
    assert ev.attempt_id is not None
    done = Settlement(
        "a", ev.attempt_id, "success", None, True, EventState.SUCCEEDED, condition="Success", response=b"ok"
    )
    assert queue.settle("boot", 5.0, done)
    final = queue.get("a")
    assert final is not None
    assert (final.state, final.runs, final.finished_at, final.response, final.function_error) == (
        EventState.SUCCEEDED,
        2,
        5.0,
        b"ok",
        None,
    )
    assert [a.outcome for a in queue.attempts("a")] == ["error", "throttled", "success"]
    assert queue.claim_due("boot", 100.0, 10)[0] == [], "a completed event is never claimed again"


def test_a_final_settlement_queues_the_destination_record_in_the_same_step(queue: EventQueue) -> None:
    queue.enqueue(new("a"))
    [ev], _ = queue.claim_due("boot", 1.0, 1)
    assert ev.attempt_id is not None
    record = NewEvent("rec", "dest", None, None, b"{}", 2.0)
    queue.settle(
        "boot",
        2.0,
        Settlement(
            "a", ev.attempt_id, "error", None, True, EventState.FAILED, condition="RetriesExhausted", destination=record
        ),
    )
    source, delivered = queue.get("a"), queue.get("rec")
    assert source is not None and source.destination_id == "rec" and source.state is EventState.FAILED
    assert delivered is not None and delivered.state is EventState.PENDING and delivered.function_name == "dest"


def test_recovery_after_a_crash_reruns_in_flight_events_only(tmp_path: Path) -> None:
    path = tmp_path / "silo.db"
    old = EventQueue(open_database(path))
    for rid in ("done", "flying", "waiting"):
        old.enqueue(new(rid))
    claimed, _ = old.claim_due("old-boot", 1.0, 2)
    done = next(e for e in claimed if e.request_id == "done")
    assert done.attempt_id is not None
    old.settle("old-boot", 2.0, Settlement("done", done.attempt_id, "success", None, True, EventState.SUCCEEDED))
    old.db.close()  # the process dies here with "flying" in flight

    queue = EventQueue(open_database(path))
    assert queue.recover("new-boot", 10.0) == 1
    flying = queue.get("flying")
    assert flying is not None and flying.state is EventState.PENDING and flying.runs == 0
    assert [a.outcome for a in queue.attempts("flying")] == ["interrupted"]
    # A task of the old server that settles late changes nothing.
    assert not queue.settle("old-boot", 11.0, Settlement("flying", 2, "success", None, True, EventState.SUCCEEDED))
    claimed, _ = queue.claim_due("new-boot", 10.0, 10)
    assert sorted(e.request_id for e in claimed) == ["flying", "waiting"]


def test_release_at_a_clean_stop(queue: EventQueue) -> None:
    queue.enqueue(new("a"))
    queue.claim_due("boot", 1.0, 1)
    assert queue.release("boot", 2.0) == 1
    ev = queue.get("a")
    assert ev is not None and ev.state is EventState.PENDING


def test_replay_and_prune(queue: EventQueue) -> None:
    queue.enqueue(new("a"))
    queue.enqueue(new("b"))
    assert queue.dead_letter_pending("f", 1.0, "FunctionDeleted") == 2
    assert [e.request_id for e in queue.list_events("f", (EventState.DEAD,), None, 10)] == ["a", "b"]
    before = queue.replay("f", "a", NewEvent("a2", "f", None, None, b"{}", 2.0, replay_of="a"))
    assert before is not None and before.state is EventState.DEAD
    again = queue.replay("f", "a", NewEvent("a3", "f", None, None, b"{}", 3.0, replay_of="a"))
    assert again is not None and again.state is EventState.REPLAYED and again.replayed_as == "a2"
    assert queue.get("a3") is None
    assert queue.replay("other", "b", NewEvent("b2", "other", None, None, b"{}", 3.0)) is None
    assert queue.prune(10.0) == 1, "the replayed one goes; dead letters stay"
    assert queue.get("a") is None and queue.get("b") is not None
