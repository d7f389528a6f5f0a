"""Metrics, the per-tenant summary and metering against a real `silo serve`."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from silo.cli.client import ApiError
from tests.support import SiloServer, api_client, create_python_function, make_client

HANDLER = """
def handler(event, context):
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return context.tenant_id
"""


def invoke(client: Any, name: str, tenant: str | None, payload: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"FunctionName": name, "Payload": json.dumps(payload).encode()}
    if tenant is not None:
        args["TenantId"] = tenant
    response: dict[str, Any] = client.invoke(**args)
    return response


def scrape(endpoint: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Samples by metric family, as Prometheus' own parser reads them."""
    reply = api_client(endpoint).request("GET", "/metrics")
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(reply.body.decode())
    }


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    return float(
        sum(v for name, got, v in families.get(family, []) if name == sample and labels.items() <= got.items())
    )


def api(endpoint: str, path: str) -> Any:
    return api_client(endpoint).json("GET", path)


def test_metrics_count_the_calls(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, HANDLER, per_tenant=True)
    for payload in ({}, {"fail": True}, {}):
        invoke(lambda_client, unique_name, "a", payload)
    for _ in range(2):
        invoke(lambda_client, unique_name, "b", {})

    families = scrape(silo_server.endpoint)
    fn = {"function": unique_name}
    assert value(families, "silo_invocations", "silo_invocations_total", **fn) == 5
    assert value(families, "silo_function_errors", "silo_function_errors_total", **fn) == 1
    # The first tenant's environment is forked from the template (or, before it is up, starts in full);
    # the second's may be a stem grown meanwhile.
    kinds = [
        value(families, "silo_cold_starts", "silo_cold_starts_total", **fn, kind=k) for k in ("fork", "full", "stem")
    ]
    assert kinds[0] + kinds[1] >= 1 and sum(kinds) == 2
    assert value(families, "silo_invocation_duration_seconds", "silo_invocation_duration_seconds_count", **fn) == 5
    assert value(families, "silo_init_duration_seconds", "silo_init_duration_seconds_count", **fn) == 2
    assert value(families, "silo_environments_created", "silo_environments_created_total", **fn) == 2
    assert value(families, "silo_environments", "silo_environments", **fn, state="idle") == 2
    # The pool keeps a stem ready for the next new tenant.
    assert value(families, "silo_environments", "silo_environments", **fn, state="stem") >= 1
    for family in ("silo_invocations", "silo_environments", "silo_cold_starts"):
        assert all("tenant" not in labels for _, labels, _ in families[family]), "tenant labels are off by default"


def test_tenant_summary_matches_the_calls(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, HANDLER, per_tenant=True)
    for payload in ({}, {"fail": True}, {}, {}):
        invoke(lambda_client, unique_name, "alpha", payload)
    invoke(lambda_client, unique_name, "beta/with space", {})

    path = f"/silo/v1/functions/{unique_name}/tenants"
    summary = api(silo_server.endpoint, path)
    tenants = {t["TenantId"]: t for t in summary["Tenants"]}
    assert set(tenants) == {"alpha", "beta/with space"}
    alpha = tenants["alpha"]
    assert (alpha["Calls"], alpha["Errors"], alpha["Throttles"]) == (4, 1, 0)
    assert alpha["ColdStarts"]["Stem"] == 0 and alpha["ColdStarts"]["Fork"] + alpha["ColdStarts"]["Full"] == 1
    assert alpha["LiveEnvironments"] == 1
    assert 0 < alpha["DurationMs"]["P50"] <= alpha["DurationMs"]["P99"]
    assert alpha["LastSeen"].endswith("Z")
    assert tenants["beta/with space"]["Calls"] == 1
    assert 0 < summary["QuantileRelativeError"] < 0.05

    one = api(silo_server.endpoint, path + "/" + urllib.parse.quote("beta/with space"))
    assert one["TenantId"] == "beta/with space" and one["Calls"] == 1 and one["Errors"] == 0

    first = api(silo_server.endpoint, path + "?limit=1")
    assert [t["TenantId"] for t in first["Tenants"]] == ["alpha"]
    rest = api(silo_server.endpoint, path + "?limit=1&cursor=" + first["NextToken"])
    assert [t["TenantId"] for t in rest["Tenants"]] == ["beta/with space"] and "NextToken" not in rest

    with pytest.raises(ApiError) as unknown:
        api(silo_server.endpoint, path + "/nobody")
    assert unknown.value.code == "ResourceNotFoundException"


