"""The router's stems under a small host memory budget: counted at what they hold, each of several
functions of large MemorySize keeps one; bound, a stem is charged its whole MemorySize before it runs, or
the call is throttled and the stem stays; a version whose new tenants stop gives its stem back. Over the
development backend, its environments measured as the jail's are (tests/fake_sandbox.py)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import pytest

from silo import errors
from silo.router.environment import Environment
from silo.router.limits import AccountLimits
from silo.router.pool import Router
from silo.router.stems import StemPolicy
from silo.types import ColdStart, EnvKey, EnvState, FunctionSpec, Invocation, InvocationResult
from tests.fake_sandbox import MeasuredHost
from tests.support import function_spec

# Waits, when asked, until a file appears: a call that stays busy for as long as the test needs.
APP = """import json, os, time
def handler(event, context):
    while event.get("until") and not os.path.exists(event["until"]):
        time.sleep(0.01)
    return {"tenant": context.tenant_id}
"""


def spec_of(tmp_path: Path, name: str, memory_mb: int) -> FunctionSpec:
    code = tmp_path / f"code-{name}"
    code.mkdir(exist_ok=True)
    (code / "app.py").write_text(APP)
    spec = function_spec(name)
    return replace(spec, code_dir=code, memory_mb=memory_mb, timeout_s=60)


async def call(router: Router, spec: FunctionSpec, tenant: str, until: Path | None = None) -> InvocationResult:
    payload = b'{"until": "%s"}' % str(until).encode() if until is not None else b"{}"
    inv = Invocation(f"r-{tenant}-{time.monotonic_ns()}", payload, tenant, spec.function_arn)
    return await router.invoke(EnvKey(spec.function_arn, spec.version, tenant), spec, inv)


def stems_of(router: Router, spec: FunctionSpec) -> list[Environment]:
    return [e for e in router.environments() if e.spec.function_arn == spec.function_arn and e.is_unbound_stem()]


async def ready_stem(router: Router, spec: FunctionSpec) -> Environment:
    """The function's stem, once its init is done (its growth was asked for by a new tenant's call)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = [e for e in stems_of(router, spec) if e.state is EnvState.STEM]
        if ready:
            return ready[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"{spec.function_name} has no ready stem: {[e.state for e in router.environments()]}")


def ledger_holds(router: Router) -> None:
    """The router's running total is what its environments are charged, and within the budget."""
    charged = sum(e.charged_mb for e in router.environments())
    assert router.live_memory_mb == pytest.approx(charged)
    assert router.live_memory_mb <= router.account.memory_budget_mb


def test_each_large_function_keeps_a_stem_within_a_small_budget(tmp_path: Path) -> None:
    # A tenth of 6,144 MiB is 614 MiB: counted at MemorySize, the 512 MB function's stem alone would fit.
    specs = [spec_of(tmp_path, f"f{mb}", mb) for mb in (512, 1024, 1536, 2048)]

    async def main() -> None:
        router = Router(MeasuredHost(tmp_path / "envs"), account=AccountLimits(memory_budget_mb=6144))
        try:
            for spec in specs:
                assert (await call(router, spec, "seed")).cold_start is ColdStart.FULL
                stem = await ready_stem(router, spec)
                assert stem.charged_mb < 16, "a ready stem is charged what it holds, not its MemorySize"
                ledger_holds(router)
            assert all(stems_of(router, spec) for spec in specs), "every function keeps its stem"
            for spec in specs:
                result = await call(router, spec, "newcomer")
                assert result.cold_start is ColdStart.STEM, spec.function_name
                ledger_holds(router)
        finally:
            await router.close()

    asyncio.run(main())


