"""The server's one telemetry object: what environments and the router report, and what readers ask.

Environments call `log_stream`, `environment_created` and `invocation_done`; the router calls
`throttled` and `evicted`. Each hook is O(1) in-memory work on the event loop: counters, the
per-tenant summary, and appending to the spool that writes logs and metering events in batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from silo.telemetry import logs
from silo.telemetry.events import EventStore, MeteringEvent
from silo.telemetry.metrics import EnvironmentView, Metrics
from silo.telemetry.spool import Spool
from silo.telemetry.tenants import TenantBook, TenantStats
from silo.telemetry.throttle import LogRates, TenantAllowances
from silo.types import FunctionSpec, InvocationResult


@dataclass(frozen=True, slots=True)
class TenantSummary:
    tenant_id: str | None
    stats: TenantStats
    live_environments: int


class Telemetry:
    """Logs, metrics, the per-tenant summary and metering of one server."""

    def __init__(
        self, store: EventStore | None = None, *, tenant_labels: bool = False, log_rates: LogRates = logs.DEFAULT_RATES
    ) -> None:
        self.store = store
        self.metrics = Metrics(tenant_labels)
        self.tenants = TenantBook()
        self.spool = Spool(store, on_drop=self.metrics.log_events_dropped.inc)
        self.log_allowances = TenantAllowances(log_rates)
        self.started_at = time.time()
        self._environments: Callable[[], Iterable[EnvironmentView]] = lambda: ()
        # The backend that runs functions by default, and whether each backend isolates tenants.
        self.default_backend = ""
        self.isolation: dict[str, bool] = {}

    # Wiring and lifecycle.
    def watch_environments(self, source: Callable[[], Iterable[EnvironmentView]]) -> None:
        """Where live environments are counted from, at scrape or read time (the router)."""
        self._environments = source
        self.metrics.watch_environments(source)

    def backends(self, default: str, isolates: Mapping[str, bool]) -> None:
        """The server's backends, and which isolate tenants (the router's, once it has them)."""
        self.default_backend = default
        self.isolation = dict(isolates)
        self.metrics.tenant_isolation(isolates)

    def start(self) -> None:
        self.spool.start()

    async def flush(self) -> None:
        await self.spool.flush()

    async def close(self) -> None:
        await self.spool.close()

    # Hooks of an environment.
    def log_stream(self, name: str, fd: int, spec: FunctionSpec, tenant_id: str | None) -> logs.LogStream:
        return logs.open_stream(
            name, fd, spec, tenant_id, self.spool, self.log_allowances, self.metrics.log_lines_throttled
        )

    def environment_created(self, environment_id: str, spec: FunctionSpec, tenant_id: str | None) -> None:
        self.metrics.environment_created(spec.function_name, tenant_id)
        if tenant_id is not None:
            self.spool.meter(
                MeteringEvent(
                    spec.function_name,
                    spec.version,
                    tenant_id,
                    environment_id,
                    spec.memory_mb,
                    int(time.time() * 1000),
                )
            )

    def invocation_done(self, spec: FunctionSpec, tenant_id: str | None, result: InvocationResult) -> None:
        failed = result.function_error is not None
        self.metrics.invocation(
            spec.function_name, tenant_id, result.duration_ms, failed, result.cold_start, result.init_duration_ms
        )
        self.tenants.invocation(
            spec.function_name, tenant_id, result.duration_ms, failed, result.cold_start, int(time.time() * 1000)
        )

    def platform_error(self, function: str, cause: str) -> None:
        """silo failed a call of `function` itself (`cause`: environment, or tenant_isolation for a check)."""
        self.metrics.platform_error(function, cause)

    # Hooks of the router.
    def throttled(self, function: str, reason: str, tenant_id: str | None = None) -> None:
        """A call was refused by a limit (`reason` as in TooManyRequestsException's Reason)."""
        self.metrics.throttled(function, reason, tenant_id)
        self.tenants.throttled(function, tenant_id, int(time.time() * 1000))

    def evicted(self, function: str, reason: str) -> None:
        """An idle environment was killed to make room (`reason`: which cap needed the room)."""
        self.metrics.evicted(function, reason)

    # Readers.
    def _live(self, function: str) -> dict[str | None, int]:
        live: dict[str | None, int] = {}
        for env in self._environments():
            if env.function == function and env.state not in ("dead", "stem"):
                live[env.tenant_id] = live.get(env.tenant_id, 0) + 1
        return live

    def tenant_summaries(self, function: str) -> list[TenantSummary]:
        """Every tenant of the function seen since start or with a live environment, by tenant id."""
        stats = self.tenants.tenants(function)
        live = self._live(function)
        out = [
            TenantSummary(tenant, stats.get(tenant) or TenantStats(), live.get(tenant, 0))
            for tenant in set(stats) | set(live)
        ]
        out.sort(key=lambda s: s.tenant_id or "")
        return out

    def tenant_summary(self, function: str, tenant_id: str | None) -> TenantSummary | None:
        stats = self.tenants.get(function, tenant_id)
        live = self._live(function).get(tenant_id, 0)
        if stats is None and not live:
            return None
        return TenantSummary(tenant_id, stats or TenantStats(), live)
