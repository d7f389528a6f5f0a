"""Per-(function, tenant) summary of calls: counts, errors, cold starts, duration quantiles, last seen.

Kept in memory, since the server started, for any number of tenants; updating it costs a few dict
operations per call. Durations go into a log-bucket histogram of 8 buckets per doubling, so a
quantile is reported as the geometric middle of its bucket: within about 4.5% of the true value
(relative), whatever the spread, in a few hundred bytes per tenant. A function keeps at most
`max_tenants` tenants; past that the least recently seen is forgotten.

Not persisted: durable questions (what did tenant X do, what does it cost) are answered by the
logs and the metering events, which are. The summary says since when it counts.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from silo.types import ColdStart

BUCKETS_PER_DOUBLING = 8
_SMALLEST_MS = 0.001
MAX_TENANTS_PER_FUNCTION = 100_000
# The worst relative error of a reported quantile: half a bucket, in log space.
QUANTILE_RELATIVE_ERROR = 2 ** (1 / (2 * BUCKETS_PER_DOUBLING)) - 1


class DurationHistogram:
    """Counts of durations in buckets [2^(i/8), 2^((i+1)/8)) ms, kept sparse."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0

    def add(self, ms: float) -> None:
        i = math.floor(math.log2(max(ms, _SMALLEST_MS)) * BUCKETS_PER_DOUBLING)
        self.counts[i] = self.counts.get(i, 0) + 1
        self.total += 1

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 < q <= 1) in ms, or None when nothing was recorded."""
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return float(2 ** ((i + 0.5) / BUCKETS_PER_DOUBLING))
        return None  # pragma: no cover - the counts sum to total


@dataclass(slots=True)
class TenantStats:
    calls: int = 0
    errors: int = 0
    throttles: int = 0
    cold_starts: dict[str, int] = field(default_factory=dict)
    durations: DurationHistogram = field(default_factory=DurationHistogram)
    first_seen_ms: int = 0
    last_seen_ms: int = 0


class TenantBook:
    """The summaries, per function then per tenant (None for a function without tenant isolation)."""

    def __init__(self, max_tenants: int = MAX_TENANTS_PER_FUNCTION) -> None:
        self.max_tenants = max_tenants
        self._functions: dict[str, OrderedDict[str | None, TenantStats]] = {}

    def _stats(self, function: str, tenant_id: str | None, now_ms: int) -> TenantStats:
        tenants = self._functions.get(function)
        if tenants is None:
            tenants = self._functions[function] = OrderedDict()
        stats = tenants.get(tenant_id)
        if stats is None:
            stats = tenants[tenant_id] = TenantStats(first_seen_ms=now_ms)
            if len(tenants) > self.max_tenants:
                tenants.popitem(last=False)
        else:
            tenants.move_to_end(tenant_id)
        stats.last_seen_ms = now_ms
        return stats

    def invocation(
        self,
        function: str,
        tenant_id: str | None,
        duration_ms: float,
        failed: bool,
        cold_start: ColdStart,
        now_ms: int,
    ) -> None:
        stats = self._stats(function, tenant_id, now_ms)
        stats.calls += 1
        if failed:
            stats.errors += 1
        if cold_start is not ColdStart.WARM:
            stats.cold_starts[cold_start.value] = stats.cold_starts.get(cold_start.value, 0) + 1
        stats.durations.add(duration_ms)

    def throttled(self, function: str, tenant_id: str | None, now_ms: int) -> None:
        self._stats(function, tenant_id, now_ms).throttles += 1

    def tenants(self, function: str) -> dict[str | None, TenantStats]:
        """The function's tenants (a copy of the index, so a reader may take its time)."""
        return dict(self._functions.get(function, {}))

    def get(self, function: str, tenant_id: str | None) -> TenantStats | None:
        tenants = self._functions.get(function)
        return None if tenants is None else tenants.get(tenant_id)
