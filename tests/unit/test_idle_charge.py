"""What an idle environment is charged against the host memory budget."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from silo.router.environment import DAEMON_IDLE_MB, UNCHARGED_MB, Environment
from silo.types import EnvKey
from tests.support import function_spec

SPEC = function_spec()


class Measured:
    """A running environment as far as the charge is concerned: what its cgroup holds."""

    def __init__(self, mib: float | None) -> None:
        self.mib = mib

    def memory_mb(self) -> float | None:
        return self.mib


def idle_charges(*mibs: float | None) -> list[float]:
    async def measure() -> list[float]:
        charges = []
        for mib in mibs:
            env = Environment(EnvKey(SPEC.function_arn, SPEC.version, "t"), SPEC)
            process: Any = Measured(mib)
            env._process = process
            charges.append(env.idle_memory_mb())
        return charges

    return asyncio.run(measure())


def test_an_idle_environment_is_charged_what_it_holds_plus_what_its_cgroup_does_not_see() -> None:
    charge, large, unknown = idle_charges(2.53, 500.0, None)
    held = 2.53 + UNCHARGED_MB + DAEMON_IDLE_MB
    assert held <= charge < held + 1 / 64
    assert large == SPEC.memory_mb, "never more than MemorySize"
    assert unknown == SPEC.memory_mb, "unmeasurable: all of MemorySize"


def test_charges_add_up_exactly_however_many_come_and_go() -> None:
    rng = random.Random(7)
    charges = idle_charges(*(rng.uniform(1.0, 9.0) for _ in range(2000)))
    total = 0.0
    for charge in charges:
        total += charge
    for charge in reversed(charges[::2]):
        total -= charge
    for charge in charges[1::2]:
        total -= charge
    assert total == 0.0, "a running total of charges never drifts (they are whole 1/64 MiB)"
