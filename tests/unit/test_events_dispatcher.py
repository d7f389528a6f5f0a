"""The dispatcher against a fake router and a real queue: retries, throttles, destinations, stops."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from silo import errors
from silo.control.event_config import AsyncPolicy
from silo.events.dispatcher import Dispatcher, DispatchSettings
from silo.store.db import open_database
from silo.store.events import EventQueue, EventState
from silo.types import EnvKey, FunctionError, FunctionSpec, Invocation, InvocationResult
from tests.support import function_spec

ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


def spec(name: str, per_tenant: bool = True) -> FunctionSpec:
    return function_spec(name, per_tenant)


class Functions:
    def __init__(self, *specs: FunctionSpec) -> None:
        self.specs = {s.function_name: s for s in specs}

    def resolve(self, function_name: str, qualifier: str | None, tenant_id: str | None = None) -> FunctionSpec:
        name = function_name.rsplit(":", 1)[-1] if function_name.startswith("arn:") else function_name
        if name not in self.specs:
            raise errors.ResourceNotFoundException(f"Function not found: {ARN}{name}")
        return self.specs[name]


class Policies:
    def __init__(self, **by_function: AsyncPolicy) -> None:
        self.by_function = by_function

    def policy(self, function_name: str, qualifier: str | None) -> AsyncPolicy:
        return self.by_function.get(function_name, AsyncPolicy())


Behaviour = Callable[[EnvKey, Invocation], Awaitable[InvocationResult]]


class Router:
    """Records every call; `behaviour` decides its outcome."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.calls: list[tuple[EnvKey, Invocation]] = []

    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult:
        self.calls.append((key, inv))
        return await self.behaviour(key, inv)


async def ok(key: EnvKey, inv: Invocation) -> InvocationResult:
    return InvocationResult(json.dumps({"tenant": key.tenant_id}).encode())


async def fail(key: EnvKey, inv: Invocation) -> InvocationResult:
    return InvocationResult(b'{"errorType":"ValueError","errorMessage":"no"}', FunctionError.UNHANDLED)


def run(
    queue: EventQueue,
    functions: Functions,
    policies: Policies,
    router: Router,
    scenario: Callable[[Dispatcher], Awaitable[None]],
) -> None:
    async def main() -> None:
        dispatcher = Dispatcher(
            queue, functions, policies, router, DispatchSettings(max_in_flight=4, retry_base_s=0.01, poll_s=0.05)
        )
        dispatcher.start()
        try:
            await asyncio.wait_for(scenario(dispatcher), 20)
        finally:
            await dispatcher.stop()

    asyncio.run(main())


async def settled(queue: EventQueue, request_id: str, *states: EventState) -> None:
    while (ev := await asyncio.to_thread(queue.get, request_id)) is None or ev.state not in states:
        await asyncio.sleep(0.01)


@pytest.fixture()
def queue(tmp_path: Path) -> EventQueue:
    return EventQueue(open_database(tmp_path / "silo.db"))


def test_an_event_runs_once_in_its_tenants_key_with_its_request_id(queue: EventQueue) -> None:
    router = Router(ok)

    async def scenario(d: Dispatcher) -> None:
        await d.accept(request_id="r1", function_name="f", qualifier=None, tenant_id="blue", payload=b"{}")
        await settled(queue, "r1", EventState.SUCCEEDED)

    run(queue, Functions(spec("f")), Policies(), router, scenario)
    [(key, inv)] = router.calls
    assert key == EnvKey(ARN + "f", "$LATEST", "blue")
    assert (inv.request_id, inv.tenant_id) == ("r1", "blue")


def test_errors_are_retried_with_the_same_request_id_and_tenant(queue: EventQueue) -> None:
    router = Router(fail)

    async def scenario(d: Dispatcher) -> None:
        await d.accept(request_id="r1", function_name="f", qualifier=None, tenant_id="blue", payload=b"{}")
        await settled(queue, "r1", EventState.DEAD)

    run(queue, Functions(spec("f")), Policies(), router, scenario)
    assert [(k.tenant_id, i.request_id) for k, i in router.calls] == [("blue", "r1")] * 3
    ev = queue.get("r1")
    assert ev is not None and (ev.runs, ev.condition) == (3, "RetriesExhausted")


