"""Stems: environments of a tenant-isolated function version that have finished Lambda's init phase
(the runtime is up and the handler imported; init has no tenant, as on Lambda) but belong to nobody.

A new tenant's first call binds a stem instead of paying a cold start; a stem is never shared and
never returns to the pool. The pool of each function version is sized to the recent rate of new
tenants of that function times how long a stem takes to grow, within a share of the host memory
budget, and refilled in the background. This module keeps the stems and decides how many to grow;
the router grows, binds and kills them.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from silo.types import EnvState

# How far back new tenants count towards the rate the pool is sized for.
RATE_WINDOW_S = 10.0
# Headroom over rate x grow time, so a burst does not drain the pool before refills arrive.
HEADROOM = 1.5
# A stem that fails its init this many times in a row stops the pool of that version: the next call's
# own start then reports the init error, as Lambda does.
MAX_FAILURES = 3


class Growing(Protocol):
    """What the pool needs to know of an environment."""

    state: EnvState

    @property
    def revision_id(self) -> str: ...


StemKey = tuple[str, str, str]  # function ARN, version, revision


@dataclass
class VersionPool:
    stems: list[Growing] = field(default_factory=list)
    failures: int = 0


@dataclass
class StemPolicy:
    """Sizing: at least one stem once a function has had a new tenant, at most `per_function`, and all
    stems together within `memory_share` of the host memory budget."""

    per_function: int = 8
    memory_share: float = 0.1


class StemPools:
    def __init__(self, policy: StemPolicy | None = None) -> None:
        self.policy = policy or StemPolicy()
        self._pools: dict[StemKey, VersionPool] = {}
        self._arrivals: dict[str, deque[float]] = {}
        self._grow_s: dict[str, float] = {}
        self.memory_mb = 0

    def pool(self, key: StemKey) -> VersionPool:
        return self._pools.setdefault(key, VersionPool())

    def all(self) -> list[Growing]:
        return [stem for pool in self._pools.values() for stem in pool.stems]

    def take(self, key: StemKey) -> Growing | None:
        """A stem for a new tenant: a ready one first, else one still growing (its init is under way)."""
        pool = self._pools.get(key)
        if pool is None or not pool.stems:
            return None
        ready = [s for s in pool.stems if s.state is EnvState.STEM]
        stem = ready[0] if ready else pool.stems[0]
        pool.stems.remove(stem)
        return stem

    def add(self, key: StemKey, stem: Growing, memory_mb: int) -> None:
        self.pool(key).stems.append(stem)
        self.memory_mb += memory_mb

    def discard(self, stem: Growing, memory_mb: int) -> bool:
        for pool in self._pools.values():
            if stem in pool.stems:
                pool.stems.remove(stem)
                self.memory_mb -= memory_mb
                return True
        return False

    def bound(self, memory_mb: int) -> None:
        """A taken stem now counts as its tenant's environment, not as a stem."""
        self.memory_mb -= memory_mb

    def new_tenant(self, function_arn: str, now: float | None = None) -> None:
        self._arrivals.setdefault(function_arn, deque()).append(time.monotonic() if now is None else now)

    def grew(self, function_arn: str, seconds: float, ok: bool, key: StemKey) -> None:
        """A stem finished growing: learn how long it takes; count failures in a row."""
        pool = self.pool(key)
        if ok:
            pool.failures = 0
            previous = self._grow_s.get(function_arn, seconds)
            self._grow_s[function_arn] = 0.7 * previous + 0.3 * seconds
        else:
            pool.failures += 1

    def of_function(self, function_arn: str, version: str | None = None) -> list[Growing]:
        """Every stem of the function (of one version, when given), of any revision."""
        return [
            stem
            for key, pool in self._pools.items()
            if key[0] == function_arn and version in (None, key[1])
            for stem in pool.stems
        ]

    def wanted(self, key: StemKey, memory_mb: int, budget_mb: int, now: float | None = None) -> int:
        """How many more stems to grow for `key` now."""
        pool = self.pool(key)
        if pool.failures >= MAX_FAILURES or self.policy.per_function <= 0:
            return 0
        now = time.monotonic() if now is None else now
        arrivals = self._arrivals.get(key[0])
        if not arrivals:
            return 0
        while arrivals and now - arrivals[0] > RATE_WINDOW_S:
            arrivals.popleft()
        rate = len(arrivals) / RATE_WINDOW_S
        grow_s = self._grow_s.get(key[0], 0.2)
        target = min(self.policy.per_function, max(1, math.ceil(rate * grow_s * HEADROOM)))
        room = int((budget_mb * self.policy.memory_share - self.memory_mb) // max(1, memory_mb))
        return max(0, min(target - len(pool.stems), room))
