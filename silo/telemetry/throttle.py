"""How much output an environment, and a tenant of a function together, may send to the log store.

Output is tenant code's to choose, so it is metered like any shared resource: token buckets of bytes
and of lines, one per environment and one per tenant of a function (shared by that tenant's
environments, so scaling out does not multiply the allowance). Output past either is read and
dropped, and counted; the stream says so in the log itself with one marker line ("N lines dropped"),
as Lambda's log throttling does. A bucket may go below zero by one read's worth: a read is taken or
dropped whole, and what was taken beyond the allowance is paid back before the next one is taken.

All the environments of the host together have an allowance too, `host_factor` times one's: every
line kept costs the store's writer thread about 15 µs, and the thread shares the interpreter with the
event loop, so the sum of many tenants' allowances must not take the daemon from everyone.

The defaults are far above what a function logs to be read by a person (1 MiB and 1,000 lines a
second, sustained, per environment, after a burst of 8 MiB or 10,000 lines; 20,000 lines a second for
the host), and far below what a tight loop of `print` writes (hundreds of megabytes a second), which
would otherwise fill the store and take the writer thread from every other tenant. (At 5,000 lines a
second per environment, four flooding tenants halved the throughput of a thousand polite ones.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LogRates:
    """The allowance of one environment; a tenant of a function gets `tenant_factor` times it in all."""

    bytes_per_s: float = 1024 * 1024
    burst_bytes: float = 8 * 1024 * 1024
    lines_per_s: float = 1_000
    burst_lines: float = 10_000
    tenant_factor: float = 4
    host_factor: float = 20

    def scaled(self, factor: float) -> LogRates:
        return LogRates(
            self.bytes_per_s * factor,
            self.burst_bytes * factor,
            self.lines_per_s * factor,
            self.burst_lines * factor,
            1,
            1,
        )

    def describe(self) -> str:
        return f"{_size(self.bytes_per_s)}/s or {self.lines_per_s:,.0f} lines/s"


def _size(n: float) -> str:
    return f"{n / (1024 * 1024):g} MiB" if n >= 1024 * 1024 else f"{n / 1024:g} KiB"


class Allowance:
    """Two token buckets, bytes and lines, refilled at their rates up to their bursts."""

    __slots__ = ("_bytes", "_lines", "_stamp", "rates")

    def __init__(self, rates: LogRates, now: float) -> None:
        self.rates = rates
        self._bytes = rates.burst_bytes
        self._lines = rates.burst_lines
        self._stamp = now

    def _refill(self, now: float) -> None:
        elapsed = now - self._stamp
        if elapsed > 0:
            rates = self.rates
            self._bytes = min(rates.burst_bytes, self._bytes + elapsed * rates.bytes_per_s)
            self._lines = min(rates.burst_lines, self._lines + elapsed * rates.lines_per_s)
            self._stamp = now

    def has_room(self, now: float) -> bool:
        self._refill(now)
        return self._bytes > 0 and self._lines > 0

    def spend(self, nbytes: int, nlines: int) -> None:
        self._bytes -= nbytes
        self._lines -= nlines


class TenantAllowances:
    """The shared allowance of each tenant of each function, kept while one of its streams is open, and the
    host's, shared by every stream."""

    def __init__(self, rates: LogRates, now: float = 0.0) -> None:
        self.rates = rates
        self.host = Allowance(rates.scaled(rates.host_factor), now)
        self._shared: dict[tuple[str, str | None], tuple[Allowance, int]] = {}

    def acquire(self, function: str, tenant_id: str | None, now: float) -> Allowance:
        key = (function, tenant_id)
        held = self._shared.get(key)
        if held is None:
            allowance = Allowance(self.rates.scaled(self.rates.tenant_factor), now)
            self._shared[key] = (allowance, 1)
            return allowance
        self._shared[key] = (held[0], held[1] + 1)
        return held[0]

    def release(self, function: str, tenant_id: str | None) -> None:
        key = (function, tenant_id)
        held = self._shared.get(key)
        if held is None:
            return
        if held[1] <= 1:
            del self._shared[key]
        else:
            self._shared[key] = (held[0], held[1] - 1)

    def __len__(self) -> int:
        return len(self._shared)
