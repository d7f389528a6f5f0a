"""An environment never changes tenant. Handed a call of another tenant, or bound again once bound, it is
ended and the call fails loudly (ServiceException, an ERROR naming both tenants), before any code of the
function sees the call."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from silo import errors
from silo.router.environment import Environment, TenantMismatch
from silo.router.pool import Router
from silo.router.stems import StemPolicy
from silo.sandbox.process import ProcessSandbox
from silo.telemetry.recorder import Telemetry
from silo.types import EnvKey, EnvState, FunctionSpec, Invocation
from tests.support import function_spec

# The handler leaves a mark for every call it runs, so a test can tell it never saw the refused one (in its
# code directory: the development backend gives each environment a private /tmp, where the test's are).
APP = """
import os
def handler(event, context):
    open(os.path.join(os.environ["MARKS"], context.aws_request_id), "w").write(context.tenant_id)
    return {"tenant": context.tenant_id}
"""


def deployed(tmp_path: Path) -> FunctionSpec:
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text(APP)
    marks = code / "marks"
    marks.mkdir()
    return replace(function_spec("f"), code_dir=code, environment={"MARKS": str(marks)})


def key(spec: FunctionSpec, tenant: str | None) -> EnvKey:
    return EnvKey(spec.function_arn, spec.version, tenant)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]


def test_an_environment_handed_another_tenants_call_is_ended_and_the_call_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = deployed(tmp_path)
    telemetry = Telemetry()

    async def main() -> None:
        env = Environment(key(spec, "tenant-a"), spec, telemetry)
        await env.start(ProcessSandbox(tmp_path / "envs"))
        try:
            served = await env.invoke(Invocation("r-a", b"{}", "tenant-a", spec.function_arn))
            assert json.loads(served.payload) == {"tenant": "tenant-a"}
            with pytest.raises(errors.ServiceException) as refused:
                await env.invoke(Invocation("r-b", b"{}", "tenant-b", spec.function_arn))
            assert isinstance(refused.value, TenantMismatch)
            assert "tenant-a" not in refused.value.message, "the caller is not told whose environment it was"
            assert env.state is EnvState.DEAD and not env.alive
        finally:
            await env.close()

    asyncio.run(main())
    assert sorted(p.name for p in (tmp_path / "code" / "marks").iterdir()) == ["r-a"], "the handler never saw r-b"
    logged = errors_logged(caplog)
    assert any("'tenant-a'" in line and "'tenant-b'" in line and "r-b" in line for line in logged), logged
    sample = telemetry.metrics.registry.get_sample_value(
        "silo_platform_errors_total", {"function": "f", "cause": "tenant_isolation"}
    )
    assert sample == 1


def test_the_router_drops_the_environment_that_was_handed_another_tenants_call(tmp_path: Path) -> None:
    spec = deployed(tmp_path)

    async def main() -> None:
        router = Router(ProcessSandbox(tmp_path / "envs"), stems=StemPolicy(per_function=0))
        try:
            inv = Invocation("r-a", b"{}", "tenant-a", spec.function_arn)
            await router.invoke(key(spec, "tenant-a"), spec, inv)
            [env] = list(router.environments())
            # A router bug of the kind the check is there for: tenant-b's call routed on tenant-a's key.
            with pytest.raises(TenantMismatch):
                await router.invoke(key(spec, "tenant-a"), spec, Invocation("r-b", b"{}", "tenant-b", inv.invoked_arn))
            assert list(router.environments()) == [] and env.retired, "the environment is gone for good"
            again = await router.invoke(
                key(spec, "tenant-a"), spec, Invocation("r-a2", b"{}", "tenant-a", inv.invoked_arn)
            )
            assert json.loads(again.payload) == {"tenant": "tenant-a"}
        finally:
            await router.close()

    asyncio.run(main())
    assert sorted(p.name for p in (tmp_path / "code" / "marks").iterdir()) == ["r-a", "r-a2"]


def test_binding_a_bound_stem_ends_it_and_fails_loudly(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        spec = function_spec("f")
        stem = Environment(key(spec, None), spec, stem=True)
        stem.bind(key(spec, "tenant-a"))
        with pytest.raises(TenantMismatch):
            stem.bind(key(spec, "tenant-b"))
        assert stem.key.tenant_id == "tenant-a", "it kept its tenant"
        assert stem.state is EnvState.DEAD

    asyncio.run(main())
    logged = errors_logged(caplog)
    assert any("'tenant-a'" in line and "'tenant-b'" in line for line in logged), logged


def test_only_an_unbound_stem_of_the_same_version_is_ever_bound() -> None:
    async def main() -> None:
        spec = function_spec("f")
        env = Environment(key(spec, "tenant-a"), spec)
        with pytest.raises(TenantMismatch):
            env.bind(key(spec, "tenant-b"))
        assert env.key.tenant_id == "tenant-a" and env.state is EnvState.DEAD
        stem = Environment(key(spec, None), spec, stem=True)
        with pytest.raises(TenantMismatch):
            stem.bind(key(replace(spec, version="2"), "tenant-a"))

    asyncio.run(main())
