"""Limits through boto3: reserved concurrency, silo's per-tenant caps, the 2.5x environment cap,
the host memory budget, idle reaping and fair sharing of a saturated host."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import SiloServer, create_python_function, make_client, payload_of, signed_request

COUNTER = """
import os, time
count = 0
held = []
ENVIRONMENT = os.urandom(8).hex()
def handler(event, context):
    global count
    count += 1
    if event.get("hold_mb"):
        held.append(bytearray(os.urandom(1 << 20)) * event["hold_mb"])
    time.sleep(event.get("sleep", 0))
    return {"count": count, "env": ENVIRONMENT, "tenant": context.tenant_id}
"""


def invoke(client: Any, name: str, tenant: str, sleep: float = 0, hold_mb: int = 0) -> dict[str, Any]:
    payload = json.dumps({"sleep": sleep, "hold_mb": hold_mb}).encode()
    out: dict[str, Any] = payload_of(client.invoke(FunctionName=name, TenantId=tenant, Payload=payload))
    return out


def throttle_reason(exc: ClientError) -> tuple[str, str | None, str | None]:
    response = exc.response
    return (
        response["Error"]["Code"],
        response.get("Reason"),
        response["ResponseMetadata"]["HTTPHeaders"].get("retry-after"),
    )


def settings(server: SiloServer, name: str, **values: Any) -> dict[str, Any]:
    request = signed_request(
        server.endpoint, f"/silo/v1/functions/{name}/settings", data=json.dumps(values).encode(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        out: dict[str, Any] = json.loads(reply.read())
    return out


def concurrently(calls: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except ClientError as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_reserved_concurrency_api(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    assert lambda_client.get_function_concurrency(FunctionName=unique_name).get("ReservedConcurrentExecutions") is None
    before = lambda_client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"]
    assert (
        lambda_client.put_function_concurrency(FunctionName=unique_name, ReservedConcurrentExecutions=5)[
            "ReservedConcurrentExecutions"
        ]
        == 5
    )
    assert lambda_client.get_function_concurrency(FunctionName=unique_name)["ReservedConcurrentExecutions"] == 5
    assert lambda_client.get_function(FunctionName=unique_name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    assert lambda_client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == before - 5
    with pytest.raises(ClientError) as too_much:
        lambda_client.put_function_concurrency(FunctionName=unique_name, ReservedConcurrentExecutions=before)
    assert too_much.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "below its minimum value of [100]" in too_much.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as qualified:
        lambda_client.put_function_concurrency(FunctionName=unique_name + ":1", ReservedConcurrentExecutions=1)
    assert qualified.value.response["Error"]["Code"] == "InvalidParameterValueException"
    lambda_client.delete_function_concurrency(FunctionName=unique_name)
    assert "Concurrency" not in lambda_client.get_function(FunctionName=unique_name)
    assert lambda_client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == before


def test_reserved_zero_and_one_throttle(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    lambda_client.put_function_concurrency(FunctionName=unique_name, ReservedConcurrentExecutions=0)
    with pytest.raises(ClientError) as blocked:
        invoke(lambda_client, unique_name, "a")
    code, reason, retry_after = throttle_reason(blocked.value)
    assert (code, reason) == ("TooManyRequestsException", "ReservedFunctionConcurrentInvocationLimitExceeded")
    assert blocked.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert retry_after is not None and int(retry_after) >= 1
    lambda_client.put_function_concurrency(FunctionName=unique_name, ReservedConcurrentExecutions=1)
    results = concurrently([lambda t=t: invoke(lambda_client, unique_name, t, sleep=1.0) for t in ("a", "b", "c")])
    throttled = [r for r in results if isinstance(r, ClientError)]
    assert len(throttled) == 2 and len(results) - len(throttled) == 1, results
    assert {throttle_reason(r)[1] for r in throttled} == {"ReservedFunctionConcurrentInvocationLimitExceeded"}


def test_one_tenant_over_its_share_is_the_only_one_throttled(
    lambda_client: Any, unique_name: str, silo_server: SiloServer
) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    assert settings(silo_server, unique_name, TenantMaxConcurrency=2)["TenantMaxConcurrency"] == 2
    calls = [lambda: invoke(lambda_client, unique_name, "flood", sleep=1.0) for _ in range(6)]
    calls += [lambda t=t: invoke(lambda_client, unique_name, t, sleep=0.2) for t in ("q1", "q2", "q3")]
    results = concurrently(calls)
    flood, quiet = results[:6], results[6:]
    assert all(not isinstance(r, ClientError) for r in quiet), quiet
    throttled = [r for r in flood if isinstance(r, ClientError)]
    assert len(throttled) == 4, flood
    assert {throttle_reason(r)[1] for r in throttled} == {"TenantConcurrentInvocationLimitExceeded"}


def test_tenant_environment_cap_reuses_then_throttles(
    lambda_client: Any, unique_name: str, silo_server: SiloServer
) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    settings(silo_server, unique_name, TenantMaxEnvironments=1)
    results = concurrently([lambda: invoke(lambda_client, unique_name, "solo", sleep=1.0) for _ in range(2)])
    throttled = [r for r in results if isinstance(r, ClientError)]
    assert len(throttled) == 1, results
    assert throttle_reason(throttled[0])[1] == "TenantEnvironmentLimitExceeded"
    assert invoke(lambda_client, unique_name, "solo")["count"] == 2, "its one environment stays warm"


def test_environment_cap_evicts_least_recently_used_idle(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    # Reserved concurrency 2 allows 5 tenant environments (2.5 per unit).
    lambda_client.put_function_concurrency(FunctionName=unique_name, ReservedConcurrentExecutions=2)
    first = {t: invoke(lambda_client, unique_name, t)["env"] for t in ("t0", "t1", "t2", "t3", "t4")}
    assert invoke(lambda_client, unique_name, "t0")["count"] == 2, "t0 is now the most recently used"
    invoke(lambda_client, unique_name, "t5")  # needs room: t1, least recently used, is evicted
    assert invoke(lambda_client, unique_name, "t0")["count"] == 3
    again = invoke(lambda_client, unique_name, "t1")
    assert again["count"] == 1 and again["env"] != first["t1"], "t1 got a fresh environment"


@pytest.fixture()
def own_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SiloServer]:
    """A server of the test's own, started with the flags given as the fixture's parameter."""
    server = SiloServer(tmp_path / "data", *request.param)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("own_server", [("--memory-budget-mb", "384", "--keep-alive-s", "2")], indirect=True)
def test_memory_budget_and_keep_alive(own_server: SiloServer, unique_name: str) -> None:
    client = make_client(own_server.endpoint)
    create_python_function(client, unique_name, COUNTER, per_tenant=True, MemorySize=128)

    # Busy environments count at their MemorySize, idle ones at what they hold. Each of these keeps
    # 60 MB: three idle ones (about 200 MB) and a busy fourth (128 MB) fit in 384 MB; a fifth does not,
    # and the least recently used idle environment makes room.
    envs = {t: invoke(client, unique_name, t, hold_mb=60)["env"] for t in ("m0", "m1", "m2", "m3")}
    invoke(client, unique_name, "m4", hold_mb=60)
    assert invoke(client, unique_name, "m3")["env"] == envs["m3"], "recently used: kept"
    assert invoke(client, unique_name, "m0")["env"] != envs["m0"], "least recently used: evicted to make room"
    # Three busy environments fill the budget; a fourth call finds nothing idle to evict.
    busy = concurrently([lambda t=t: invoke(client, unique_name, t, sleep=1.5) for t in ("b0", "b1", "b2", "b3")])
    throttled = [r for r in busy if isinstance(r, ClientError)]
    assert [throttle_reason(r)[1] for r in throttled] == ["HostMemoryBudgetExceeded"], busy

    # Keep-alive: an environment idle for longer than 2 s is gone.
    warm = invoke(client, unique_name, "k")
    time.sleep(4)
    assert invoke(client, unique_name, "k")["env"] != warm["env"]


@pytest.mark.parametrize("own_server", [("--account-concurrency", "4", "--queue-wait-ms", "30000")], indirect=True)
def test_saturated_host_is_shared_fairly(own_server: SiloServer, unique_name: str) -> None:
    # The account runs 4 calls at once; one tenant floods, three quiet tenants call one after another.
    client = make_client(own_server.endpoint)
    fair = unique_name
    create_python_function(client, fair, COUNTER, per_tenant=True, MemorySize=128)
    done: list[str] = []
    lock = threading.Lock()

    def call(tenant: str) -> None:
        invoke(client, fair, tenant, sleep=0.3)
        with lock:
            done.append(tenant)

    def quiet(tenant: str) -> None:
        time.sleep(0.5)  # arrive after the flood has queued
        for _ in range(3):
            call(tenant)

    calls = [lambda: call("flood") for _ in range(24)] + [lambda t=t: quiet(t) for t in ("q1", "q2", "q3")]
    results = concurrently(calls)
    assert all(r is None for r in results), results
    assert len(done) == 24 + 9
    # Served first come, first served, the quiet tenants would finish after the whole flood.
    last_quiet = max(i for i, t in enumerate(done) if t != "flood")
    assert done[last_quiet + 1 :].count("flood") >= 5, f"quiet tenants were served in turn, not last: {done}"
