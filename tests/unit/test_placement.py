from __future__ import annotations

from dataclasses import dataclass

from silo.router.placement import Choice, place


@dataclass
class Env:
    idle: bool
    revision_id: str = "r1"

    def is_idle(self) -> bool:
        return self.idle


def test_empty_pool_starts_an_environment() -> None:
    assert place([], "r1").choice is Choice.START


def test_reuses_the_most_recently_released_idle_environment() -> None:
    pool = [Env(True), Env(False), Env(True)]
    decision = place(pool, "r1")
    assert (decision.choice, decision.index) == (Choice.REUSE, 2)


def test_busy_environments_are_never_chosen() -> None:
    assert place([Env(False), Env(False)], "r1").choice is Choice.START


def test_idle_environments_of_an_old_revision_are_stale_not_reused() -> None:
    pool = [Env(True, "r0"), Env(False, "r0"), Env(True, "r0")]
    decision = place(pool, "r1")
    assert decision.choice is Choice.START
    assert sorted(decision.stale) == [0, 2]
