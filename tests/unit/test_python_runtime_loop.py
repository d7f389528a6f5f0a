"""The built-in Python runtime's INIT and invoke loop, driven through a fake Runtime API client."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from silo.runtimes.python import handler as runtime_handler
from silo.runtimes.python import logs, loop
from silo.runtimes.python.client import InvocationRequest

ARN = "arn:aws:lambda:us-east-1:123456789012:function:f"


class FakeClient:
    """Records what the runtime posts; hands out queued invocations, then stops the loop."""

    def __init__(self, *requests: InvocationRequest) -> None:
        self.requests = list(requests)
        self.posts: list[tuple[str, str, bytes, str]] = []

    def wait_next_invocation(self) -> InvocationRequest:
        if not self.requests:
            raise EOFError("no more invocations")
        return self.requests.pop(0)

    def post_invocation_result(self, request_id: str, body: bytes, content_type: str) -> int:
        self.posts.append(("response", request_id, body, content_type))
        return 202

    def post_invocation_error(self, request_id: str, error_doc: bytes) -> int:
        self.posts.append(("error", request_id, error_doc, ""))
        return 202

    def post_init_error(self, error_doc: bytes, error_type: str) -> int:
        self.posts.append(("init_error", "", error_doc, error_type))
        return 202


def request(
    body: bytes = b'{"k": "v"}', request_id: str = "req-1", tenant: str | None = None, **headers: str
) -> InvocationRequest:
    values = {
        "lambda-runtime-aws-request-id": request_id,
        "lambda-runtime-deadline-ms": str(int(time.time() * 1000) + 5000),
        "lambda-runtime-invoked-function-arn": ARN,
        "lambda-runtime-trace-id": "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0",
        "content-type": "application/json",
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    if tenant is not None:
        values["lambda-runtime-aws-tenant-id"] = tenant
    return InvocationRequest(values, body)


@pytest.fixture()
def code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A code directory on sys.path; modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


@pytest.fixture()
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level, converter = root.handlers[:], root.level, logging.Formatter.converter
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.Formatter.converter = converter  # type: ignore[method-assign]
    logs.Invoke.request_id, logs.Invoke.tenant_id = "", None


def write(code: Path, name: str, source: str) -> None:
    path = code / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


def run_once(handler: Any, req: InvocationRequest, json_logs: bool = False) -> tuple[str, dict[str, Any] | bytes]:
    client = FakeClient()
    loop.handle(client, handler, req, json_logs)
    [(kind, _, body, content_type)] = client.posts
    if kind == "error" or content_type == "application/json":
        return kind, json.loads(body)
    return kind, body


def test_echo_and_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "f")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    monkeypatch.setenv("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/f")
    monkeypatch.setenv("AWS_LAMBDA_LOG_STREAM_NAME", "2025/01/01/[$LATEST]abc")
    seen: dict[str, Any] = {}

    def handler(event: Any, context: Any) -> Any:
        seen.update(vars(context))
        seen["remaining"] = context.get_remaining_time_in_millis()
        seen["trace"] = os.environ.get("_X_AMZN_TRACE_ID")
        return event

    kind, body = run_once(handler, request(tenant="blue"))
    assert (kind, body) == ("response", {"k": "v"})
    assert seen["aws_request_id"] == "req-1"
    assert seen["tenant_id"] == "blue"
    assert seen["function_name"] == "f"
    assert seen["memory_limit_in_mb"] == "256"  # a string, as awslambdaric gives it
    assert seen["function_version"] == "$LATEST"
    assert seen["log_group_name"] == "/aws/lambda/f"
    assert seen["log_stream_name"] == "2025/01/01/[$LATEST]abc"
    assert seen["invoked_function_arn"] == ARN
    assert seen["client_context"] is None
    assert seen["identity"].cognito_identity_id is None
    assert 4000 < seen["remaining"] <= 5000
    assert seen["trace"].startswith("Root=1-")


def test_tenant_is_none_without_the_header() -> None:
    assert run_once(lambda e, c: c.tenant_id, request()) == ("response", None)


def test_client_context_and_identity_are_objects() -> None:
    req = request(
        lambda_runtime_client_context='{"custom": {"a": 1}, "env": {"e": 2}, "client": {"app_title": "t"}}',
        lambda_runtime_cognito_identity='{"cognitoIdentityId": "id", "cognitoIdentityPoolId": "pool"}',
    )

    def handler(event: Any, context: Any) -> Any:
        cc, identity = context.client_context, context.identity
        return [cc.custom, cc.env, cc.client.app_title, identity.cognito_identity_id, identity.cognito_identity_pool_id]

    assert run_once(handler, req) == ("response", [{"a": 1}, {"e": 2}, "t", "id", "pool"])


def test_bad_client_context_is_a_context_unmarshal_error() -> None:
    kind, doc = run_once(lambda e, c: 1, request(lambda_runtime_client_context="{nope"))
    assert kind == "error"
    assert isinstance(doc, dict)
    assert doc["errorType"] == "Runtime.LambdaContextUnmarshalError"


def test_handler_exception_payload(code: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(code, "failing.py", "def handler(event, context):\n    raise KeyError('missing')\n")
    handler = runtime_handler.load_handler("failing.handler")
    kind, doc = run_once(handler, request())
    assert kind == "error"
    assert doc == {
        "errorMessage": "'missing'",
        "errorType": "KeyError",
        "requestId": "req-1",
        "stackTrace": [f"  File \"{code / 'failing.py'}\", line 2, in handler\n    raise KeyError('missing')\n"],
    }
    out = capsys.readouterr().out
    assert out.startswith("[ERROR] KeyError: 'missing'\rTraceback (most recent call last):\r\u00a0\u00a0File ")
    assert out.endswith("\u00a0\u00a0\u00a0\u00a0raise KeyError('missing')\n")


def test_json_log_format_error_report(code: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(code, "failing_json.py", "def handler(event, context):\n    raise ValueError('bad')\n")
    handler = runtime_handler.load_handler("failing_json.handler")
    logs.Invoke.tenant_id = None
    run_once(handler, request(tenant="blue"), json_logs=True)
    record = json.loads(capsys.readouterr().out)
    assert record["level"] == "ERROR"
    assert (record["errorType"], record["errorMessage"], record["requestId"]) == ("ValueError", "bad", "req-1")
    assert record["tenantId"] == "blue"
    logs.Invoke.request_id, logs.Invoke.tenant_id = "", None


def test_bad_json_event_is_an_unmarshal_error() -> None:
    kind, doc = run_once(lambda e, c: e, request(b"{not json"))
    assert kind == "error"
    assert isinstance(doc, dict)
    assert doc["errorType"] == "Runtime.UnmarshalError"
    assert doc["errorMessage"].startswith("Unable to unmarshal input: ")


def test_unserialisable_result_is_a_marshal_error() -> None:
    kind, doc = run_once(lambda e, c: {1, 2}, request())
    assert kind == "error"
    assert isinstance(doc, dict)
    assert doc["errorType"] == "Runtime.MarshalError"
    assert doc["errorMessage"] == "Unable to marshal response: Object of type set is not JSON serializable"


def test_bytes_result_and_decimals() -> None:
    assert run_once(lambda e, c: b"\x00raw", request()) == ("response", b"\x00raw")
    assert run_once(lambda e, c: [Decimal("3"), Decimal("1.5")], request()) == ("response", [3, 1.5])


@pytest.mark.parametrize(
    ("handler_name", "source", "error_type", "message"),
    [
        (
            "nodot",
            None,
            "Runtime.MalformedHandlerName",
            "Bad handler 'nodot': not enough values to unpack (expected 2, got 1)",
        ),
        (
            "absent_mod.handler",
            None,
            "Runtime.ImportModuleError",
            "Unable to import module 'absent_mod': No module named 'absent_mod'",
        ),
        (
            "deps.handler",
            "import not_installed_dep\n",
            "Runtime.ImportModuleError",
            "Unable to import module 'deps': No module named 'not_installed_dep'",
        ),
        ("syntax.handler", "def handler(:\n", "Runtime.UserCodeSyntaxError", "Syntax error in module 'syntax': "),
        ("nohandler.handler", "x = 1\n", "Runtime.HandlerNotFound", "Handler 'handler' missing on module 'nohandler'"),
        ("sys.handler", None, "Runtime.BuiltInModuleConflict", "Cannot use built-in module sys as a handler module"),
        ("raising.handler", "raise RuntimeError('no config')\n", "RuntimeError", "no config"),
    ],
)
def test_init_failures(
    code: Path, capsys: pytest.CaptureFixture[str], handler_name: str, source: str | None, error_type: str, message: str
) -> None:
    if source is not None:
        write(code, handler_name.split(".")[0] + ".py", source)
    client = FakeClient(request())
    assert loop.run(client, handler_name, json_logs=False) == 1
    [(kind, _, body, header)] = client.posts
    doc = json.loads(body)
    assert kind == "init_error"
    assert header == error_type
    assert doc["errorType"] == error_type
    assert doc["errorMessage"].startswith(message)
    assert doc["requestId"] == ""
    assert isinstance(doc["stackTrace"], list)
    assert capsys.readouterr().out.startswith(f"[ERROR] {error_type}: {message}")


def test_exception_at_import_reports_the_import_frames(code: Path) -> None:
    write(code, "raising_at_import.py", "def boom():\n    raise ValueError('x')\nboom()\n")
    client = FakeClient()
    assert loop.run(client, "raising_at_import.handler", json_logs=False) == 1
    trace = json.loads(client.posts[0][2])["stackTrace"]
    assert not any("silo/runtimes/python" in frame for frame in trace)
    assert "raising_at_import.py" in trace[-1]


def test_handler_in_a_subdirectory(code: Path) -> None:
    write(code, "pkg/sub/fn.py", "def handler(event, context):\n    return 'deep'\n")
    handler = runtime_handler.load_handler("pkg/sub/fn.handler")
    assert run_once(handler, request()) == ("response", "deep")


def test_loop_keeps_going_after_a_failure(code: Path) -> None:
    source = "def handler(event, context):\n    if event == 'bad':\n        raise ValueError(event)\n    return event\n"
    write(code, "flaky.py", source)
    client = FakeClient(request(b'"ok"', "a"), request(b'"bad"', "b"), request(b'"ok"', "c"))
    with pytest.raises(EOFError):
        loop.run(client, "flaky.handler", json_logs=False)
    assert [(kind, rid) for kind, rid, _, _ in client.posts] == [("response", "a"), ("error", "b"), ("response", "c")]


def test_text_log_records(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(json_format=False, level="")

    def handler(event: Any, context: Any) -> None:
        logging.getLogger("app").warning("hello %s", "there")

    run_once(handler, request(request_id="req-9"))
    line = capsys.readouterr().out
    level, stamp, request_id, message = line.rstrip("\n").split("\t")
    assert (level, request_id, message) == ("[WARNING]", "req-9", "hello there")
    assert time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
    assert stamp.endswith("Z")


def test_json_log_records_carry_the_tenant(root_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    logs.setup(json_format=True, level=logs.level_from_env("INFO"))

    def handler(event: Any, context: Any) -> None:
        logging.getLogger("app").debug("not shown")
        logging.getLogger("app").info("shown", extra={"orderId": 7})
        try:
            raise KeyError("k")
        except KeyError:
            logging.getLogger("app").exception("failed")

    run_once(handler, request(request_id="req-3", tenant="blue"))
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["message"] == "shown"
    assert (first["level"], first["logger"], first["requestId"], first["tenantId"]) == ("INFO", "app", "req-3", "blue")
    assert first["orderId"] == 7
    assert first["timestamp"].endswith("Z")
    assert "stackTrace" not in first
    assert (second["level"], second["errorType"], second["errorMessage"]) == ("ERROR", "KeyError", "'k'")
    assert second["stackTrace"]

    run_once(handler, request(request_id="req-4"))
    assert all("tenantId" not in json.loads(line) for line in capsys.readouterr().out.splitlines())


def test_log_level_from_env() -> None:
    assert logs.level_from_env(None) == ""
    assert logs.level_from_env("trace") == "DEBUG"
    assert logs.level_from_env("warn") == "WARN"


def test_the_tenant_token_of_each_invocation_is_in_silo_tenant_token_and_only_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SILO_TENANT_TOKEN", raising=False)
    seen: list[str | None] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append(os.environ.get("SILO_TENANT_TOKEN"))
        return {}

    run_once(handler, request(tenant="blue", silo_tenant_token="first.token.value"))
    run_once(handler, request(tenant="blue", silo_tenant_token="second.token.value"))
    run_once(handler, request(tenant="blue"))
    assert seen == ["first.token.value", "second.token.value", None]


def test_the_tenants_postgres_login_of_each_invocation_is_in_pguser_and_pgpassword(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGUSER", raising=False)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    seen: list[tuple[str | None, str | None]] = []

    def handler(event: Any, context: Any) -> Any:
        seen.append((os.environ.get("PGUSER"), os.environ.get("PGPASSWORD")))
        return {}

    login = {"silo_postgres_user": "silo_blue_0123", "silo_postgres_password": "first-password"}
    run_once(handler, request(tenant="blue", **login))
    run_once(handler, request(tenant="blue", **{**login, "silo_postgres_password": "renewed-password"}))
    assert seen == [("silo_blue_0123", "first-password"), ("silo_blue_0123", "renewed-password")]
