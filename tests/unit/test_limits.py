from __future__ import annotations

import asyncio

from silo.router import limits
from silo.router.fairness import FairQueue

ACCOUNT = limits.AccountLimits(concurrency=10, memory_budget_mb=1024)


def test_admit_checks_tenant_then_reserved_then_the_shared_pool() -> None:
    counts = limits.Counts(running_unreserved=0, reserved_total=0)
    assert limits.admit(limits.FunctionLimits(), ACCOUNT, counts, 0, 0) is None
    capped = limits.FunctionLimits(tenant_concurrency=2)
    assert limits.admit(capped, ACCOUNT, counts, 5, 2) is limits.Reason.TENANT_CONCURRENCY
    assert limits.admit(capped, ACCOUNT, counts, 5, 1) is None
    reserved = limits.FunctionLimits(reserved=3)
    assert limits.admit(reserved, ACCOUNT, counts, 3, 0) is limits.Reason.RESERVED
    assert limits.admit(limits.FunctionLimits(reserved=0), ACCOUNT, counts, 0, 0) is limits.Reason.RESERVED
    # A reserved function is not held back by a full shared pool.
    full = limits.Counts(running_unreserved=7, reserved_total=3)
    assert limits.admit(reserved, ACCOUNT, full, 2, 0) is None
    assert limits.admit(limits.FunctionLimits(), ACCOUNT, full, 0, 0) is limits.Reason.ACCOUNT


def test_environment_cap_is_two_and_a_half_per_unit_of_concurrency() -> None:
    assert limits.environment_cap(limits.FunctionLimits(reserved=2), ACCOUNT, 2) == 5
    assert limits.environment_cap(limits.FunctionLimits(), limits.AccountLimits(1000), 0) == 2500
    assert limits.environment_cap(limits.FunctionLimits(), limits.AccountLimits(1000), 400) == 1500


def test_room_names_every_cap_a_new_environment_would_break() -> None:
    fl = limits.FunctionLimits(reserved=2, tenant_environments=1)
    assert limits.room_for_environment(fl, ACCOUNT, 2, True, 0, 0, 0, 128) == ()
    assert limits.room_for_environment(fl, ACCOUNT, 2, True, 1, 5, 1000, 128) == (
        limits.Scope.TENANT,
        limits.Scope.FUNCTION,
        limits.Scope.HOST,
    )
    # The 2.5x cap applies to tenant-isolated functions only.
    assert limits.room_for_environment(limits.FunctionLimits(reserved=2), ACCOUNT, 2, False, 0, 50, 0, 128) == ()


def test_fair_queue_takes_tenants_in_turn() -> None:
    async def main() -> list[str]:
        queue = FairQueue()
        order: list[str] = []
        waiters = [(t, queue.push(t)) for t in ["flood"] * 5 + ["a", "b", "flood", "a"]]
        waiters[1][1].cancel()  # a waiter that gave up is skipped
        while (w := queue.pop()) is not None:
            order.append(next(t for t, f in waiters if f is w))
        return order

    assert asyncio.run(main()) == ["flood", "a", "b", "flood", "a", "flood", "flood", "flood"]
