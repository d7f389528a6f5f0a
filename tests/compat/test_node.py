"""Node.js functions against a real `silo serve`, driven by boto3: silo's built-in Node.js runtime in the jail
(the default backend when the tests run as root) and one function under gVisor.

The runtime is whichever of nodejs20.x and nodejs22.x the host's `node` serves; without a node of either
version these tests are skipped, and the one that asks for the runtime the host lacks says so.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from silo.runtimes import catalog
from tests.compat.test_logs import messages, read_logs
from tests.support import ROLE, TIME_SCALE, SiloServer, payload_of, zip_files

NODE = catalog.node_interpreter()
pytestmark = pytest.mark.skipif(NODE is None, reason="no node of a version silo serves (20, 22) on PATH")
RUNTIME = NODE.runtime if NODE is not None else "nodejs20.x"

# A module-level counter and a file in /tmp: each tenant's environment has its own of both.
COUNTER = """
const fs = require('fs');
let count = 0;
exports.handler = async (event, context) => {
  count += 1;
  const path = '/tmp/counter.txt';
  const files = (fs.existsSync(path) ? Number(fs.readFileSync(path, 'utf8')) : 0) + 1;
  fs.writeFileSync(path, String(files));
  return {
    tenant: context.tenantId,
    memory: count,
    file: files,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    invokedFunctionArn: context.invokedFunctionArn,
    memoryLimitInMB: context.memoryLimitInMB,
    logGroupName: context.logGroupName,
    logStreamName: context.logStreamName,
    executionEnv: process.env.AWS_EXECUTION_ENV,
    uid: process.getuid(),
  };
};
"""


def create_node_function(
    client: Any,
    name: str,
    files: dict[str, str],
    *,
    handler: str = "index.handler",
    per_tenant: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "FunctionName": name,
        "Runtime": RUNTIME,
        "Role": ROLE,
        "Handler": handler,
        "Code": {"ZipFile": zip_files(dict(files))},
        **extra,
    }
    if per_tenant:
        kwargs["TenancyConfig"] = {"TenantIsolationMode": "PER_TENANT"}
    config: dict[str, Any] = client.create_function(**kwargs)
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    return config


def invoke(client: Any, name: str, tenant: str | None = "t", event: Any = None, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"FunctionName": name, "Payload": json.dumps(event or {}).encode(), **kw}
    if tenant is not None:
        args["TenantId"] = tenant
    response: dict[str, Any] = client.invoke(**args)
    response["RequestId"] = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    return response


def answer(client: Any, name: str, tenant: str | None = "t", event: Any = None) -> Any:
    response = invoke(client, name, tenant, event)
    body = payload_of(response)
    assert "FunctionError" not in response, body
    return body


def tail(response: dict[str, Any]) -> list[str]:
    # Lines end with \n only: a record's own newlines are \r, which splitlines() would split on too.
    return base64.b64decode(response["LogResult"]).decode().rstrip("\n").split("\n")


def test_each_tenant_has_its_own_environment(lambda_client: Any, unique_name: str) -> None:
    config = create_node_function(lambda_client, unique_name, {"index.js": COUNTER})
    assert config["Runtime"] == RUNTIME
    assert lambda_client.get_function(FunctionName=unique_name)["Configuration"]["Runtime"] == RUNTIME
    first = invoke(lambda_client, unique_name, "tenant-a")
    a1 = payload_of(first)
    a2 = answer(lambda_client, unique_name, "tenant-a")
    b1 = answer(lambda_client, unique_name, "tenant-b")
    assert (a1["tenant"], a1["memory"], a1["file"]) == ("tenant-a", 1, 1)
    assert (a2["tenant"], a2["memory"], a2["file"]) == ("tenant-a", 2, 2)
    assert (b1["tenant"], b1["memory"], b1["file"]) == ("tenant-b", 1, 1), "tenant B saw tenant A's environment"
    assert a1["logStreamName"] == a2["logStreamName"] != b1["logStreamName"]
    # The rest of the context, as Lambda's nodejs runtimes fill it.
    assert a1["requestId"] == first["RequestId"]
    assert a1["functionName"] == unique_name and a1["functionVersion"] == "$LATEST"
    assert a1["invokedFunctionArn"] == config["FunctionArn"]
    assert a1["memoryLimitInMB"] == "128"
    assert a1["logGroupName"] == f"/aws/lambda/{unique_name}"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", a1["logStreamName"])
    assert a1["executionEnv"] == f"AWS_Lambda_{RUNTIME}"
    assert a1["uid"] != 0, "the jail runs the runtime as root"


STEM = """
const ENVIRONMENT = require('crypto').randomUUID();
let count = 0;
exports.handler = async (event, context) => {
  count += 1;
  return { env: ENVIRONMENT, tenant: context.tenantId, count };
};
"""


def test_new_tenant_binds_a_node_stem_that_is_never_shared(lambda_client: Any, unique_name: str) -> None:
    create_node_function(lambda_client, unique_name, {"index.js": STEM})
    first = invoke(lambda_client, unique_name, "first", LogType="Tail")
    assert "(stem)" not in tail(first)[-1], "the very first call starts in full"
    seen = {payload_of(first)["env"]}
    # A stem grows in the background after a new tenant's call; new tenants come until one binds it.
    deadline = time.monotonic() + 30 * TIME_SCALE
    for n in itertools.count():
        tenant = f"new-{n}"
        response = invoke(lambda_client, unique_name, tenant, LogType="Tail")
        body = payload_of(response)
        assert (body["tenant"], body["count"]) == (tenant, 1) and body["env"] not in seen, "a stem serves one tenant"
        seen.add(body["env"])
        if "(stem)" in tail(response)[-1]:
            break
        assert time.monotonic() < deadline, "no stem was bound within 30 s"
        time.sleep(0.2 * (n + 1))
    again = answer(lambda_client, unique_name, tenant)
    assert (again["env"], again["count"]) == (body["env"], 2), "a bound stem stays its tenant's warm environment"


def test_client_context_and_non_isolated_functions(lambda_client: Any, unique_name: str) -> None:
    source = (
        "exports.handler = async (e, context) => ({ client: context.clientContext ?? null, "
        "t: context.tenantId ?? null });"
    )
    create_node_function(lambda_client, unique_name, {"index.js": source}, per_tenant=False)
    custom = base64.b64encode(json.dumps({"custom": {"plan": "gold"}}).encode()).decode()
    response = lambda_client.invoke(FunctionName=unique_name, ClientContext=custom)
    assert payload_of(response) == {"client": {"custom": {"plan": "gold"}}, "t": None}


def test_silo_deploy_of_a_node_directory(silo_server: SiloServer, tmp_path: Path, unique_name: str) -> None:
    from tests.compat.test_cli import silo

    (tmp_path / "index.mjs").write_text("export const handler = async (e, c) => ({ tenant: c.tenantId, e });\n")
    deployed = silo(
        silo_server, "deploy", str(tmp_path), "--name", unique_name, "--runtime", RUNTIME, "--tenant-isolation"
    )
    assert deployed.returncode == 0, deployed.stderr
    called = silo(silo_server, "invoke", unique_name, "--tenant", "cli", "--payload", '{"x": 1}')
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"tenant": "cli", "e": {"x": 1}}


def test_function_asking_for_the_other_node_version_is_refused(lambda_client: Any, unique_name: str) -> None:
    other = next(r for r in catalog.NODE_RUNTIMES if r != RUNTIME)
    with pytest.raises(lambda_client.exceptions.InvalidParameterValueException) as caught:
        lambda_client.create_function(
            FunctionName=unique_name,
            Runtime=other,
            Role=ROLE,
            Handler="index.handler",
            Code={"ZipFile": zip_files({"index.js": COUNTER})},
        )
    message = caught.value.response["Error"]["Message"]
    assert other in message and f"this host's node serves {RUNTIME} only" in message


HANDLER_FORMS = {
    "async": "exports.handler = async (event) => ({ form: 'async', got: event.n });",
    "promise": (
        "exports.handler = (event) => new Promise((resolve) => setTimeout(() => resolve({ form: 'promise', "
        "got: event.n }), 10));"
    ),
    "callback": (
        "exports.handler = (event, context, callback) => { callback(null, { form: 'callback', got: event.n }); };"
    ),
    # A timer left behind: with callbackWaitsForEmptyEventLoop (the default) the answer waits for it.
    "callback-waits": (
        "exports.handler = (event, context, callback) => {\n"
        "  setTimeout(() => {}, 20);\n"
        "  callback(null, { form: 'callback-waits', got: event.n });\n"
        "};\n"
    ),
    "context-succeed": (
        "exports.handler = (event, context) => { context.succeed({ form: 'context-succeed', got: event.n }); };"
    ),
}


@pytest.mark.parametrize("form", sorted(HANDLER_FORMS))
def test_handler_forms(lambda_client: Any, unique_name: str, form: str) -> None:
    create_node_function(lambda_client, unique_name, {"index.js": HANDLER_FORMS[form]})
    assert answer(lambda_client, unique_name, event={"n": 7}) == {"form": form, "got": 7}
    assert answer(lambda_client, unique_name, event={"n": 8}) == {"form": form, "got": 8}, "the loop goes on"


def test_callback_waits_for_the_event_loop_unless_told_not_to(lambda_client: Any, unique_name: str) -> None:
    source = (
        "let ticks = 0;\n"
        "exports.handler = (event, context, callback) => {\n"
        "  context.callbackWaitsForEmptyEventLoop = event.wait;\n"
        "  const before = ticks;\n"
        "  setTimeout(() => { ticks += 1; }, 30);\n"
        "  callback(null, before);\n"
        "};\n"
    )
    create_node_function(lambda_client, unique_name, {"index.js": source})
    assert answer(lambda_client, unique_name, event={"wait": True}) == 0
    # The first call's timer ran before it answered, so the second sees its tick.
    assert answer(lambda_client, unique_name, event={"wait": False}) == 1


def test_an_async_handler_whose_promise_can_never_settle_fails(lambda_client: Any, unique_name: str) -> None:
    source = "exports.handler = async (event) => { if (event.hang) await new Promise(() => {}); return 'ok'; };"
    create_node_function(lambda_client, unique_name, {"index.js": source})
    response = invoke(lambda_client, unique_name, event={"hang": True})
    assert response["FunctionError"] == "Unhandled"
    assert payload_of(response)["errorType"] == "Runtime.NodeJsExit"
    assert answer(lambda_client, unique_name) == "ok", "the environment serves on"


def test_a_handler_that_never_answers_returns_null_when_the_loop_empties(lambda_client: Any, unique_name: str) -> None:
    create_node_function(lambda_client, unique_name, {"index.js": "exports.handler = (event, context) => 42;"})
    assert answer(lambda_client, unique_name) is None


@pytest.mark.parametrize(
    ("files", "handler"),
    [
        ({"index.mjs": "export const handler = async (event, context) => ({ esm: true, tenant: context.tenantId });"},
         "index.handler"),
        ({"package.json": '{"type": "module"}',
          "src/app.js": "export async function go(event, context) { return { esm: true, tenant: context.tenantId }; }"},
         "src/app.go"),
    ],
    ids=["mjs", "type-module"],
)  # fmt: skip
def test_es_module_handlers(lambda_client: Any, unique_name: str, files: dict[str, str], handler: str) -> None:
    create_node_function(lambda_client, unique_name, files, handler=handler)
    assert answer(lambda_client, unique_name, "esm-tenant") == {"esm": True, "tenant": "esm-tenant"}


def test_thrown_error_is_unhandled_in_lambdas_shape(lambda_client: Any, unique_name: str) -> None:
    source = (
        "class QuotaError extends Error { constructor(m) { super(m); this.name = 'QuotaError'; } }\n"
        "let calls = 0;\n"
        "exports.handler = async (event) => {\n"
        "  calls += 1;\n"
        "  if (event.fail) throw new QuotaError('over quota: ' + event.fail);\n"
        "  return calls;\n"
        "};\n"
    )
    create_node_function(lambda_client, unique_name, {"index.js": source})
    response = invoke(lambda_client, unique_name, event={"fail": "disk"}, LogType="Tail")
    assert response["FunctionError"] == "Unhandled"
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amz-function-error"] == "Unhandled"
    body = payload_of(response)
    assert set(body) == {"errorType", "errorMessage", "trace"}
    assert body["errorType"] == "QuotaError" and body["errorMessage"] == "over quota: disk"
    assert body["trace"][0] == "QuotaError: over quota: disk"
    assert any("/var/task/index.js" in frame for frame in body["trace"][1:])
    # Logged as Lambda's runtime logs it, and the environment lives on: the next call counts on.
    assert any("\tERROR\tInvoke Error \t" in line and '"errorType":"QuotaError"' in line for line in tail(response))
    assert answer(lambda_client, unique_name) == 2


@pytest.mark.parametrize(
    ("source", "error_type", "message"),
    [
        ("exports.handler = (e, c, callback) => callback('plain words');", "string", "plain words"),
        ("exports.handler = async () => { throw new TypeError('bad type'); };", "TypeError", "bad type"),
        ("exports.handler = () => Promise.reject(new RangeError('too far'));", "RangeError", "too far"),
    ],
    ids=["callback-string", "async-throw", "rejected-promise"],
)
def test_errors_by_each_way_of_failing(
    lambda_client: Any, unique_name: str, source: str, error_type: str, message: str
) -> None:
    create_node_function(lambda_client, unique_name, {"index.js": source})
    response = invoke(lambda_client, unique_name)
    assert response["FunctionError"] == "Unhandled"
    body = payload_of(response)
    assert (body["errorType"], body["errorMessage"]) == (error_type, message)
    assert isinstance(body["trace"], list)


CRASHES = (
    "let count = 0;\n"
    "exports.handler = (event, context, callback) => {\n"
    "  count += 1;\n"
    "  if (event.crash === 'throw') setTimeout(() => { throw new Error('thrown later'); }, 1);\n"
    "  else if (event.crash === 'reject') {\n"
    "    Promise.reject(new Error('nobody caught me'));\n"
    "    setTimeout(() => {}, 50);\n"
    "  }\n"
    "  else callback(null, count);\n"
    "};\n"
)


@pytest.mark.parametrize(
    ("crash", "error_type", "message", "logged"),
    [
        ("throw", "Error", "thrown later", "Uncaught Exception"),
        ("reject", "Runtime.UnhandledPromiseRejection", "Error: nobody caught me", "Unhandled Promise Rejection"),
    ],
)
def test_uncaught_errors_end_the_environment(
    lambda_client: Any, unique_name: str, crash: str, error_type: str, message: str, logged: str
) -> None:
    create_node_function(lambda_client, unique_name, {"index.js": CRASHES})
    assert answer(lambda_client, unique_name) == 1
    response = invoke(lambda_client, unique_name, event={"crash": crash}, LogType="Tail")
    assert response["FunctionError"] == "Unhandled"
    body = payload_of(response)
    assert (body["errorType"], body["errorMessage"]) == (error_type, message)
    assert any(f"\tERROR\t{logged} \t{{" in line for line in tail(response)), tail(response)
    assert answer(lambda_client, unique_name) == 1, "the crashed environment was reused"


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        ({"other.js": "exports.handler = async () => 1;"}, "index.handler", "Runtime.ImportModuleError",
         "Cannot find module 'index'"),
        ({"index.js": "exports.other = async () => 1;"}, "index.handler", "Runtime.HandlerNotFound",
         "index.handler is undefined or not exported"),
        ({"index.js": "exports.handler = 5;"}, "index.handler", "Runtime.HandlerNotFound",
         "index.handler is not a function"),
        ({"index.js": "exports.handler = async () => {"}, "index.handler", "Runtime.UserCodeSyntaxError",
         "SyntaxError"),
        ({"index.js": "exports.handler = async () => 1;"}, "index", "Runtime.MalformedHandlerName", "Bad handler"),
        ({"index.js": "throw new RangeError('init went wrong');"}, "index.handler", "RangeError",
         "init went wrong"),
        ({"index.mjs": "export const handler = awslambda.streamifyResponse(async (e, stream) => stream.end());"},
         "index.handler", "Error", "silo does not stream responses"),
    ],
    ids=["no-module", "no-export", "not-a-function", "syntax", "malformed", "init-throws", "streaming"],
)  # fmt: skip
def test_init_errors(
    lambda_client: Any, unique_name: str, files: dict[str, str], handler: str, error_type: str, message: str
) -> None:
    create_node_function(lambda_client, unique_name, files, handler=handler)
    response = invoke(lambda_client, unique_name)
    assert response["FunctionError"] == "Unhandled"
    body = payload_of(response)
    assert body["errorType"] == error_type
    assert message in body["errorMessage"]


CHATTY = """
exports.handler = async (event, context) => {
  console.log('log line', event.mark, context.tenantId);
  console.warn('warn line');
  console.error('error line');
  console.info({ nested: { mark: event.mark } });
  console.log('two\\nlines');
  return event.mark;
};
"""


def test_console_lines_are_in_the_tail_between_start_and_end(lambda_client: Any, unique_name: str) -> None:
    create_node_function(lambda_client, unique_name, {"index.js": CHATTY})
    response = invoke(lambda_client, unique_name, "teal", {"mark": "m1"}, LogType="Tail")
    assert payload_of(response) == "m1"
    lines = tail(response)
    rid = response["RequestId"]
    start = lines.index(next(line for line in lines if line.startswith(f"START RequestId: {rid}")))
    end = lines.index(f"END RequestId: {rid}")
    between = lines[start + 1 : end]
    records = [line.split("\t") for line in between if f"\t{rid}\t" in line]
    assert [r[2:] for r in records] == [
        ["INFO", "log line m1 teal"],
        ["WARN", "warn line"],
        ["ERROR", "error line"],
        ["INFO", "{ nested: { mark: 'm1' } }"],
        ["INFO", "two\rlines"],
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r[0]) for r in records)
    assert lines[-1].startswith(f"REPORT RequestId: {rid}")


def test_json_log_format_carries_the_tenant(lambda_client: Any, unique_name: str, silo_server: SiloServer) -> None:
    create_node_function(lambda_client, unique_name, {"index.js": CHATTY}, LoggingConfig={"LogFormat": "JSON"})
    response = invoke(lambda_client, unique_name, "BlueTenant", {"mark": "j1"})
    rid = response["RequestId"]
    page = read_logs(silo_server.endpoint, unique_name, request_id=rid)
    records = [json.loads(m) for m in messages(page) if m.startswith("{")]
    start = next(r for r in records if r.get("type") == "platform.start")["record"]
    assert start["tenantId"] == "BlueTenant"
    app = [r for r in records if "type" not in r]
    assert [(r["level"], r["message"]) for r in app] == [
        ("INFO", "log line j1 BlueTenant"),
        ("WARN", "warn line"),
        ("ERROR", "error line"),
        ("INFO", {"nested": {"mark": "j1"}}),
        ("INFO", "two\nlines"),
    ]
    for record in app:
        assert record["tenantId"] == "BlueTenant" and record["requestId"] == rid
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["timestamp"])


def test_json_levels_filter_and_errors_carry_the_tenant(
    lambda_client: Any, unique_name: str, silo_server: SiloServer
) -> None:
    source = (
        "exports.handler = async (event) => {\n"
        "  console.debug('debug-line'); console.info('info-line'); console.warn('warn-line');\n"
        "  if (event.fail) throw new Error('json failure');\n"
        "  return 1;\n"
        "};\n"
    )
    create_node_function(
        lambda_client,
        unique_name,
        {"index.js": source},
        LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "WARN"},
    )
    response = invoke(lambda_client, unique_name, "GreenTenant", {"fail": True})
    page = read_logs(silo_server.endpoint, unique_name, request_id=response["RequestId"])
    app = [json.loads(m) for m in messages(page) if m.startswith("{") and '"type"' not in m]
    assert [r["level"] for r in app] == ["WARN", "ERROR"]
    error = app[1]["message"]
    assert app[1]["tenantId"] == "GreenTenant"
    assert error["errorType"] == "Error" and error["errorMessage"] == "json failure"
    assert error["stackTrace"][0] == "Error: json failure"


def test_remaining_time_is_sane(lambda_client: Any, unique_name: str) -> None:
    source = (
        "exports.handler = async (event, context) => {\n"
        "  const first = context.getRemainingTimeInMillis();\n"
        "  await new Promise((resolve) => setTimeout(resolve, 50));\n"
        "  return [first, context.getRemainingTimeInMillis()];\n"
        "};\n"
    )
    create_node_function(lambda_client, unique_name, {"index.js": source}, Timeout=3)
    first, later = answer(lambda_client, unique_name)
    assert 0 < later < first <= 3000


def test_timeout_kills_the_environment(lambda_client: Any, unique_name: str) -> None:
    source = (
        "let count = 0;\n"
        "exports.handler = async (event) => {\n"
        "  count += 1;\n"
        "  if (event.sleep) await new Promise((resolve) => setTimeout(resolve, event.sleep));\n"
        "  return count;\n"
        "};\n"
    )
    create_node_function(lambda_client, unique_name, {"index.js": source}, Timeout=1)
    assert answer(lambda_client, unique_name) == 1
    response = invoke(lambda_client, unique_name, event={"sleep": 5000})
    assert response["FunctionError"] == "Unhandled"
    body = payload_of(response)
    assert body["errorType"] == "Sandbox.Timedout"
    assert body["errorMessage"].endswith("Task timed out after 1.00 seconds")
    assert answer(lambda_client, unique_name) == 1, "the next call gets a fresh environment"


@pytest.mark.skipif(os.geteuid() != 0, reason="gVisor needs root")
@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed")
def test_node_under_gvisor(lambda_client: Any, unique_name: str, silo_server: SiloServer) -> None:
    from tests.security.test_gvisor import containers, use_gvisor

    source = COUNTER.replace("count += 1;", "count += 1; console.log('gvisor says', context.tenantId);")
    create_node_function(lambda_client, unique_name, {"index.js": source})
    use_gvisor(silo_server, unique_name)
    before = containers(silo_server)
    first = invoke(lambda_client, unique_name, "gv-a", LogType="Tail")
    a1 = payload_of(first)
    a2 = answer(lambda_client, unique_name, "gv-a")
    b1 = answer(lambda_client, unique_name, "gv-b")
    assert [(x["tenant"], x["memory"]) for x in (a1, a2, b1)] == [("gv-a", 1), ("gv-a", 2), ("gv-b", 1)]
    assert a1["uid"] != 0
    assert any(line.endswith("\tINFO\tgvisor says gv-a") for line in tail(first))
    # Two tenants, two sandboxes at least (a stem grown for the next new tenant may be a third).
    assert len(containers(silo_server) - before) >= 2, "the environments are not gVisor sandboxes"
