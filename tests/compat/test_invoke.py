"""Invoke through boto3 against a real `silo serve`: tenant rules, isolation of state, errors, limits."""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.support import create_python_function, payload_of, zip_files

# The AWS sample for tenant isolation: a module global and a file in /tmp, both per environment.
COUNTER = """
import os
count = 0
ENVIRONMENT = os.urandom(8).hex()  # names the environment; pids repeat across pid namespaces
def handler(event, context):
    global count
    count += 1
    path = "/tmp/counter.txt"
    files = int(open(path).read()) if os.path.exists(path) else 0
    files += 1
    with open(path, "w") as f:
        f.write(str(files))
    return {"tenant": context.tenant_id, "memory": count, "file": files, "env": ENVIRONMENT}
"""

CONTEXT = """
import os
def handler(event, context):
    return {
        "tenant_id": context.tenant_id,
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "event": event,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "LAMBDA_", "_HANDLER", "TZ", "MY_"))},
    }
"""


def invoke(client: Any, name: str, tenant: str | None = None, payload: Any = None, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"FunctionName": name, **kw}
    if tenant is not None:
        args["TenantId"] = tenant
    if payload is not None:
        args["Payload"] = json.dumps(payload).encode()
    response: dict[str, Any] = client.invoke(**args)
    return response


