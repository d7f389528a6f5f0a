"""Placement decisions: which environment serves an invocation. Pure functions over plain data.

The router calls these without awaiting in between, so on the event loop a decision and its
bookkeeping happen as one step; the slow parts (starting a process) run after the decision.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Pooled(Protocol):
    """What placement needs to know of an environment."""

    def is_idle(self) -> bool: ...

    @property
    def revision_id(self) -> str: ...


class Choice(enum.Enum):
    REUSE = "reuse"
    START = "start"


@dataclass(frozen=True, slots=True)
class Placement:
    choice: Choice
    index: int = -1
    stale: tuple[int, ...] = ()


def place(pool: Sequence[Pooled], revision_id: str) -> Placement:
    """Reuse the most recently used idle environment of the key that runs the current revision; else start one.

    Idle environments of an older revision are returned in `stale` for retirement: they can never
    be used again, since a function's code or configuration changed under them.
    """
    stale: list[int] = []
    chosen = -1
    for i in range(len(pool) - 1, -1, -1):
        env = pool[i]
        if not env.is_idle():
            continue
        if env.revision_id != revision_id:
            stale.append(i)
        elif chosen < 0:
            chosen = i
    if chosen >= 0:
        return Placement(Choice.REUSE, chosen, tuple(stale))
    return Placement(Choice.START, -1, tuple(stale))
