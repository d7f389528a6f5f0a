"""schemathesis against a real `silo serve`, driven by docs/openapi.yaml: every operation the document
describes gets the requests it implies (its examples, the boundary and missing-member cases of its
schemas, and a fixed number of generated ones, valid and invalid), and every answer must be no 5xx,
within the timeout, of a status and shape the document declares, and an error in Lambda's shape.

Path parameters are often swapped for the functions deployed here (and the dead letter made here), so
generated requests reach the handlers behind a lookup instead of stopping at 404. Before each
operation the functions are deployed anew, so what one operation changed (a deleted function, a
reserved concurrency of 0, a 10 GB memory size) never decides what the next one sees.

What this starts, bounded: Invoke's generated valid tenant ids are replaced by one of `TENANTS`, so
each function has only a few tenants between redeploys (and environments per tenant only as many as
calls overlap: the fuzzer sends one at a time, and the server runs two asynchronous events at once);
the server's memory budget holds at most 8 environments of 128 MB live, evicting idle ones. The
server fixture counts the tenant environments metered at the end and fails past a small bound.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response

from tests.support import ROLE, SignedBy, SiloServer, make_client, python_runtime, zip_files

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
MAX_EXAMPLES = 50
REQUEST_TIMEOUT_S = 15
MEMORY_BUDGET_MB = 1024
TENANTS = ("tenant-a", "tenant-b", "tenant/c", "tenant d")
# Every tenant environment the run may start: the four tenants, and the few boundary ids (shortest,
# longest) the coverage phase sends as they are (hooks shape generated cases only); 5 when measured.
MAX_TENANT_ENVIRONMENTS = 24
TENANT_RE = re.compile(r"[a-zA-Z0-9._:/=+@ -]{1,256}")

HANDLER = """
def handler(event, context):
    if isinstance(event, dict) and event.get("fail"):
        raise RuntimeError("asked to fail")
    return {"event": event, "tenant": getattr(context, "tenant_id", None)}
