"""What telemetry records and what it is asked for: log events, metering events, queries and their pages.

A leaf of the telemetry layer: the store writes and reads these, the api renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class LogEvent(NamedTuple):
    """One line of an environment's log: the runtime's output or a platform record."""

    function: str
    stream: str
    tenant_id: str | None
    request_id: str | None  # None for output written outside an invocation
    timestamp_ms: int
    message: str
    # The id of the caller key that sent the invocation, on its START line only: who ran what, per call,
    # at no cost beyond a column of a row that is written anyway.
    caller_key: str | None = None


@dataclass(frozen=True, slots=True)
class MeteringEvent:
    """A tenant environment was created: what Lambda bills in tenant isolation mode."""

    function: str
    version: str
    tenant_id: str | None
    environment_id: str
    memory_mb: int
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class LogQuery:
    """Which log events to read. Without `after_id` and `since_ms` it reads the newest `limit` events."""

    function: str
    tenant_id: str | None = None
    request_id: str | None = None
    stream: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    after_id: int | None = None
    limit: int = 100


@dataclass(slots=True)
class LogPage:
    """Events oldest first; `next_cursor` continues after the last one (or after everything stored so far)."""

    events: list[tuple[int, LogEvent]]
    next_cursor: int
    more: bool


@dataclass(frozen=True, slots=True)
class MeteringQuery:
    function: str | None = None
    tenant_id: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    after_id: int | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class MeteringTotal:
    function: str
    tenant_id: str | None
    environments: int
    memory_mb: int  # the sum of the MemorySize of the environments created


@dataclass(slots=True)
class MeteringPage:
    events: list[tuple[int, MeteringEvent]]
    next_cursor: int
    more: bool
    totals: list[MeteringTotal] = field(default_factory=list)


class EventWriter(Protocol):
    def write(self, logs: list[LogEvent], metering: list[MeteringEvent]) -> None:
        """Store a batch durably. Runs in a worker thread, never on the event loop."""
        ...


class EventStore(EventWriter, Protocol):
    """Durable home of log and metering events."""

    def read_logs(self, query: LogQuery) -> LogPage: ...

    def read_metering(self, query: MeteringQuery) -> MeteringPage: ...
