"""Stems: environments of a tenant-isolated function version that have finished Lambda's init phase
(the runtime is up and the handler imported; init has no tenant, as on Lambda) but belong to nobody.

A new tenant's first call binds a stem instead of paying a cold start; a stem is never shared and
never returns to the pool. All stems together get a share of the host memory budget, counted at what
an idle stem measurably holds (not at its MemorySize, which it may use only once it is bound and
charged in full), and that share is divided among the versions that have new tenants, by their recent
rate of new tenants: each such version first gets one stem, while the share holds one, then the rest
goes where new tenants arrive fastest. A version whose new tenants stop gives its stems back.

This module keeps the stems and decides (`plan`, a pure function over `Demand`s) how many each version
should have; the router grows, binds and kills them.
"""

from __future__ import annotations

import heapq
import math
import os
import time
from collections import deque
from collections.abc import Sequence
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
# How long a stem takes to grow, until one of the version has been timed.
UNTIMED_GROW_S = 0.2
# What a stem counts for in the stems' share until one of its version has been measured: more than an
# idle environment of silo's Python runtime holds with a heavy import done (4 MiB bare; about 18 MiB
# with numpy, 20-40 MiB with thousands of functions compiled at import), never more than its MemorySize.
UNMEASURED_MB = 64.0


class Growing(Protocol):
    """What the pool needs to know of an environment."""

    state: EnvState

    @property
    def revision_id(self) -> str: ...


StemKey = tuple[str, str, str]  # function ARN, version, revision
VersionKey = tuple[str, str]  # function ARN, version


