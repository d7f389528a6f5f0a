"""Stems: environments initialised ahead for no tenant, bound to a new tenant's first call."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import TIME_SCALE, SiloServer, api_client, create_python_function, make_client, payload_of

SOURCE = """
import os, time
INIT_TENANT = os.environ.get("TENANT")  # init has no tenant, as on Lambda
ENVIRONMENT = os.urandom(8).hex()
count = 0
def handler(event, context):
    global count
    count += 1
    return {"env": ENVIRONMENT, "tenant": context.tenant_id, "count": count}
"""


def call(client: Any, name: str, tenant: str) -> tuple[dict[str, Any], str]:
    response = client.invoke(FunctionName=name, TenantId=tenant, LogType="Tail")
    return payload_of(response), base64.b64decode(response["LogResult"]).decode()


def wait_for_stem(server: SiloServer, name: str) -> None:
    # A stem grows in the background after a new tenant's call: wait until one is ready (a fixed second
    # was not always enough on a busy host).
    assert wait_for_stems_of(server.endpoint, name), f"no stem of {name} was ready in time"


def test_new_tenant_binds_a_stem_that_is_never_shared(
    lambda_client: Any, silo_server: SiloServer, unique_name: str
) -> None:
    create_python_function(lambda_client, unique_name, SOURCE, per_tenant=True)
    first, first_log = call(lambda_client, unique_name, "first")
    assert "Init Duration:" in first_log and "(stem)" not in first_log, "the very first call starts in full"
    wait_for_stem(silo_server, unique_name)
    second, second_log = call(lambda_client, unique_name, "second")
    assert "(stem)" in second_log, second_log
    assert second["tenant"] == "second" and second["count"] == 1
    assert second["env"] != first["env"]
    wait_for_stem(silo_server, unique_name)
    third, _ = call(lambda_client, unique_name, "third")
    assert third["env"] not in (first["env"], second["env"]), "a stem serves one tenant only"
    again, again_log = call(lambda_client, unique_name, "second")
    assert again["env"] == second["env"] and again["count"] == 2, "a bound stem stays its tenant's warm environment"
    assert "Init Duration" not in again_log


def test_a_code_update_discards_stems(lambda_client: Any, silo_server: SiloServer, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, SOURCE, per_tenant=True)
    call(lambda_client, unique_name, "a")
    wait_for_stem(silo_server, unique_name)
    from tests.support import zip_files

    lambda_client.update_function_code(
        FunctionName=unique_name, ZipFile=zip_files({"app.py": "def handler(e, c):\n    return 'v2'\n"})
    )
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=unique_name)
    out, _ = call(lambda_client, unique_name, "b")
    assert out == "v2", "a stem of the old code is never bound"


def test_init_error_without_stems_is_reported(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, "raise RuntimeError('broken init')\n", per_tenant=True)
    for tenant in ("a", "b", "c", "d"):
        response = lambda_client.invoke(FunctionName=unique_name, TenantId=tenant)
        assert response["FunctionError"] == "Unhandled"
        assert "broken init" in payload_of(response)["errorMessage"], tenant
        time.sleep(0.3)


def stems_of(endpoint: str, function: str) -> float:
    """The function's stems (growing or ready) as /metrics lists them."""
    body = api_client(endpoint).request("GET", "/metrics").body.decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        if family.name == "silo_environments"
        for sample in family.samples
        if sample.labels.get("function") == function and sample.labels.get("state") == "stem"
    )


def wait_for_stems_of(endpoint: str, function: str) -> bool:
    deadline = time.monotonic() + 20 * TIME_SCALE
    while time.monotonic() < deadline:
        if stems_of(endpoint, function) >= 1:
            return True
        time.sleep(0.1)
    return False


@pytest.fixture()
def small_budget(tmp_path: Path) -> Iterator[SiloServer]:
    """A server of the test's own with a small host memory budget."""
    server = SiloServer(tmp_path / "data", "--memory-budget-mb", "6144")
    server.start()
    yield server
    server.stop()


def test_functions_of_large_memory_size_each_keep_a_stem(small_budget: SiloServer, unique_name: str) -> None:
    # A tenth of 6,144 MiB is 614 MiB for stems. Counted at their MemorySize only the 512 MB function's
    # stem would fit, and the later functions would have none; counted at what an idle stem holds (a few
    # MiB), each function keeps one, and each one's new tenant binds it.
    client = make_client(small_budget.endpoint)
    sizes = (512, 1024, 1536, 2048)
    names = [f"{unique_name}-{mb}" for mb in sizes]
    for name, mb in zip(names, sizes, strict=True):
        create_python_function(client, name, SOURCE, per_tenant=True, MemorySize=mb)
    for name in names:
        call(client, name, "seed")
        assert wait_for_stems_of(small_budget.endpoint, name), f"{name} grew no stem: {small_budget.log()[-2000:]}"
    assert all(stems_of(small_budget.endpoint, name) >= 1 for name in names), "every function keeps its stem"
    for name in names:
        body, log = call(client, name, "newcomer")
        assert "(stem)" in log, (name, log)
        assert body["tenant"] == "newcomer" and body["count"] == 1