def test_metering_counts_tenant_environments(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, HANDLER, per_tenant=True, MemorySize=256)
    invoke(lambda_client, unique_name, "m1", {})
    invoke(lambda_client, unique_name, "m1", {})  # warm: no new environment
    invoke(lambda_client, unique_name, "m2", {})
    # A configuration change retires the environments: m1's next call creates a new one.
    lambda_client.update_function_configuration(FunctionName=unique_name, Description="changed")
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=unique_name)
    invoke(lambda_client, unique_name, "m1", {})

    page = api(silo_server.endpoint, f"/silo/v1/metering?function={unique_name}&from=1h")
    per_tenant = {(t["TenantId"], t["Environments"], t["MemoryMB"]) for t in page["Totals"]}
    assert per_tenant == {("m1", 2, 512), ("m2", 1, 256)}
    assert page["Total"] == {"Environments": 3, "MemoryMB": 768}
    assert len(page["Events"]) == 3
    assert all(e["MemorySizeMB"] == 256 and e["FunctionName"] == unique_name for e in page["Events"])
    assert len({e["EnvironmentId"] for e in page["Events"]}) == 3

    only = api(silo_server.endpoint, f"/silo/v1/metering?function={unique_name}&tenant=m1")
    assert [e["TenantId"] for e in only["Events"]] == ["m1", "m1"]
    assert api(silo_server.endpoint, f"/silo/v1/metering?function={unique_name}&to=1h")["Events"] == []
    paged = api(silo_server.endpoint, f"/silo/v1/metering?function={unique_name}&limit=2")
    assert len(paged["Events"]) == 2
    more = api(silo_server.endpoint, f"/silo/v1/metering?function={unique_name}&limit=2&cursor={paged['NextToken']}")
    assert len(more["Events"]) == 1 and "NextToken" not in more


def test_metering_survives_a_restart(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, HANDLER, per_tenant=True)
    invoke(lambda_client, unique_name, "durable", {})
    silo_server.restart()
    page = api(silo_server.endpoint, f"/silo/v1/metering?function={unique_name}&tenant=durable")
    assert page["Total"]["Environments"] == 1


@pytest.fixture(scope="module")
def tenant_labelled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SILO_METRICS_TENANT_LABELS", "true")
        server = SiloServer(tmp_path_factory.mktemp("labels") / "data")
        server.start()
    yield server
    server.stop()


def test_tenant_labels_when_switched_on(tenant_labelled_server: SiloServer, unique_name: str) -> None:
    client = make_client(tenant_labelled_server.endpoint)
    create_python_function(client, unique_name, HANDLER, per_tenant=True)
    invoke(client, unique_name, "x", {})
    invoke(client, unique_name, "x", {"fail": True})
    invoke(client, unique_name, "y", {})
    families = scrape(tenant_labelled_server.endpoint)
    fn = {"function": unique_name}
    assert value(families, "silo_invocations", "silo_invocations_total", **fn, tenant="x") == 2
    assert value(families, "silo_invocations", "silo_invocations_total", **fn, tenant="y") == 1
    assert value(families, "silo_function_errors", "silo_function_errors_total", **fn, tenant="x") == 1
    assert (
        sum(
            value(families, "silo_cold_starts", "silo_cold_starts_total", **fn, tenant="y", kind=k)
            for k in ("full", "stem")
        )
        == 1
    )
    assert value(families, "silo_environments", "silo_environments", **fn, tenant="x", state="idle") == 1
