"""Prometheus metrics of the server, in a registry of their own (never the process-wide default one).

Labels are per function; with `tenant_labels` every per-call series also carries a `tenant` label
(empty for functions without tenant isolation). That multiplies the series by the number of
tenants, which is why it is off by default: the per-tenant summary of silo's API answers the same
questions for any number of tenants without burdening Prometheus.

The invocation path touches only label children cached per (function, tenant): a dict lookup and
a few increments under prometheus_client's own per-series locks.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from silo.types import ColdStart

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: from a warm call of a fraction of a millisecond to Lambda's 15-minute ceiling.
DURATION_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)  # fmt: skip
INIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class EnvironmentView(NamedTuple):
    """What the environments gauge needs to know of one live environment."""

    function: str
    tenant_id: str | None
    state: str


class _Children(NamedTuple):
    invocations: Counter
    errors: Counter
    duration: Histogram


class _EnvironmentGauge(Collector):
    """Live environments by state, counted from the router at scrape time (nothing to keep in sync)."""

    def __init__(self, tenant_labels: bool) -> None:
        self.tenant_labels = tenant_labels
        self.source: Callable[[], Iterable[EnvironmentView]] = lambda: ()

    def collect(self) -> Iterator[Metric]:
        labels = ["function", "state", "tenant"] if self.tenant_labels else ["function", "state"]
        gauge = GaugeMetricFamily("silo_environments", "Live environments by state.", labels=labels)
        counts: Tally[tuple[str, ...]] = Tally()
        for env in self.source():
            key: tuple[str, ...] = (env.function, env.state)
            if self.tenant_labels:
                key += (env.tenant_id or "",)
            counts[key] += 1
        for key, n in sorted(counts.items()):
            gauge.add_metric(list(key), n)
        yield gauge

    def describe(self) -> Iterator[Metric]:
        return iter(())


class Metrics:
    """The server's Prometheus metrics and the hooks that move them."""

    def __init__(self, tenant_labels: bool = False) -> None:
        self.tenant_labels = tenant_labels
        self.registry = CollectorRegistry()
        per_call = ["function", "tenant"] if tenant_labels else ["function"]
        r = self.registry
        self.invocations = Counter("silo_invocations", "Invocations that ran.", per_call, registry=r)
        self.errors = Counter(
            "silo_function_errors", "Invocations that ended in a function error.", per_call, registry=r
        )
        self.throttles = Counter(
            "silo_throttles", "Invocations refused by a limit, by reason.", [*per_call, "reason"], registry=r
        )
        self.duration = Histogram(
            "silo_invocation_duration_seconds",
            "Duration of invocations, init excluded.",
            per_call,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.init_duration = Histogram(
            "silo_init_duration_seconds",
            "Init duration of new environments.",
            per_call,
            buckets=INIT_BUCKETS,
            registry=r,
        )
        self.cold_starts = Counter(
            "silo_cold_starts",
            "Invocations that started a new environment, by kind (stem, fork, full).",
            [*per_call, "kind"],
            registry=r,
        )
        self.environments_created = Counter(
            "silo_environments_created", "Environments created (tenant ones are metered).", per_call, registry=r
        )
        self.evictions = Counter(
            "silo_evictions", "Idle environments evicted to make room, by reason.", ["function", "reason"], registry=r
        )
        self.log_events_dropped = Counter(
            "silo_log_events_dropped", "Log lines dropped because the log store fell behind.", registry=r
        )
        self._throttled_lines = Counter(
            "silo_log_lines_throttled",
            "Log lines dropped because an environment or a tenant wrote more than its log allowance.",
            ["function"],
            registry=r,
        )
        self.platform_errors = Counter(
            "silo_platform_errors",
            "Calls failed by silo itself, not the function (ServiceException): an environment that could not be "
            "built or kept (cause=environment), or a tenant isolation check (cause=tenant_isolation).",
            ["function", "cause"],
            registry=r,
        )
        self._isolation = Gauge(
            "silo_tenant_isolation",
            "Whether each sandbox backend of this server isolates tenants: 1, or 0 for the development backend "
            "(process), which isolates nothing.",
            ["backend"],
            registry=r,
        )
        self._environments = _EnvironmentGauge(tenant_labels)
        r.register(self._environments)
        self._children: dict[tuple[str, str | None], _Children] = {}

    def _labels(self, function: str, tenant_id: str | None) -> tuple[str, ...]:
        return (function, tenant_id or "") if self.tenant_labels else (function,)

    def _of(self, function: str, tenant_id: str | None) -> _Children:
        key = (function, tenant_id if self.tenant_labels else None)
        children = self._children.get(key)
        if children is None:
            labels = self._labels(function, tenant_id)
            children = _Children(
                self.invocations.labels(*labels), self.errors.labels(*labels), self.duration.labels(*labels)
            )
            self._children[key] = children
        return children

    def invocation(
        self,
        function: str,
        tenant_id: str | None,
        duration_ms: float,
        failed: bool,
        cold_start: ColdStart,
        init_ms: float | None,
    ) -> None:
        children = self._of(function, tenant_id)
        children.invocations.inc()
        children.duration.observe(duration_ms / 1000)
        if failed:
            children.errors.inc()
        if cold_start is not ColdStart.WARM:
            labels = self._labels(function, tenant_id)
            self.cold_starts.labels(*labels, cold_start.value).inc()
            if init_ms is not None:
                self.init_duration.labels(*labels).observe(init_ms / 1000)

    def environment_created(self, function: str, tenant_id: str | None) -> None:
        self.environments_created.labels(*self._labels(function, tenant_id)).inc()

    def throttled(self, function: str, reason: str, tenant_id: str | None = None) -> None:
        self.throttles.labels(*self._labels(function, tenant_id), reason).inc()

    def log_lines_throttled(self, function: str, lines: int) -> None:
        self._throttled_lines.labels(function).inc(lines)

    def evicted(self, function: str, reason: str) -> None:
        self.evictions.labels(function, reason).inc()

    def platform_error(self, function: str, cause: str) -> None:
        self.platform_errors.labels(function, cause).inc()

    def tenant_isolation(self, isolates: Mapping[str, bool]) -> None:
        for backend, isolated in isolates.items():
            self._isolation.labels(backend).set(1 if isolated else 0)

    def watch_environments(self, source: Callable[[], Iterable[EnvironmentView]]) -> None:
        self._environments.source = source

    def exposition(self) -> bytes:
        """Prometheus' text format. Runs on the event loop: the environments gauge reads the router."""
        return generate_latest(self.registry)