def error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def test_tenants_get_separate_environments(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    a1 = payload_of(invoke(lambda_client, unique_name, "tenant-a"))
    a2 = payload_of(invoke(lambda_client, unique_name, "tenant-a"))
    b1 = payload_of(invoke(lambda_client, unique_name, "tenant-b"))
    assert (a1["memory"], a1["file"]) == (1, 1)
    assert (a2["memory"], a2["file"]) == (2, 2)
    assert a1["env"] == a2["env"], "a tenant's warm environment is reused"
    assert (b1["memory"], b1["file"]) == (1, 1), "tenant B sees nothing of tenant A's memory or /tmp"
    assert b1["env"] != a1["env"]
    assert b1["tenant"] == "tenant-b"


def test_context_and_reserved_environment(lambda_client: Any, unique_name: str) -> None:
    config = create_python_function(
        lambda_client,
        unique_name,
        CONTEXT,
        per_tenant=True,
        MemorySize=256,
        Timeout=7,
        Environment={"Variables": {"MY_SETTING": "on"}},
    )
    out = payload_of(invoke(lambda_client, unique_name, "blue:team/1=+.-@ x", {"k": [1, 2]}))
    assert out["tenant_id"] == "blue:team/1=+.-@ x"
    assert out["function_name"] == unique_name
    assert out["function_version"] == "$LATEST"
    assert out["invoked_function_arn"] == config["FunctionArn"]
    assert out["memory_limit_in_mb"] == "256"
    assert out["log_group_name"] == f"/aws/lambda/{unique_name}"
    assert out["log_stream_name"].split("/")[3].startswith("[$LATEST]")
    assert 0 < out["remaining"] <= 7000
    assert out["event"] == {"k": [1, 2]}
    env = out["env"]
    assert env["MY_SETTING"] == "on"
    assert env["_HANDLER"] == "app.handler"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == unique_name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == out["log_stream_name"]
    assert env["AWS_LAMBDA_RUNTIME_API"]
    assert env["LAMBDA_TASK_ROOT"]
    assert env["TZ"] == ":UTC"


def test_non_isolated_function_has_no_tenant(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, CONTEXT)
    response = invoke(lambda_client, unique_name)
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert payload_of(response)["tenant_id"] is None


def test_tenant_rules(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    isolated, shared = unique_name + "-iso", unique_name + "-shared"
    create_python_function(lambda_client, isolated, COUNTER, per_tenant=True)
    create_python_function(lambda_client, shared, COUNTER)
    with pytest.raises(ClientError) as missing:
        invoke(lambda_client, isolated)
    assert error_code(missing) == "InvalidParameterValueException"
    assert "X-Amz-Tenant-Id" in missing.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as unexpected:
        invoke(lambda_client, shared, "tenant-a")
    assert error_code(unexpected) == "InvalidParameterValueException"
    for bad in ("x" * 257, "semi;colon", "star*", "é"):
        with pytest.raises(ClientError) as invalid:
            invoke(lambda_client, isolated, bad)
        assert error_code(invalid) == "InvalidParameterValueException", bad
    assert payload_of(invoke(lambda_client, isolated, "x" * 256))["memory"] == 1
    with pytest.raises(ParamValidationError):
        invoke(lambda_client, isolated, "")
    assert silo_server.alive()


def test_dry_run_checks_but_does_not_run(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    assert invoke(lambda_client, unique_name, "t", InvocationType="DryRun")["StatusCode"] == 204
    with pytest.raises(ClientError) as exc:
        invoke(lambda_client, unique_name, InvocationType="DryRun")
    assert error_code(exc) == "InvalidParameterValueException"
    assert payload_of(invoke(lambda_client, unique_name, "t"))["memory"] == 1


def test_unknown_function(lambda_client: Any, silo_server: Any) -> None:
    with pytest.raises(ClientError) as exc:
        invoke(lambda_client, "no-such-function")
    assert error_code(exc) == "ResourceNotFoundException"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "function:no-such-function" in exc.value.response["Error"]["Message"]
    assert silo_server.alive()


def test_payload_limits_and_invalid_json(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, "def handler(e, c):\n    return len(e['s'])\n")
    big = json.dumps({"s": "x" * (6 * 1024 * 1024)}).encode()
    with pytest.raises(ClientError) as too_large:
        lambda_client.invoke(FunctionName=unique_name, Payload=big)
    assert error_code(too_large) == "RequestEntityTooLargeException"
    assert too_large.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    with pytest.raises(ClientError) as not_json:
        lambda_client.invoke(FunctionName=unique_name, Payload=b"{not json")
    assert error_code(not_json) == "InvalidRequestContentException"
    fits = json.dumps({"s": "x" * (6 * 1024 * 1024 - 100)}).encode()
    assert payload_of(lambda_client.invoke(FunctionName=unique_name, Payload=fits)) == 6 * 1024 * 1024 - 100
    assert silo_server.alive()


def test_handler_exception(lambda_client: Any, unique_name: str) -> None:
    source = "count = 0\ndef handler(e, c):\n    global count\n    count += 1\n    raise ValueError(f'bad {count}')\n"
    create_python_function(lambda_client, unique_name, source)
    response = invoke(lambda_client, unique_name)
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    body = payload_of(response)
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "bad 1"
    assert isinstance(body["stackTrace"], list) and body["stackTrace"]
    assert body["requestId"] == response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


def test_timeout_kills_the_environment(lambda_client: Any, unique_name: str) -> None:
    source = (
        "import time\ncount = 0\n"
        "def handler(e, c):\n    global count\n    count += 1\n"
        "    if e.get('sleep'):\n        time.sleep(e['sleep'])\n    return count\n"
    )
    create_python_function(lambda_client, unique_name, source, Timeout=1)
    assert payload_of(invoke(lambda_client, unique_name)) == 1
    response = invoke(lambda_client, unique_name, payload={"sleep": 5})
    assert response["FunctionError"] == "Unhandled"
    body = payload_of(response)
    assert body["errorType"] == "Sandbox.Timedout"
    assert body["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert payload_of(invoke(lambda_client, unique_name)) == 1, "the next call gets a fresh environment"


def test_crash_is_an_exit_error(lambda_client: Any, unique_name: str) -> None:
    source = (
        "import os\ncount = 0\ndef handler(e, c):\n    global count\n    count += 1\n"
        "    if e.get('die'):\n        os._exit(3)\n    return count\n"
    )
    create_python_function(lambda_client, unique_name, source)
    assert payload_of(invoke(lambda_client, unique_name)) == 1
    response = invoke(lambda_client, unique_name, payload={"die": True})
    assert response["FunctionError"] == "Unhandled"
    body = payload_of(response)
    assert body["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in body["errorMessage"]
    assert payload_of(invoke(lambda_client, unique_name)) == 1, "the next call gets a fresh environment"


def test_import_error_is_reported(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, "import no_such_module_here\n")
    response = invoke(lambda_client, unique_name)
    assert response["FunctionError"] == "Unhandled"
    body = payload_of(response)
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "no_such_module_here" in body["errorMessage"]


def test_log_tail(lambda_client: Any, unique_name: str) -> None:
    source = (
        "import logging\ndef handler(e, c):\n    print('hello from', c.tenant_id)\n"
        "    logging.getLogger().warning('careful')\n    return 1\n"
    )
    create_python_function(lambda_client, unique_name, source, per_tenant=True)
    response = invoke(lambda_client, unique_name, "tail-tenant", LogType="Tail")
    tail = base64.b64decode(response["LogResult"]).decode()
    request_id = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    assert f"START RequestId: {request_id} Version: $LATEST" in tail
    assert "hello from tail-tenant" in tail
    assert "careful" in tail
    assert f"END RequestId: {request_id}" in tail
    assert f"REPORT RequestId: {request_id}\tDuration:" in tail
    assert "Init Duration:" in tail, "the first call of an environment reports its init"
    duration = float(tail.split("\tDuration: ")[1].split(" ms")[0])
    assert duration > 0, "the cold call's Duration is its invoke phase, not zero after taking init out"
    warm = base64.b64decode(invoke(lambda_client, unique_name, "tail-tenant", LogType="Tail")["LogResult"])
    assert b"Init Duration" not in warm
    assert "LogResult" not in invoke(lambda_client, unique_name, "tail-tenant")


def test_concurrent_calls_of_one_tenant_scale_out(lambda_client: Any, unique_name: str) -> None:
    source = "import os, time\nENV = os.urandom(8).hex()\ndef handler(e, c):\n    time.sleep(0.5)\n    return ENV\n"
    create_python_function(lambda_client, unique_name, source, per_tenant=True)
    pids: list[str] = []

    def call() -> None:
        pids.append(payload_of(invoke(lambda_client, unique_name, "busy")))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(pids)) == 3, "one invocation per environment at a time"
    again = payload_of(invoke(lambda_client, unique_name, "busy"))
    assert again in pids, "the tenant's idle environments are reused"
    other = payload_of(invoke(lambda_client, unique_name, "quiet"))
    assert other not in pids, "an idle environment is never handed to another tenant"


def test_update_and_delete_retire_environments(lambda_client: Any, unique_name: str) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    assert payload_of(invoke(lambda_client, unique_name, "t"))["memory"] == 1
    assert payload_of(invoke(lambda_client, unique_name, "t"))["memory"] == 2
    lambda_client.update_function_code(
        FunctionName=unique_name, ZipFile=zip_files({"app.py": "def handler(e, c):\n    return 'v2'\n"})
    )
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=unique_name)
    assert payload_of(invoke(lambda_client, unique_name, "t")) == "v2"
    lambda_client.update_function_configuration(FunctionName=unique_name, Environment={"Variables": {"XY": "1"}})
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=unique_name)
    assert payload_of(invoke(lambda_client, unique_name, "t")) == "v2"
    lambda_client.delete_function(FunctionName=unique_name)
    with pytest.raises(ClientError) as gone:
        invoke(lambda_client, unique_name, "t")
    assert error_code(gone) == "ResourceNotFoundException"


def test_state_survives_restart(lambda_client: Any, unique_name: str, silo_server: Any) -> None:
    create_python_function(lambda_client, unique_name, COUNTER, per_tenant=True)
    assert payload_of(invoke(lambda_client, unique_name, "t"))["memory"] == 1
    silo_server.restart()
    config = lambda_client.get_function_configuration(FunctionName=unique_name)
    assert config["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    out = payload_of(invoke(lambda_client, unique_name, "t"))
    assert (out["memory"], out["file"]) == (1, 1), "environments do not outlive the server"