def test_throttles_use_no_retry_attempt(queue: EventQueue) -> None:
    refusals = 5

    async def throttled_then_ok(key: EnvKey, inv: Invocation) -> InvocationResult:
        if len(router.calls) <= refusals:
            raise errors.TooManyRequestsException("Rate Exceeded.", "ReservedFunctionConcurrentInvocationLimitExceeded")
        return await ok(key, inv)

    router = Router(throttled_then_ok)

    async def scenario(d: Dispatcher) -> None:
        await d.accept(request_id="r1", function_name="f", qualifier=None, tenant_id="t", payload=b"{}")
        await settled(queue, "r1", EventState.SUCCEEDED)

    run(queue, Functions(spec("f")), Policies(f=AsyncPolicy(max_retries=0)), router, scenario)
    ev = queue.get("r1")
    assert ev is not None and (ev.runs, ev.throttles) == (1, refusals)


def test_a_final_failure_goes_to_the_destination_with_the_tenant_in_the_record(queue: EventQueue) -> None:
    async def by_function(key: EnvKey, inv: Invocation) -> InvocationResult:
        return await (fail(key, inv) if key.function_arn.endswith(":f") else ok(key, inv))

    router = Router(by_function)
    policies = Policies(f=AsyncPolicy(max_retries=0, on_failure=ARN + "dest"))

    async def scenario(d: Dispatcher) -> None:
        await d.accept(request_id="r1", function_name="f", qualifier=None, tenant_id="blue", payload=b'{"a":1}')
        await settled(queue, "r1", EventState.FAILED)
        ev = await asyncio.to_thread(queue.get, "r1")
        assert ev is not None and ev.destination_id is not None
        await settled(queue, ev.destination_id, EventState.SUCCEEDED)

    run(queue, Functions(spec("f"), spec("dest", per_tenant=False)), policies, router, scenario)
    dest_key, dest_inv = router.calls[-1]
    assert dest_key.tenant_id is None, "a destination without tenant isolation runs without a tenant"
    record = json.loads(dest_inv.payload)
    assert record["requestContext"]["tenantId"] == "blue"
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestPayload"] == {"a": 1}


def test_a_missing_function_makes_a_dead_letter_without_a_run(queue: EventQueue) -> None:
    router = Router(ok)

    async def scenario(d: Dispatcher) -> None:
        await d.accept(request_id="r1", function_name="gone", qualifier=None, tenant_id=None, payload=b"{}")
        await settled(queue, "r1", EventState.DEAD)

    run(queue, Functions(), Policies(), router, scenario)
    ev = queue.get("r1")
    assert router.calls == [] and ev is not None and (ev.condition, ev.runs) == ("FunctionDeleted", 0)


def test_stopping_puts_events_in_flight_back_in_the_queue(queue: EventQueue) -> None:
    started = asyncio.Event()

    async def hang(key: EnvKey, inv: Invocation) -> InvocationResult:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def scenario(d: Dispatcher) -> None:
        await d.accept(request_id="r1", function_name="f", qualifier=None, tenant_id="t", payload=b"{}")
        await started.wait()

    run(queue, Functions(spec("f")), Policies(), Router(hang), scenario)
    ev = queue.get("r1")
    assert ev is not None and ev.state is EventState.PENDING and ev.runs == 0
    assert [a.outcome for a in queue.attempts("r1")] == ["interrupted"]


def test_replay_queues_a_dead_letter_as_a_new_event(queue: EventQueue) -> None:
    router = Router(fail)

    async def scenario(d: Dispatcher) -> None:
        await d.accept(request_id="r1", function_name="f", qualifier=None, tenant_id="t", payload=b"{}")
        await settled(queue, "r1", EventState.DEAD)
        router.behaviour = ok
        new = await d.replay("f", "r1")
        await settled(queue, new, EventState.SUCCEEDED)
        with pytest.raises(errors.ResourceConflictException):
            await d.replay("f", "r1")
        with pytest.raises(errors.ResourceNotFoundException):
            await d.replay("other", "r1")

    run(queue, Functions(spec("f")), Policies(f=AsyncPolicy(max_retries=0)), router, scenario)