def test_a_bound_stem_is_charged_its_memory_size_or_the_call_is_throttled(tmp_path: Path) -> None:
    busy, other = spec_of(tmp_path, "busy", 2048), spec_of(tmp_path, "other", 2048)
    # In a code directory: the development backend gives each environment a private /tmp, where the
    # test's own files are not seen.
    release, release_too = busy.code_dir / "release", other.code_dir / "release"

    async def main() -> None:
        router = Router(MeasuredHost(tmp_path / "envs"), account=AccountLimits(memory_budget_mb=3072))
        try:
            await call(router, other, "seed")
            stem = await ready_stem(router, other)
            holding = asyncio.ensure_future(call(router, busy, "holder", until=release))
            while not [e for e in router.environments() if e.spec is busy and e.state is EnvState.BUSY]:
                await asyncio.sleep(0.01)
            # 2,048 MiB busy: binding the stem needs 2,048 more than its few MiB, which the budget has not.
            with pytest.raises(errors.TooManyRequestsException) as throttled:
                await call(router, other, "newcomer")
            assert throttled.value.members["Reason"] == "HostMemoryBudgetExceeded"
            assert stem.is_unbound_stem() and stem in stems_of(router, other), "the stem stays a stem"
            ledger_holds(router)
            release.touch()
            await holding
            bound = asyncio.ensure_future(call(router, other, "newcomer", until=release_too))
            while stem.state is not EnvState.BUSY:
                await asyncio.sleep(0.01)
            assert stem.key.tenant_id == "newcomer"
            assert stem.charged_mb == 2048, "bound and busy, it counts at its whole MemorySize"
            ledger_holds(router)
            release_too.touch()
            assert (await bound).cold_start is ColdStart.STEM
        finally:
            release.touch()
            release_too.touch()
            await router.close()

    asyncio.run(main())


def test_a_version_whose_new_tenants_stop_gives_its_stem_back(tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "quiet", 1024)

    async def main() -> None:
        router = Router(MeasuredHost(tmp_path / "envs"), stems=StemPolicy(quiet_s=300.0))
        try:
            await call(router, spec, "seed")
            stem = await ready_stem(router, spec)
            router.tend_stems(now=time.monotonic() + 60)
            assert stems_of(router, spec) == [stem], "a minute quiet: kept"
            router.tend_stems(now=time.monotonic() + 301)
            assert stems_of(router, spec) == [] and stem.retired, "quiet for longer: given back"
            ledger_holds(router)
            router.tend_stems(now=time.monotonic() + 302)
            assert router.stems.demands(now=time.monotonic() + 303) == [], "and the version is forgotten"
        finally:
            await router.close()

    asyncio.run(main())


def test_stems_grow_a_few_at_a_time(tmp_path: Path) -> None:
    specs = [spec_of(tmp_path, f"g{i}", 512) for i in range(4)]

    async def main() -> None:
        router = Router(MeasuredHost(tmp_path / "envs"), stems=StemPolicy(growing_at_once=1))
        try:
            for spec in specs:
                await call(router, spec, "seed")
            deadline = time.monotonic() + 30
            while not all(any(e.state is EnvState.STEM for e in stems_of(router, spec)) for spec in specs):
                growing = [e for e in router.environments() if e.is_unbound_stem() and e.state is EnvState.STARTING]
                assert len(growing) <= 1, "one at a time, as the policy says"
                assert time.monotonic() < deadline, "the stems did not all grow"
                await asyncio.sleep(0.005)
        finally:
            await router.close()

    asyncio.run(main())


# Its init waits while a file named `hold` is beside it: a stem that keeps growing for as long as the test needs.
SLOW_INIT = """import os, time
while os.path.exists(os.path.join(os.path.dirname(__file__), "hold")):
    time.sleep(0.01)
def handler(event, context):
    return {"tenant": context.tenant_id}
"""


def test_a_growing_stem_is_evicted_first_for_a_call_that_needs_the_room(tmp_path: Path) -> None:
    slow, other = spec_of(tmp_path, "slow", 2048), spec_of(tmp_path, "other", 2048)
    (slow.code_dir / "app.py").write_text(SLOW_INIT)

    async def main() -> None:
        router = Router(MeasuredHost(tmp_path / "envs"), account=AccountLimits(memory_budget_mb=3072))
        try:
            await call(router, slow, "seed")  # its answer asks for a stem, whose init now waits
            (slow.code_dir / "hold").touch()
            deadline = time.monotonic() + 30
            while not [e for e in stems_of(router, slow) if e.state is EnvState.STARTING and e.alive]:
                assert time.monotonic() < deadline, "no stem grew"
                await asyncio.sleep(0.01)
            (growing,) = stems_of(router, slow)
            assert growing.charged_mb == 2048, "growing, a stem counts at its whole MemorySize"
            # 2,048 MiB more for the other function's call: only the growing stem can make room.
            result = await call(router, other, "caller")
            assert result.function_error is None and growing.retired
            assert stems_of(router, slow) == []
            ledger_holds(router)
        finally:
            (slow.code_dir / "hold").unlink(missing_ok=True)
            await router.close()

    asyncio.run(main())