"""
# The document's example function (`my-function`) has tenant isolation, as most of silo's users' do.
FUNCTIONS: dict[str, dict[str, Any]] = {
    "my-function": {"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}},
    "my-plain-function": {},
}

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 13,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none", "mode": "all"},
        "phases": {"stateful": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_path(SPEC_PATH, config=CONFIG)

# Filled by the server fixture: request ids of dead letters and events that exist on the server.
KNOWN_REQUEST_IDS: list[str] = []


@schema.hook
def flatmap_path_parameters(context: schemathesis.HookContext, path_parameters: dict[str, Any] | None) -> Any:
    if not path_parameters:
        return st.just(path_parameters)
    swaps: dict[str, st.SearchStrategy[Any]] = {}
    if "FunctionName" in path_parameters:
        swaps["FunctionName"] = st.sampled_from([*FUNCTIONS, path_parameters["FunctionName"]])
    if "RequestId" in path_parameters and KNOWN_REQUEST_IDS:
        swaps["RequestId"] = st.sampled_from([*KNOWN_REQUEST_IDS, path_parameters["RequestId"]])
    if "TenantId" in path_parameters:
        swaps["TenantId"] = st.sampled_from([*TENANTS, path_parameters["TenantId"]])
    if "Resource" in path_parameters:
        arns = [f"arn:aws:lambda:us-east-1:000000000000:function:{name}" for name in FUNCTIONS]
        swaps["Resource"] = st.sampled_from([*arns, path_parameters["Resource"]])
    if not swaps:
        return st.just(path_parameters)
    return st.fixed_dictionaries(swaps).map(lambda drawn: {**path_parameters, **drawn})


@schema.hook
def map_headers(context: schemathesis.HookContext, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    """A valid tenant id becomes one of `TENANTS` (which one follows from the id, so it stays derandomized)."""
    if not headers or context.operation is None or not context.operation.path.endswith("/invocations"):
        return headers
    tenant = headers.get("X-Amz-Tenant-Id")
    if isinstance(tenant, str) and TENANT_RE.fullmatch(tenant):
        headers = {**headers, "X-Amz-Tenant-Id": TENANTS[sum(tenant.encode()) % len(TENANTS)]}
    return headers


@schemathesis.check
def lambda_error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """An error is a JSON object with one message, its code in `x-amzn-ErrorType` and a request id."""
    if response.status_code < 400:
        return None
    error_type = response.headers.get("x-amzn-errortype", [""])[0]
    assert error_type.endswith("Exception"), f"no Lambda error code in x-amzn-ErrorType: {error_type!r}"
    assert response.headers.get("x-amzn-requestid"), "an error without x-amzn-RequestId"
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), "an error that is not JSON"
    body = response.json()
    assert isinstance(body, dict), f"an error body that is not a JSON object: {body!r}"
    messages = [body[k] for k in ("message", "Message") if k in body]
    assert len(messages) == 1 and isinstance(messages[0], str) and messages[0], f"no single message in {body!r}"
    return True


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    lambda_error_shape,
]


def deploy(client: Any) -> None:
    """The functions as the fuzzer expects them: created anew with their default configuration."""
    for name, extra in FUNCTIONS.items():
        try:
            client.delete_function(FunctionName=name)
        except client.exceptions.ResourceNotFoundException:
            pass
        client.create_function(
            FunctionName=name,
            Runtime=python_runtime(),
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": zip_files({"app.py": HANDLER})},
            **extra,
        )


def dead_letter(server: SiloServer, client: Any) -> str:
    """The request id of an event of `my-plain-function` that failed for good (no retry)."""
    client.put_function_event_invoke_config(FunctionName="my-plain-function", MaximumRetryAttempts=0)
    accepted = client.invoke(FunctionName="my-plain-function", InvocationType="Event", Payload=b'{"fail": true}')
    request_id: str = accepted["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = requests.get(
            f"{server.endpoint}/silo/v1/functions/my-plain-function/dead-letters",
            timeout=10,
            auth=SignedBy(server.endpoint),
        ).json()
        if any(ev["RequestId"] == request_id for ev in page["DeadLetters"]):
            return request_id
        time.sleep(0.1)
    raise AssertionError(f"the failed event {request_id} did not reach the dead-letter list in 30 s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    args = ("--stems-per-function", "0", "--memory-budget-mb", str(MEMORY_BUDGET_MB), "--queue-wait-ms", "200")
    silo = SiloServer(data, *args)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SILO_ASYNC_CONCURRENCY", "2")
        silo.start()
    try:
        client = make_client(silo.endpoint, read_timeout=REQUEST_TIMEOUT_S)
        deploy(client)
        KNOWN_REQUEST_IDS[:] = [dead_letter(silo, client)]
        yield silo
        metering = requests.get(
            f"{silo.endpoint}/silo/v1/metering", timeout=REQUEST_TIMEOUT_S, auth=SignedBy(silo.endpoint)
        ).json()
        started = metering["Total"]["Environments"]
        assert started <= MAX_TENANT_ENVIRONMENTS, f"the fuzzing started {started} tenant environments: {metering}"
    finally:
        silo.stop()
        KNOWN_REQUEST_IDS.clear()


@pytest.fixture(scope="module")
def client(server: SiloServer) -> Any:
    return make_client(server.endpoint, read_timeout=REQUEST_TIMEOUT_S)


@pytest.fixture()
def deployed(server: SiloServer, client: Any) -> SiloServer:
    deploy(client)
    return server


@pytest.fixture(scope="module")
def session(server: SiloServer) -> Iterator[requests.Session]:
    """Every request the fuzzer sends is signed with the server's administrator key, as boto3 would sign it."""
    with requests.Session() as s:
        s.auth = SignedBy(server.endpoint)
        yield s


@schema.parametrize()
# `deployed` runs once per operation, before all of its examples: that is what it is for.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], deadline=None)
def test_api_conforms_to_its_description(case: Case, deployed: SiloServer, session: requests.Session) -> None:
    seen = deployed.log_path.stat().st_size
    try:
        case.call_and_validate(base_url=deployed.endpoint, session=session, timeout=REQUEST_TIMEOUT_S, checks=CHECKS)
    finally:
        assert deployed.alive(), f"silo serve died:\n{deployed.log()[-4000:]}"
        # A bug answered with a 4xx would pass the checks; the server logs every unexpected exception.
        with deployed.log_path.open("rb") as log:
            log.seek(seen)
            new = log.read().decode(errors="replace")
        assert "Traceback" not in new, new[-4000:]
