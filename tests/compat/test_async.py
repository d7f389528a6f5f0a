"""Asynchronous invocations through boto3 against a real `silo serve`: the queue, retries, destinations,
dead letters, EventInvokeConfig, throttles, and a SIGKILL while events are queued and in flight.

Runs are observed two ways that do not depend on each other: silo's attempt log (a row is written
before every hand-over to an environment) and the function's own log output (START lines and what the
handler prints, captured from the environment). A handler that ran twice would show up twice in both.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support import SiloServer, create_python_function, make_client, signed_request, zip_files

RETRY_BASE_MS = "200"
WAIT_S = 90.0

COUNTER = """
import os
count = 0
ENVIRONMENT = os.urandom(8).hex()
def handler(event, context):
    global count
    count += 1
    return {"tenant": context.tenant_id, "count": count, "env": ENVIRONMENT, "event": event}
"""

FAILING = """
def handler(event, context):
    print("attempt for tenant", context.tenant_id, "request", context.aws_request_id)
    raise ValueError("boom for " + str(context.tenant_id))
"""

ECHO = """
def handler(event, context):
    return {"tenant": context.tenant_id, "event": event}
"""

SLOW = """
import time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"n": event["n"], "tenant": context.tenant_id}
"""


def _server(tmp_path_factory: pytest.TempPathFactory, name: str, concurrency: str) -> Iterator[SiloServer]:
    mp = pytest.MonkeyPatch()
    # SiloServer passes its environment on to `silo serve`, on every (re)start.
    mp.setenv("SILO_ASYNC_RETRY_BASE_MS", RETRY_BASE_MS)
    mp.setenv("SILO_ASYNC_CONCURRENCY", concurrency)
    server = SiloServer(tmp_path_factory.mktemp(name) / "data")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        mp.undo()


@pytest.fixture(scope="module")
def async_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    yield from _server(tmp_path_factory, "silo-async", "16")


@pytest.fixture()
def client(async_server: SiloServer) -> Any:
    return make_client(async_server.endpoint)


def silo_get(server: SiloServer, path: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(signed_request(server.endpoint, path), timeout=30) as response:
        return json.load(response)


def silo_post(server: SiloServer, path: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = signed_request(server.endpoint, path, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def event_of(server: SiloServer, function: str, request_id: str) -> dict[str, Any]:
    result: dict[str, Any] = silo_get(server, f"/silo/v1/functions/{function}/events/{request_id}")
    return result


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Poll until `check()` is truthy; no timing is asserted, the deadline only stops a hung test."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        time.sleep(0.1)


def wait_state(server: SiloServer, function: str, request_id: str, *states: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        ev = event_of(server, function, request_id)
        return ev if ev["State"] in states else None

    result: dict[str, Any] = wait_for(f"{function} event {request_id} to be {states}", check)
    return result


def invoke_event(client: Any, name: str, payload: Any, tenant: str | None = None, **kw: Any) -> str:
    args: dict[str, Any] = {"FunctionName": name, "InvocationType": "Event", "Payload": json.dumps(payload), **kw}
    if tenant is not None:
        args["TenantId"] = tenant
    response = client.invoke(**args)
    assert response["StatusCode"] == 202
    assert response["Payload"].read() == b""
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    assert "x-amz-executed-version" not in headers
    assert "x-amz-log-result" not in headers
    request_id: str = headers["x-amzn-requestid"]
    return request_id


def logs_of(server: SiloServer, function: str, request_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = silo_get(
        server, f"/silo/v1/functions/{function}/logs?request_id={request_id}&limit=1000"
    )["Events"]
    return events


def error_of(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


# -- the queue and the tenant ---------------------------------------------------------------------


def test_event_runs_in_the_tenants_own_warm_environment(
    async_server: SiloServer, client: Any, unique_name: str
) -> None:
    create_python_function(client, unique_name, COUNTER, per_tenant=True)
    first = json.loads(client.invoke(FunctionName=unique_name, TenantId="blue")["Payload"].read())
    request_id = invoke_event(client, unique_name, {"async": True}, tenant="blue", LogType="Tail")
    ev = wait_state(async_server, unique_name, request_id, "succeeded")
    answer = json.loads(ev["ResponsePayload"])
    assert ev["TenantId"] == "blue" and ev["Runs"] == 1 and ev["Condition"] == "Success"
    assert answer["tenant"] == "blue" and answer["event"] == {"async": True}
    assert answer["env"] == first["env"], "the event reused the tenant's warm environment"
    assert answer["count"] == first["count"] + 1
    after = json.loads(client.invoke(FunctionName=unique_name, TenantId="blue")["Payload"].read())
    assert (after["env"], after["count"]) == (first["env"], first["count"] + 2)
    other = wait_state(async_server, unique_name, invoke_event(client, unique_name, {}, "green"), "succeeded")
    green = json.loads(other["ResponsePayload"])
    assert green["tenant"] == "green" and green["env"] != first["env"] and green["count"] == 1


def test_tenant_rules_apply_to_events(client: Any, unique_name: str) -> None:
    create_python_function(client, unique_name, ECHO, per_tenant=True)
    with pytest.raises(ClientError) as exc:
        client.invoke(FunctionName=unique_name, InvocationType="Event", Payload=b"{}")
    assert error_of(exc)[0::2] == ("InvalidParameterValueException", 400)
    plain = unique_name + "-plain"
    create_python_function(client, plain, ECHO)
    with pytest.raises(ClientError) as exc:
        client.invoke(FunctionName=plain, InvocationType="Event", TenantId="blue", Payload=b"{}")
    assert error_of(exc)[0::2] == ("InvalidParameterValueException", 400)
    with pytest.raises(ClientError) as exc:
        client.invoke(FunctionName=plain, InvocationType="Event", Payload=b"{not json")
    assert error_of(exc)[0] == "InvalidRequestContentException"
    with pytest.raises(ClientError) as exc:
        client.invoke(FunctionName=unique_name + "-missing", InvocationType="Event", Payload=b"{}")
    assert error_of(exc)[0::2] == ("ResourceNotFoundException", 404)


def test_async_payload_limit_is_one_megabyte(async_server: SiloServer, client: Any, unique_name: str) -> None:
    create_python_function(client, unique_name, "def handler(event, context):\n    return len(event)\n")
    limit = 1024 * 1024
    exactly = json.dumps("a" * (limit - 2))
    request_id = invoke_event(client, unique_name, None, Payload=exactly.encode())
    assert json.loads(wait_state(async_server, unique_name, request_id, "succeeded")["ResponsePayload"]) == limit - 2
    with pytest.raises(ClientError) as exc:
        client.invoke(FunctionName=unique_name, InvocationType="Event", Payload=json.dumps("a" * (limit - 1)))
    code, message, status = error_of(exc)
    assert (code, status) == ("RequestEntityTooLargeException", 413)
    assert message == f"Request must be smaller than {limit} bytes for the InvokeFunction operation"


# -- retries, dead letters, replay ----------------------------------------------------------------


def test_function_error_is_retried_twice_with_the_tenant_on_every_attempt(
    async_server: SiloServer, client: Any, unique_name: str
) -> None:
    create_python_function(client, unique_name, FAILING, per_tenant=True)
    request_id = invoke_event(client, unique_name, {"k": "v"}, tenant="acme")
    ev = wait_state(async_server, unique_name, request_id, "dead")
    assert (ev["Runs"], ev["Condition"], ev["TenantId"], ev["FunctionError"]) == (
        3,
        "RetriesExhausted",
        "acme",
        "Unhandled",
    )
    assert [a["Outcome"] for a in ev["Attempts"]] == ["error"] * 3
    assert {a["Detail"] for a in ev["Attempts"]} == {"ValueError: boom for acme"}
    assert json.loads(ev["ResponsePayload"])["errorMessage"] == "boom for acme"
    # The function's own output: one START and one printed line per attempt, each under the same
    # request id (Lambda keeps it across retries) and the tenant.
    lines = wait_for(
        "three attempts in the log",
        lambda: (
            found
            if len(
                found := [
                    e for e in logs_of(async_server, unique_name, request_id) if "attempt for tenant" in e["Message"]
                ]
            )
            >= 3
            else None
        ),
    )
    assert len(lines) == 3
    assert all(f"attempt for tenant acme request {request_id}" in e["Message"] for e in lines)
    assert {e["TenantId"] for e in logs_of(async_server, unique_name, request_id)} == {"acme"}
    starts = [e for e in logs_of(async_server, unique_name, request_id) if e["Message"].startswith("START")]
    assert len(starts) == 3
    dead = silo_get(async_server, f"/silo/v1/functions/{unique_name}/dead-letters")["DeadLetters"]
    assert [(d["RequestId"], d["TenantId"], json.loads(d["Payload"])) for d in dead] == [
        (request_id, "acme", {"k": "v"})
    ]


def test_timeout_is_retried(async_server: SiloServer, client: Any, unique_name: str) -> None:
    create_python_function(client, unique_name, "import time\ndef handler(e, c):\n    time.sleep(30)\n", Timeout=1)
    client.put_function_event_invoke_config(FunctionName=unique_name, MaximumRetryAttempts=1)
    request_id = invoke_event(client, unique_name, {})
    ev = wait_state(async_server, unique_name, request_id, "dead")
    assert ev["Runs"] == 2 and ev["Condition"] == "RetriesExhausted"
    assert [a["Detail"].split(":")[0] for a in ev["Attempts"]] == ["Sandbox.Timedout", "Sandbox.Timedout"]


def test_no_retries_then_dead_letter_then_replay(async_server: SiloServer, client: Any, unique_name: str) -> None:
    create_python_function(client, unique_name, FAILING, per_tenant=True)
    client.put_function_event_invoke_config(FunctionName=unique_name, MaximumRetryAttempts=0)
    request_id = invoke_event(client, unique_name, {"order": 7}, tenant="acme")
    ev = wait_state(async_server, unique_name, request_id, "dead")
    assert ev["Runs"] == 1 and len(ev["Attempts"]) == 1
    # The bug is fixed; the dead letter runs again as a new event of the same tenant.
    client.update_function_code(FunctionName=unique_name, ZipFile=zip_files({"app.py": ECHO}))
    client.get_waiter("function_updated_v2").wait(FunctionName=unique_name)
    status, body = silo_post(async_server, f"/silo/v1/functions/{unique_name}/dead-letters/{request_id}/replay")
    assert status == 202 and body["ReplayOf"] == request_id and body["RequestId"] != request_id
    replayed = wait_state(async_server, unique_name, body["RequestId"], "succeeded")
    assert replayed["ReplayOf"] == request_id and replayed["TenantId"] == "acme"
    assert json.loads(replayed["ResponsePayload"]) == {"tenant": "acme", "event": {"order": 7}}
    old = event_of(async_server, unique_name, request_id)
    assert old["State"] == "replayed" and old["ReplayedAs"] == body["RequestId"]
    assert silo_get(async_server, f"/silo/v1/functions/{unique_name}/dead-letters")["DeadLetters"] == []
    status, again = silo_post(async_server, f"/silo/v1/functions/{unique_name}/dead-letters/{request_id}/replay")
    assert status == 409 and body["RequestId"] in again["message"]
    status, _ = silo_post(async_server, f"/silo/v1/functions/{unique_name}/dead-letters/no-such-id/replay")
    assert status == 404


# -- destinations ---------------------------------------------------------------------------------


def test_on_failure_destination_receives_the_record_with_the_tenant(
    async_server: SiloServer, client: Any, unique_name: str
) -> None:
    destination = create_python_function(client, unique_name + "-dlq", ECHO)["FunctionArn"]
    create_python_function(client, unique_name, FAILING, per_tenant=True)
    client.put_function_event_invoke_config(
        FunctionName=unique_name,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": destination}},
    )
    request_id = invoke_event(client, unique_name, {"id": 42}, tenant="acme")
    ev = wait_state(async_server, unique_name, request_id, "failed")
    assert ev["Runs"] == 2 and "DestinationRequestId" in ev
    delivered = wait_state(async_server, unique_name + "-dlq", ev["DestinationRequestId"], "succeeded")
    assert "TenantId" not in delivered, "the destination is not tenant-isolated: the tenant is in the record"
    record = json.loads(delivered["Payload"])
    assert record["version"] == "1.0"
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": f"arn:aws:lambda:us-east-1:000000000000:function:{unique_name}:$LATEST",
        "condition": "RetriesExhausted",
        "approximateInvokeCount": 2,
        "tenantId": "acme",
    }
    assert record["requestPayload"] == {"id": 42}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert json.loads(delivered["ResponsePayload"])["event"] == record, "the destination function received it"
    assert silo_get(async_server, f"/silo/v1/functions/{unique_name}/dead-letters")["DeadLetters"] == []


def test_on_success_destination_runs_in_the_same_tenant(
    async_server: SiloServer, client: Any, unique_name: str
) -> None:
    destination = create_python_function(client, unique_name + "-done", ECHO, per_tenant=True)["FunctionArn"]
    create_python_function(client, unique_name, ECHO, per_tenant=True)
    client.put_function_event_invoke_config(
        FunctionName=unique_name, DestinationConfig={"OnSuccess": {"Destination": destination}}
    )
    request_id = invoke_event(client, unique_name, {"x": 1}, tenant="blue")
    ev = wait_state(async_server, unique_name, request_id, "succeeded")
    delivered = wait_state(async_server, unique_name + "-done", ev["DestinationRequestId"], "succeeded")
    assert delivered["TenantId"] == "blue"
    answer = json.loads(delivered["ResponsePayload"])
    assert answer["tenant"] == "blue"
    assert answer["event"]["requestContext"]["condition"] == "Success"
    assert answer["event"]["responsePayload"] == {"tenant": "blue", "event": {"x": 1}}
    assert "functionError" not in answer["event"]["responseContext"]


# -- EventInvokeConfig ----------------------------------------------------------------------------


def test_event_invoke_config_crud(client: Any, unique_name: str) -> None:
    create_python_function(client, unique_name, ECHO)
    other = create_python_function(client, unique_name + "-2", ECHO)["FunctionArn"]
    arn = f"arn:aws:lambda:us-east-1:000000000000:function:{unique_name}:$LATEST"
    with pytest.raises(ClientError) as exc:
        client.get_function_event_invoke_config(FunctionName=unique_name)
    assert error_of(exc) == ("ResourceNotFoundException", f"The function {arn} doesn't have an EventInvokeConfig", 404)
    assert client.list_function_event_invoke_configs(FunctionName=unique_name)["FunctionEventInvokeConfigs"] == []

    put = client.put_function_event_invoke_config(
        FunctionName=unique_name, MaximumRetryAttempts=2, MaximumEventAgeInSeconds=60
    )
    assert put["FunctionArn"] == arn and put["LastModified"] is not None
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (2, 60)
    assert put["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}
    # Put replaces the whole config; Update only what it names.
    put = client.put_function_event_invoke_config(FunctionName=unique_name, MaximumRetryAttempts=0)
    assert "MaximumEventAgeInSeconds" not in put
    client.put_function_event_invoke_config(
        FunctionName=unique_name, MaximumRetryAttempts=2, MaximumEventAgeInSeconds=60
    )
    updated = client.update_function_event_invoke_config(
        FunctionName=unique_name, MaximumRetryAttempts=0, DestinationConfig={"OnFailure": {"Destination": other}}
    )
    assert (updated["MaximumRetryAttempts"], updated["MaximumEventAgeInSeconds"]) == (0, 60)
    got = client.get_function_event_invoke_config(FunctionName=unique_name, Qualifier="$LATEST")
    assert got["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {"Destination": other}}
    listed = client.list_function_event_invoke_configs(FunctionName=unique_name)["FunctionEventInvokeConfigs"]
    assert [c["FunctionArn"] for c in listed] == [arn]

    deleted = client.delete_function_event_invoke_config(FunctionName=unique_name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        client.delete_function_event_invoke_config(FunctionName=unique_name)
    assert error_of(exc)[0::2] == ("ResourceNotFoundException", 404)
    with pytest.raises(ClientError) as exc:
        client.update_function_event_invoke_config(FunctionName=unique_name, MaximumRetryAttempts=1)
    assert error_of(exc) == ("ResourceNotFoundException", f"The function {arn} doesn't have an EventInvokeConfig", 404)


def test_event_invoke_config_errors(client: Any, unique_name: str) -> None:
    create_python_function(client, unique_name, ECHO)
    own = client.get_function(FunctionName=unique_name)["Configuration"]["FunctionArn"]
    tenanted = create_python_function(client, unique_name + "-t", ECHO, per_tenant=True)["FunctionArn"]
    missing = "arn:aws:lambda:us-east-1:000000000000:function:does-not-exist"
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"FunctionName": "does-not-exist", "MaximumRetryAttempts": 1},
            "ResourceNotFoundException",
            "The function doesn't exist.",
        ),
        (
            {"FunctionName": unique_name},
            "InvalidParameterValueException",
            "You must specify at least one of error handling or destination setting.",
        ),
        (
            {"FunctionName": unique_name, "MaximumRetryAttempts": 3},
            "ValidationException",
            "1 validation error detected: Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: "
            "Member must have value less than or equal to 2",
        ),
        (
            {"FunctionName": unique_name, "MaximumEventAgeInSeconds": 21601},
            "ValidationException",
            "1 validation error detected: Value '21601' at 'maximumEventAgeInSeconds' failed to satisfy constraint: "
            "Member must have value less than or equal to 21600",
        ),
        (
            {"FunctionName": unique_name, "DestinationConfig": {"OnSuccess": {"Destination": own}}},
            "InvalidParameterValueException",
            "You can't specify the function as a destination for itself.",
        ),
        (
            {"FunctionName": unique_name, "DestinationConfig": {"OnFailure": {"Destination": missing}}},
            "InvalidParameterValueException",
            f"The destination ARN {missing} is invalid.",
        ),
        (
            {
                "FunctionName": unique_name,
                "DestinationConfig": {"OnSuccess": {"Destination": own.replace(":lambda:", ":iam:")}},
            },
            "InvalidParameterValueException",
            f"The provided destination config DestinationConfig(onSuccess=OnSuccess(destination="
            f"{own.replace(':lambda:', ':iam:')}), onFailure=null) is invalid.",
        ),
    ]
    for kwargs, code, message in cases:
        with pytest.raises(ClientError) as exc:
            client.put_function_event_invoke_config(**kwargs)
        assert error_of(exc)[:2] == (code, message), kwargs
    with pytest.raises(ClientError) as exc:
        client.put_function_event_invoke_config(
            FunctionName=unique_name,
            DestinationConfig={"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:failures"}},
        )
    code, message, _ = error_of(exc)
    assert code == "InvalidParameterValueException" and "an SQS queue" in message and "Lambda functions only" in message
    with pytest.raises(ClientError) as exc:
        client.put_function_event_invoke_config(
            FunctionName=unique_name, DestinationConfig={"OnFailure": {"Destination": tenanted}}
        )
    assert error_of(exc)[0] == "InvalidParameterValueException"
    with pytest.raises(ClientError) as exc:
        client.put_function_event_invoke_config(
            FunctionName=unique_name, DestinationConfig={"OnFailure": {"Destination": "not-an-arn"}}
        )
    assert error_of(exc)[0] == "ValidationException"
    with pytest.raises(ClientError) as exc:
        client.list_function_event_invoke_configs(FunctionName="does-not-exist")
    assert error_of(exc) == ("ResourceNotFoundException", "The function doesn't exist.", 404)


# -- throttles and deleted functions --------------------------------------------------------------


def test_throttled_event_is_retried_not_dropped(async_server: SiloServer, client: Any, unique_name: str) -> None:
    create_python_function(client, unique_name, ECHO, per_tenant=True)
    client.put_function_concurrency(FunctionName=unique_name, ReservedConcurrentExecutions=0)
    request_id = invoke_event(client, unique_name, {"late": True}, tenant="acme")
    throttled = wait_for(
        "a few throttled hand-overs",
        lambda: ev if (ev := event_of(async_server, unique_name, request_id))["Throttles"] >= 3 else None,
    )
    assert throttled["State"] in ("pending", "running") and throttled["Runs"] == 0
    details = {a.get("Detail") for a in throttled["Attempts"] if a["Outcome"] == "throttled"}
    assert details == {"ReservedFunctionConcurrentInvocationLimitExceeded"}
    client.delete_function_concurrency(FunctionName=unique_name)
    done = wait_state(async_server, unique_name, request_id, "succeeded")
    assert done["Runs"] == 1 and done["Condition"] == "Success"
    assert json.loads(done["ResponsePayload"]) == {"tenant": "acme", "event": {"late": True}}


def test_deleting_a_function_dead_letters_its_pending_events(
    async_server: SiloServer, client: Any, unique_name: str
) -> None:
    create_python_function(client, unique_name, ECHO)
    client.put_function_concurrency(FunctionName=unique_name, ReservedConcurrentExecutions=0)
    ids = [invoke_event(client, unique_name, {"n": n}) for n in range(3)]
    for request_id in ids:
        wait_for("a throttle", lambda rid=request_id: event_of(async_server, unique_name, rid)["Throttles"] >= 1)
    client.delete_function(FunctionName=unique_name)

    def dead() -> list[dict[str, Any]] | None:
        found = silo_get(async_server, f"/silo/v1/functions/{unique_name}/dead-letters")["DeadLetters"]
        return found if len(found) == len(ids) else None

    letters = wait_for("the pending events in the dead-letter list", dead)
    assert sorted(d["RequestId"] for d in letters) == sorted(ids)
    assert {d["Condition"] for d in letters} == {"FunctionDeleted"}
    assert all(d["Runs"] == 0 for d in letters)
    status, _ = silo_post(async_server, f"/silo/v1/functions/{unique_name}/dead-letters/{ids[0]}/replay")
    assert status == 404, "nothing to replay into until the function exists again"


# -- SIGKILL --------------------------------------------------------------------------------------


@pytest.fixture()
def crash_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    # Few slots, so that some events wait in the queue while others run.
    yield from _server(tmp_path_factory, "silo-async-kill", "4")


def _all_events(server: SiloServer, name: str) -> list[dict[str, Any]]:
    states = "pending,running,succeeded,failed,dead,replayed"
    out: list[dict[str, Any]] = []
    marker = ""
    while True:
        page = silo_get(server, f"/silo/v1/functions/{name}/events?State={states}&MaxItems=100{marker}")
        out.extend(page["Events"])
        if "NextMarker" not in page:
            return out
        marker = f"&Marker={page['NextMarker']}"


def test_sigkill_loses_no_event_and_reruns_none_that_completed(crash_server: SiloServer, tmp_path: Path) -> None:
    client = make_client(crash_server.endpoint)
    name = "crash-" + tmp_path.name[-12:].replace("_", "-")
    create_python_function(client, name, SLOW, per_tenant=True)
    ids = {invoke_event(client, name, {"n": n, "sleep": 0.4}, tenant=f"t{n % 3}"): n for n in range(40)}

    def mid_flight() -> bool:
        states = Counter(e["State"] for e in _all_events(crash_server, name))
        return states["succeeded"] >= 4 and states["running"] >= 1 and states["pending"] >= 1

    wait_for("events completed, running and queued at once", mid_flight)
    crash_server.stop(signal.SIGKILL)
    killed_at_ms = time.time() * 1000
    crash_server.start()

    # Nothing lost: every accepted event is known; completed ones stayed completed.
    after_restart = {e["RequestId"]: e for e in _all_events(crash_server, name)}
    assert set(after_restart) == set(ids)
    completed_before = {rid for rid, e in after_restart.items() if e["State"] == "succeeded"}
    assert len(completed_before) >= 4
    attempts_before = {rid: event_of(crash_server, name, rid)["Attempts"] for rid in completed_before}
    assert {e["State"] for e in after_restart.values()} <= {"succeeded", "pending", "running"}

    final = wait_for(
        "every event to complete after the restart",
        lambda: (
            evs
            if all(
                (evs := {e["RequestId"]: e for e in _all_events(crash_server, name)})[rid]["State"] == "succeeded"
                for rid in ids
            )
            else None
        ),
    )
    for request_id, n in ids.items():
        ev = event_of(crash_server, name, request_id)
        outcomes = [a["Outcome"] for a in ev["Attempts"]]
        # Completed exactly once: one successful run, and it is the last thing that happened to it.
        # Earlier attempts were cut short by the kill ("interrupted"), or, as this handler never fails,
        # lost their environment to something outside the function ("error": retried, as on Lambda).
        assert outcomes.count("success") == 1 and outcomes[-1] == "success", (request_id, outcomes)
        assert set(outcomes[:-1]) <= {"interrupted", "error"}, (request_id, ev)
        assert json.loads(ev["ResponsePayload"]) == {"n": n, "tenant": f"t{n % 3}"}
        assert final[request_id]["TenantId"] == f"t{n % 3}"
        if request_id in completed_before:
            assert ev["Attempts"] == attempts_before[request_id], "no attempt after it completed"
        # The function's own output: the new server, which was not killed, logged no run of an event
        # that had completed before the kill, and never more runs than silo's attempt rows.
        starts = [e for e in logs_of(crash_server, name, request_id) if e["Message"].startswith("START")]
        assert len(starts) <= len(ev["Attempts"])
        if request_id in completed_before:
            assert [s for s in starts if s["Timestamp"] > killed_at_ms] == [], request_id
        else:
            assert [s for s in starts if s["Timestamp"] > killed_at_ms], "it ran after the restart"
