"""A failure of the platform while starting an environment is silo's error to the caller (ServiceException,
500), never the function's `Runtime.InvalidEntrypoint`; the daemon logs the failing step, and the async
dispatcher runs such an event again without using one of its attempts. The router and the dispatcher run
here over a backend that breaks on demand (tests/fake_sandbox.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from silo import errors
from silo.control.event_config import AsyncPolicy
from silo.events.dispatcher import Dispatcher, DispatchSettings
from silo.router.pool import Router
from silo.router.stems import StemPolicy
from silo.store.db import open_database
from silo.store.events import EventQueue, EventState
from silo.telemetry.recorder import Telemetry
from silo.types import EnvKey, FunctionError, FunctionSpec, Invocation, InvocationResult
from tests.fake_sandbox import BrokenHost
from tests.support import function_spec
from tests.unit.test_events_dispatcher import Functions, Policies

APP = "def handler(event, context):\n    return {'tenant': context.tenant_id}\n"


def deployed(tmp_path: Path, **changes: object) -> FunctionSpec:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "app.py").write_text(APP)
    return replace(function_spec("f"), code_dir=code, **changes)  # type: ignore[arg-type]


def router_over(sandbox: object, telemetry: Telemetry | None = None) -> Router:
    # No stems: every call's environment is started for it, by the call.
    return Router(sandbox, stems=StemPolicy(per_function=0), telemetry=telemetry)  # type: ignore[arg-type]


async def call(router: Router, spec: FunctionSpec, tenant: str = "a", request_id: str = "r1") -> InvocationResult:
    inv = Invocation(request_id, b"{}", tenant, spec.function_arn)
    return await router.invoke(EnvKey(spec.function_arn, spec.version, tenant), spec, inv)


def metric(telemetry: Telemetry, name: str, **labels: str) -> float:
    return telemetry.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_cgroup_failure_at_launch_reaches_the_caller_as_a_service_exception(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = deployed(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "bootstrap").write_text("#!/nonexistent/interpreter\n")
    (bad / "bootstrap").chmod(0o755)
    custom = replace(
        spec, function_name="g", function_arn=spec.function_arn[:-1] + "g", runtime="provided.al2023", code_dir=bad
    )
    host = BrokenHost(tmp_path / "envs")
    telemetry = Telemetry()

    async def main() -> None:
        router = router_over(host, telemetry)
        try:
            with pytest.raises(errors.ServiceException) as failed:
                await call(router, spec)
            assert isinstance(failed.value, errors.PlatformError)
            assert failed.value.status == 500 and failed.value.body()["Type"] == "Service"
            assert "the function did not run" in failed.value.message
            assert "/sys/fs/cgroup" not in failed.value.message, "the host's paths stay in the daemon's log"
            assert list(router.environments()) == [], "the half-built environment is gone"
            # Once the host heals, the same router serves the call.
            host.failing = None
            result = await call(router, spec, request_id="r2")
            assert result.function_error is None and json.loads(result.payload) == {"tenant": "a"}
            # A function whose own runtime cannot start is still the function's error.
            unstartable = await call(router, custom, request_id="r3")
            assert unstartable.function_error is FunctionError.UNHANDLED
            assert json.loads(unstartable.payload)["errorType"] == "Runtime.InvalidEntrypoint"
        finally:
            await router.close()

    asyncio.run(main())
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("join cgroups" in line and "No space left on device" in line for line in logged), logged
    assert metric(telemetry, "silo_platform_errors_total", function="f", cause="environment") == 1
    assert metric(telemetry, "silo_function_errors_total", function="f") == 0, "not the function's error"
    assert metric(telemetry, "silo_platform_errors_total", function="g", cause="environment") == 0
    assert metric(telemetry, "silo_function_errors_total", function="g") == 1


def test_an_async_event_keeps_its_attempts_through_platform_failures(tmp_path: Path) -> None:
    spec = deployed(tmp_path)
    host = BrokenHost(tmp_path / "envs")
    queue = EventQueue(open_database(tmp_path / "silo.db"))
    # No retry at all: an event that lost an attempt to the platform would be given up at once.
    policies = Policies(f=AsyncPolicy(max_retries=0))

    async def main() -> None:
        router = router_over(host)
        dispatcher = Dispatcher(
            queue, Functions(spec), policies, router, DispatchSettings(max_in_flight=4, retry_base_s=0.01, poll_s=0.05)
        )
        dispatcher.start()
        try:
            await dispatcher.accept(request_id="r1", function_name="f", qualifier=None, tenant_id="a", payload=b"{}")
            while host.launches < 3:
                await asyncio.sleep(0.01)
            host.failing = None  # the host heals; the event has all its attempts left
            while (ev := await asyncio.to_thread(queue.get, "r1")) is None or ev.state is not EventState.SUCCEEDED:
                assert ev is None or ev.state in (EventState.PENDING, EventState.RUNNING), ev
                await asyncio.sleep(0.01)
        finally:
            await dispatcher.stop()
            await router.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    ev = queue.get("r1")
    assert ev is not None and ev.runs == 1 and ev.throttles >= 3, ev
    outcomes = [a.outcome for a in queue.attempts("r1")]
    assert outcomes[-1] == "success" and set(outcomes[:-1]) == {"unavailable"}, outcomes
