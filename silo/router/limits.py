"""Limits on invocations and environments, as pure decisions over counts.

Lambda's: account concurrency, reserved concurrency per function, and for tenant-isolated functions
at most 2.5 environments (idle or busy) per unit of the function's concurrency. silo's own: per-tenant
caps on concurrent invocations and on environments, and a host memory budget for all live
environments. The router keeps the counts and calls these functions; they decide, it acts.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

TENANT_ENVIRONMENTS_PER_CONCURRENCY = 2.5
# Of the host's memory budget, what one tenant's busy environments of a function may hold when the
# function sets no TenantMaxConcurrency: sleeping calls of one tenant cannot hold the whole budget.
TENANT_MEMORY_SHARE = 0.25


class Reason(enum.Enum):
    """Why a call was throttled: Lambda's ThrottleReason values, then silo's own."""

    ACCOUNT = "ConcurrentInvocationLimitExceeded"
    RESERVED = "ReservedFunctionConcurrentInvocationLimitExceeded"
    TENANT_CONCURRENCY = "TenantConcurrentInvocationLimitExceeded"
    TENANT_ENVIRONMENTS = "TenantEnvironmentLimitExceeded"
    MEMORY = "HostMemoryBudgetExceeded"


MESSAGES = {
    Reason.ACCOUNT: "Rate Exceeded.",
    Reason.RESERVED: "Rate Exceeded.",
    Reason.TENANT_CONCURRENCY: "Rate Exceeded: this tenant already runs as many invocations of the function as "
    "its TenantMaxConcurrency allows (unset, as many as a quarter of the host's memory budget holds at the "
    "function's MemorySize). Retry with backoff, or set the limit in the function's silo settings.",
    Reason.TENANT_ENVIRONMENTS: "Rate exceeded: this tenant has as many environments of the function as its "
    "TenantMaxEnvironments allows and all are busy. Retry with backoff, or raise the limit.",
    Reason.MEMORY: "Rate exceeded: the host's memory budget for environments is used by busy environments. "
    "Retry with backoff, or raise silo's memory budget.",
}
ENVIRONMENT_CAP_MESSAGE = (
    "Rate exceeded: the function has as many tenant-isolated environments (idle or busy) as its concurrency "
    "allows (2.5 per unit of concurrency) and none is idle. Retry with backoff and jitter, lower the rate of "
    "new tenant ids, or raise the function's concurrency."
)


@dataclass(frozen=True, slots=True)
class AccountLimits:
    concurrency: int = 1000
    memory_budget_mb: int = 16384
    tenant_memory_share: float = TENANT_MEMORY_SHARE

    def default_tenant_concurrency(self, memory_mb: int) -> int:
        """A tenant's concurrency when its function sets none: its share of the memory budget, in environments."""
        return max(1, math.floor(self.memory_budget_mb * self.tenant_memory_share / memory_mb))


def cpu_divisor(running: int) -> int:
    """By how much each busy environment of a tenant divides its CPU weight when the tenant runs `running`
    calls of the function at once: the environments share one tenant's weight, so scaling out does not
    buy a tenant more of a contended CPU. Rounded up to a power of two, so that the weights are rewritten
    only when the count crosses one (1, 2, 4, 8, ...), not on every call that starts or ends."""
    return 1 if running <= 1 else 1 << (running - 1).bit_length()


@dataclass(frozen=True, slots=True)
class FunctionLimits:
    """What one function allows: its reserved concurrency, and silo's per-tenant caps (None: no cap)."""

    reserved: int | None = None
    tenant_concurrency: int | None = None
    tenant_environments: int | None = None


@dataclass(slots=True)
class Counts:
    """In-flight invocations and live environments, as the router keeps them."""

    running_unreserved: int = 0
    reserved_total: int = 0  # sum of all functions' reserved concurrency


def admit(
    limits: FunctionLimits,
    account: AccountLimits,
    counts: Counts,
    function_running: int,
    tenant_running: int,
) -> Reason | None:
    """May one more invocation start now? None: yes; else why not.

    ACCOUNT means the shared (unreserved) pool is full: the router may let the call wait its turn.
    """
    if limits.tenant_concurrency is not None and tenant_running >= limits.tenant_concurrency:
        return Reason.TENANT_CONCURRENCY
    if limits.reserved is not None:
        return Reason.RESERVED if function_running >= limits.reserved else None
    if counts.running_unreserved >= account.concurrency - counts.reserved_total:
        return Reason.ACCOUNT
    return None


def function_concurrency(limits: FunctionLimits, account: AccountLimits, reserved_total: int) -> int:
    """The concurrency a function can reach: its reservation, else the account's unreserved pool."""
    if limits.reserved is not None:
        return limits.reserved
    return account.concurrency - reserved_total


def environment_cap(limits: FunctionLimits, account: AccountLimits, reserved_total: int) -> int:
    """Live environments a tenant-isolated function may have: 2,500 per 1,000 concurrency, as on Lambda."""
    return math.floor(TENANT_ENVIRONMENTS_PER_CONCURRENCY * function_concurrency(limits, account, reserved_total))


class Scope(enum.Enum):
    """Which idle environments may be evicted to make room for a new one."""

    TENANT = "tenant"
    FUNCTION = "function"
    HOST = "host"


def room_for_environment(
    limits: FunctionLimits,
    account: AccountLimits,
    reserved_total: int,
    per_tenant: bool,
    tenant_environments: int,
    function_environments: int,
    live_memory_mb: float,
    memory_mb: int,
) -> tuple[Scope, ...]:
    """Which caps a new environment would break; each must be relieved by evicting an idle environment there."""
    needed: list[Scope] = []
    if limits.tenant_environments is not None and tenant_environments >= limits.tenant_environments:
        needed.append(Scope.TENANT)
    if per_tenant and function_environments >= environment_cap(limits, account, reserved_total):
        needed.append(Scope.FUNCTION)
    if live_memory_mb + memory_mb > account.memory_budget_mb:
        needed.append(Scope.HOST)
    return tuple(needed)