@dataclass(frozen=True, slots=True)
class Demand:
    """One function version's claim on the stems' share, as plain data."""

    key: StemKey
    rate: float  # new tenants a second, over the last RATE_WINDOW_S
    last_new_tenant: float  # when its last new tenant came (monotonic seconds)
    grow_s: float  # how long one of its stems takes to grow
    stem_mb: float  # what one of its stems is counted at
    stems: int  # how many it has now, growing or ready
    stopped: bool = False  # its inits keep failing


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now: how many stems each version should have, which to grow first (a version's first
    stem before anyone's second), and how many each version gives back."""

    targets: dict[StemKey, int]
    grow: list[StemKey]
    give_back: dict[StemKey, int]


@dataclass(frozen=True)
class StemPolicy:
    """Sizing: at most `per_function` stems per version; all stems together within `memory_share` of the
    host memory budget, counted at what they hold; a version with no new tenant for `quiet_s` gives its
    stems back; at most `growing_at_once` stems grow at a time (each takes a core while it imports)."""

    per_function: int = 8
    memory_share: float = 0.1
    quiet_s: float = 300.0
    growing_at_once: int = field(default_factory=lambda: max(2, os.cpu_count() or 1))


def wanted(demand: Demand, per_function: int) -> int:
    """Stems a version needs for its new tenants to find one: its rate times how long a stem takes to
    grow, with headroom; at least one."""
    return min(per_function, max(1, math.ceil(demand.rate * demand.grow_s * HEADROOM)))


def share_out(demands: Sequence[Demand], share_mb: float, policy: StemPolicy, now: float) -> dict[StemKey, int]:
    """How many stems each version should have, within `share_mb` together.

    Versions that had a new tenant within `quiet_s` (and whose inits do not keep failing) each get one
    first, the busiest first, while the share holds it; what is left goes one stem at a time to the
    version whose stems hold the least memory per new tenant a second, until each has what it wants or
    the share is used: the share is divided by rate, and what a version does not need goes to others."""
    targets = {d.key: 0 for d in demands}
    if policy.per_function <= 0:
        return targets
    active = sorted(
        (d for d in demands if not d.stopped and now - d.last_new_tenant <= policy.quiet_s),
        key=lambda d: (-d.rate, -d.last_new_tenant, d.key),
    )
    left = share_mb
    for d in active:
        if d.stem_mb <= left:
            targets[d.key] = 1
            left -= d.stem_mb
    want = {d.key: wanted(d, policy.per_function) for d in active}
    # (memory its stems hold per unit of rate, order among equals, demand)
    queue = [(d.stem_mb / d.rate, i, d) for i, d in enumerate(active) if d.rate > 0 and targets[d.key] == 1]
    heapq.heapify(queue)
    while queue:
        _, i, d = heapq.heappop(queue)
        if targets[d.key] >= want[d.key] or d.stem_mb > left:
            continue  # satisfied, or the share cannot hold another of its size now or later
        targets[d.key] += 1
        left -= d.stem_mb
        heapq.heappush(queue, (targets[d.key] * d.stem_mb / d.rate, i, d))
    return targets


def plan(demands: Sequence[Demand], share_mb: float, policy: StemPolicy, now: float) -> Plan:
    """The targets of `share_out`, and the stems to grow and give back to reach them."""
    targets = share_out(demands, share_mb, policy, now)
    by_rate = sorted(demands, key=lambda d: (-d.rate, -d.last_new_tenant, d.key))
    grow: list[StemKey] = []
    for level in range(max(targets.values(), default=0)):
        grow.extend(d.key for d in by_rate if d.stems <= level < targets[d.key])
    give_back = {d.key: d.stems - targets[d.key] for d in demands if d.stems > targets[d.key]}
    return Plan(targets, grow, give_back)


@dataclass
class VersionPool:
    """The stems of one function version, and what the pool has learnt of them."""

    revision: str
    memory_mb: int  # the version's MemorySize
    stems: list[Growing] = field(default_factory=list)
    arrivals: deque[float] = field(default_factory=deque)
    last_new_tenant: float = -math.inf
    failures: int = 0
    grow_s: float | None = None
    measured_mb: float | None = None  # what its latest stem held once its init was done

    def stem_mb(self) -> float:
        """What one stem is counted at: the latest measured, else an estimate; never zero."""
        if self.measured_mb is not None:
            return max(self.measured_mb, 1.0)
        return float(min(self.memory_mb, UNMEASURED_MB))


class StemPools:
    def __init__(self, policy: StemPolicy | None = None) -> None:
        self.policy = policy or StemPolicy()
        self._pools: dict[VersionKey, VersionPool] = {}

    def _pool(self, key: StemKey) -> VersionPool | None:
        pool = self._pools.get((key[0], key[1]))
        return pool if pool is not None and pool.revision == key[2] else None

    def all(self) -> list[Growing]:
        return [stem for pool in self._pools.values() for stem in pool.stems]

    def new_tenant(self, key: StemKey, memory_mb: int, now: float | None = None) -> list[Growing]:
        """A new tenant of `key`'s version arrived. Returns the stems of the version's other revisions
        (its code changed): of no further use, for the router to kill."""
        now = time.monotonic() if now is None else now
        pool = self._pools.get((key[0], key[1]))
        stale: list[Growing] = []
        if pool is None or pool.revision != key[2] or pool.memory_mb != memory_mb:
            if pool is not None:
                stale = pool.stems
            pool = self._pools[(key[0], key[1])] = VersionPool(key[2], memory_mb)
        pool.arrivals.append(now)
        pool.last_new_tenant = now
        return stale

    def take(self, key: StemKey) -> Growing | None:
        """A stem for a new tenant: a ready one first, else one still growing (its init is under way)."""
        pool = self._pool(key)
        if pool is None or not pool.stems:
            return None
        ready = [s for s in pool.stems if s.state is EnvState.STEM]
        stem = ready[0] if ready else pool.stems[0]
        pool.stems.remove(stem)
        return stem

    def add(self, key: StemKey, stem: Growing) -> bool:
        """A stem grown (or put back) for `key`; False if the version has moved on to other code."""
        pool = self._pool(key)
        if pool is None:
            return False
        pool.stems.append(stem)
        return True

    def discard(self, stem: Growing) -> bool:
        for pool in self._pools.values():
            if stem in pool.stems:
                pool.stems.remove(stem)
                return True
        return False

    def grew(self, key: StemKey, seconds: float, ok: bool, held_mb: float | None = None) -> None:
        """A stem finished growing: learn how long it takes and what it holds; count failures in a row."""
        pool = self._pool(key)
        if pool is None:
            return
        if ok:
            pool.failures = 0
            previous = seconds if pool.grow_s is None else pool.grow_s
            pool.grow_s = 0.7 * previous + 0.3 * seconds
            if held_mb is not None:
                pool.measured_mb = held_mb
        else:
            pool.failures += 1

    def of_function(self, function_arn: str, version: str | None = None) -> list[Growing]:
        """Every stem of the function (of one version, when given)."""
        return [
            stem
            for (arn, v), pool in self._pools.items()
            if arn == function_arn and version in (None, v)
            for stem in pool.stems
        ]

    def forget(self, function_arn: str, version: str | None = None) -> None:
        """The function (or one version) changed or is gone: drop what was learnt of it; its stems must
        have been killed (see `of_function`)."""
        for vk in [vk for vk in self._pools if vk[0] == function_arn and version in (None, vk[1])]:
            del self._pools[vk]

    def demands(self, now: float) -> list[Demand]:
        """Every version's claim on the share now. A version quiet for longer than `quiet_s` that has given
        its stems back is forgotten."""
        out = []
        for (arn, version), pool in list(self._pools.items()):
            if not pool.stems and now - pool.last_new_tenant > self.policy.quiet_s:
                del self._pools[(arn, version)]
                continue
            while pool.arrivals and now - pool.arrivals[0] > RATE_WINDOW_S:
                pool.arrivals.popleft()
            out.append(
                Demand(
                    key=(arn, version, pool.revision),
                    rate=len(pool.arrivals) / RATE_WINDOW_S,
                    last_new_tenant=pool.last_new_tenant,
                    grow_s=UNTIMED_GROW_S if pool.grow_s is None else pool.grow_s,
                    stem_mb=pool.stem_mb(),
                    stems=len(pool.stems),
                    stopped=pool.failures >= MAX_FAILURES,
                )
            )
        return out

    def plan(self, budget_mb: float, now: float | None = None) -> Plan:
        """What to grow and give back now, with the stems' share of a host memory budget of `budget_mb`."""
        now = time.monotonic() if now is None else now
        return plan(self.demands(now), budget_mb * self.policy.memory_share, self.policy, now)

    def surplus(self, key: StemKey, count: int) -> list[Growing]:
        """`count` stems of `key` to give back: those still growing first, then the newest ready ones."""
        pool = self._pool(key)
        if pool is None:
            return []
        growing = [s for s in pool.stems if s.state is not EnvState.STEM]
        ready = [s for s in pool.stems if s.state is EnvState.STEM]
        return (growing + ready[::-1])[:count]
