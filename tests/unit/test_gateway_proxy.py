"""The gateway's endpoint below the server: the proxy event it builds, how it reads a function's proxy
response, and that a refused request never reaches the router (a fake one here)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, MutableMapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.applications import Starlette

from silo import errors
from silo.api.gateway import GatewayEndpoint, proxy_answer, routes
from silo.api.gateway_errors import BadGatewayException
from silo.control.gateway_settings import validate
from silo.types import EnvKey, FunctionError, FunctionSpec, Invocation, InvocationResult
from tests.gateway_support import claims, ec_key, gateway_setting, inline_issuer, rsa_key
from tests.support import function_spec

KEY = rsa_key()


class FakeFunctions:
    def __init__(self, spec: FunctionSpec, gateway: dict[str, Any] | None) -> None:
        self.spec = spec
        self.gateway = gateway
        self.settings_reads = 0

    def resolve(self, function_name: str, qualifier: str | None) -> FunctionSpec:
        if function_name != self.spec.function_name:
            raise errors.ResourceNotFoundException(f"Function not found: {function_name}")
        return self.spec

    def get_silo_settings(self, function_name: str) -> dict[str, Any]:
        self.settings_reads += 1
        return {"Sandbox": "default", "Gateway": self.gateway}


class FakeRouter:
    """Answers with what `answer` makes of the event, and keeps the calls."""

    def __init__(self, answer: Any = None, function_error: FunctionError | None = None) -> None:
        self.calls: list[tuple[EnvKey, Invocation]] = []
        self.answer = answer
        self.function_error = function_error

    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult:
        self.calls.append((key, inv))
        event = json.loads(inv.payload)
        answer = self.answer(event) if callable(self.answer) else self.answer
        payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        return InvocationResult(payload=payload, executed_version="$LATEST", function_error=self.function_error)


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], content: bytes) -> None:
        self.status_code = status
        self.header_pairs = headers
        self.content = content
        self.headers = {k: v for k, v in headers}

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)

    def get_list(self, name: str) -> list[str]:
        return [v for k, v in self.header_pairs if k == name]


class Http:
    """One HTTP exchange at a time with an ASGI app, as the server would make it."""

    def __init__(self, app: Starlette, client: tuple[str, int]) -> None:
        self.app = app
        self.client = client

    def request(self, method: str, url: str, content: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
        path, _, query = url.partition("?")
        raw = [(b"host", b"silo.test:9700"), (b"content-length", str(len(content)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": unquote(path),
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": raw,
            "client": self.client,
            "server": ("silo.test", 9700),
        }
        inbox: list[MutableMapping[str, Any]] = [{"type": "http.request", "body": content, "more_body": False}]
        sent: list[MutableMapping[str, Any]] = []

        async def receive() -> MutableMapping[str, Any]:
            return inbox.pop(0) if inbox else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        asyncio.run(self.app(scope, receive, send))
        start = next(m for m in sent if m["type"] == "http.response.start")
        pairs = [(k.decode().lower(), v.decode()) for k, v in start["headers"]]
        return Reply(
            start["status"], pairs, b"".join(m.get("body", b"") for m in sent if m["type"] != "http.response.start")
        )

    def get(self, url: str, **kwargs: Any) -> Reply:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Reply:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> Reply:
        return self.request("PUT", url, **kwargs)


def echo(event: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": 200, "body": json.dumps(event)}


def client(router: FakeRouter, gateway: dict[str, Any] | None = None, name: str = "f") -> tuple[Http, Any]:
    setting = validate(gateway or gateway_setting(inline_issuer(KEY)), per_tenant=True)
    functions = FakeFunctions(function_spec(name), setting)
    app = Starlette(routes=routes(GatewayEndpoint(functions, router)))
    return Http(app, ("203.0.113.7", 50000)), functions


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_an_accepted_request_invokes_as_the_claimed_tenant_with_a_rest_proxy_event() -> None:
    router = FakeRouter(echo)
    http, _ = client(router)
    reply = http.post(
        "/gateway/f/orders/42?x=1&x=2&y=",
        content=b'{"item": 1}',
        headers={**bearer(KEY.sign(claims("tenant-a", email="a@example.com"))), "X-Trace": "t1"},
    )
    assert reply.status_code == 200, reply.text
    (key, inv) = router.calls[0]
    assert key.tenant_id == inv.tenant_id == "tenant-a"
    event = json.loads(reply.content)
    assert event["resource"] == "/{proxy+}"
    assert event["path"] == "/orders/42"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"proxy": "orders/42"}
    assert event["queryStringParameters"] == {"x": "2", "y": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": [""]}
    assert event["headers"]["x-trace"] == "t1" and event["multiValueHeaders"]["x-trace"] == ["t1"]
    assert event["stageVariables"] is None
    assert event["body"] == '{"item": 1}' and event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["authorizer"]["tenantId"] == "tenant-a"
    assert context["authorizer"]["claims"]["email"] == "a@example.com"
    assert context["authorizer"]["principalId"] == "user-1"
    assert context["requestId"] == inv.request_id == reply.headers["x-amzn-requestid"]
    assert context["httpMethod"] == "POST" and context["path"] == "/gateway/f/orders/42"
    assert context["resourcePath"] == "/{proxy+}" and context["stage"] == "gateway"
    assert context["identity"]["sourceIp"] == "203.0.113.7"
    assert context["accountId"] == "000000000000"
    assert isinstance(context["requestTimeEpoch"], int)


def test_the_root_of_a_gateway_has_no_proxy_parameter_and_a_binary_body_comes_in_base64() -> None:
    router = FakeRouter(echo)
    http, _ = client(router)
    reply = http.put("/gateway/f", content=b"\xff\x00\xfe", headers=bearer(KEY.sign(claims())))
    event = json.loads(reply.content)
    assert event["resource"] == "/" and event["path"] == "/" and event["pathParameters"] is None
    assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\xff\x00\xfe"
    empty = json.loads(http.get("/gateway/f/", headers=bearer(KEY.sign(claims()))).content)
    assert empty["body"] is None and empty["path"] == "/"


# Tokens are made when the test runs, not when it is collected: a suite that runs long before this test
# (the cgroup-v2 VM's takes minutes) would otherwise hand it tokens already expired, refused as 401.
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (lambda: {}, 401),
        (lambda: {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        (lambda: bearer("not.a.jwt"), 401),
        (lambda: bearer(rsa_key("rsa-1").sign(claims())), 401),  # another key under the known kid
        (lambda: bearer(KEY.sign(claims(exp=1))), 401),
        (lambda: bearer(ec_key().sign(claims())), 401),  # ES256 is not among the setting's algorithms here
        (lambda: bearer(KEY.sign(claims(None))), 403),
        (lambda: bearer(KEY.sign(claims("no#tenant"))), 403),
    ],
)
def test_a_refused_request_never_reaches_the_router(headers: Callable[[], dict[str, str]], status: int) -> None:
    router = FakeRouter(echo)
    http, _ = client(router, gateway_setting(inline_issuer(KEY), Algorithms=["RS256"]))
    reply = http.post("/gateway/f/x", content=b"{}", headers=headers())
    assert reply.status_code == status
    body = reply.json()
    assert set(body) <= {"message", "Message", "Type"} and (body.get("message") or body.get("Message"))
    assert reply.headers["x-amzn-errortype"] == ("UnauthorizedException" if status == 401 else "AccessDeniedException")
    if status == 401:
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert router.calls == []


def test_no_function_and_a_function_without_a_gateway_are_answered_alike() -> None:
    router = FakeRouter(echo)
    http, functions = client(router)
    missing = http.get("/gateway/nobody/x", headers=bearer(KEY.sign(claims())))
    functions.gateway = None
    functions.spec = replace(functions.spec, revision_id="r2")
    closed = http.get("/gateway/f/x", headers=bearer(KEY.sign(claims())))
    assert missing.status_code == closed.status_code == 404
    assert missing.headers["x-amzn-errortype"] == closed.headers["x-amzn-errortype"] == "NotFoundException"
    assert "no function of that name has a Gateway setting" in closed.json()["message"]
    assert router.calls == []


def test_settings_are_read_again_only_when_the_revision_changes() -> None:
    router = FakeRouter(echo)
    http, functions = client(router)
    for _ in range(3):
        assert http.get("/gateway/f", headers=bearer(KEY.sign(claims()))).status_code == 200
    assert functions.settings_reads == 1
    other = rsa_key("rotated")
    functions.gateway = validate(gateway_setting(inline_issuer(other)), per_tenant=True)
    functions.spec = replace(functions.spec, revision_id="r2")
    assert http.get("/gateway/f", headers=bearer(KEY.sign(claims()))).status_code == 401
    assert http.get("/gateway/f", headers=bearer(other.sign(claims()))).status_code == 200
    assert functions.settings_reads == 2


def test_the_functions_answer_becomes_the_http_answer() -> None:
    answer = {
        "statusCode": 201,
        "headers": {"Content-Type": "text/plain", "X-One": "1", "Set-Cookie": "a=1"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "X-Many": ["x", "y"]},
        "body": "created",
        "isBase64Encoded": False,
    }
    http, _ = client(FakeRouter(answer))
    reply = http.post("/gateway/f/things", headers=bearer(KEY.sign(claims())))
    assert reply.status_code == 201
    assert reply.text == "created"
    assert reply.headers["content-type"] == "text/plain"
    assert reply.get_list("set-cookie") == ["a=1", "b=2"]
    assert reply.get_list("x-many") == ["x", "y"]
    assert reply.headers["x-one"] == "1"


def test_a_base64_body_is_decoded_and_json_is_the_default_type() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00"
    http, _ = client(FakeRouter({"statusCode": 200, "body": base64.b64encode(png).decode(), "isBase64Encoded": True}))
    reply = http.get("/gateway/f/image", headers=bearer(KEY.sign(claims())))
    assert reply.content == png
    http, _ = client(FakeRouter({"statusCode": 200, "body": "{}"}))
    assert http.get("/gateway/f", headers=bearer(KEY.sign(claims()))).headers["content-type"] == "application/json"


def result(answer: Any, function_error: FunctionError | None = None) -> InvocationResult:
    payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    return InvocationResult(payload=payload, executed_version="$LATEST", function_error=function_error)


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        ["a list"],
        "a string",
        {"body": "no status"},
        {"statusCode": "200", "body": "x"},
        {"statusCode": True},
        {"statusCode": 99},
        {"statusCode": 600},
        {"statusCode": 200, "body": {"an": "object"}},
        {"statusCode": 200, "cookies": ["a=1"]},
        {"statusCode": 200, "headers": ["x"]},
        {"statusCode": 200, "headers": {"X-A": {"nested": 1}}},
        {"statusCode": 200, "headers": {"X-A": "one\r\nX-Injected: yes"}},
        {"statusCode": 200, "headers": {"Bad Name": "x"}},
        {"statusCode": 200, "multiValueHeaders": {"X-A": "not a list"}},
        {"statusCode": 200, "body": "%%%", "isBase64Encoded": True},
        {"statusCode": 200, "isBase64Encoded": "yes"},
    ],
)
def test_a_malformed_proxy_response_is_a_502(answer: Any) -> None:
    with pytest.raises(BadGatewayException) as caught:
        proxy_answer(result(answer))
    assert caught.value.status == 502 and caught.value.message == "Internal server error"


def test_a_failed_function_is_a_502_and_the_wire_says_what_api_gateway_says() -> None:
    with pytest.raises(BadGatewayException):
        proxy_answer(result({"errorMessage": "boom", "errorType": "RuntimeError"}, FunctionError.UNHANDLED))
    http, _ = client(FakeRouter({"errorMessage": "boom"}, FunctionError.UNHANDLED))
    reply = http.get("/gateway/f", headers=bearer(KEY.sign(claims())))
    assert reply.status_code == 502
    assert reply.json() == {"message": "Internal server error"}
    assert reply.headers["x-amzn-errortype"] == "InternalServerErrorException"


def test_hop_by_hop_headers_of_the_function_are_dropped_and_no_content_has_no_body() -> None:
    status, headers, body = proxy_answer(
        result({"statusCode": 204, "headers": {"Content-Length": "999", "Connection": "close"}, "body": "x"})
    )
    assert status == 204 and body == b""
    names = [k for k, _ in headers]
    assert names.count(b"content-length") == 1 and (b"content-length", b"0") in headers
    assert b"connection" not in names


def test_an_event_too_large_for_an_invocation_is_refused_before_the_router() -> None:
    router = FakeRouter(echo)
    http, _ = client(router)
    reply = http.post("/gateway/f", content=b"\xff" * (5 * 1024 * 1024), headers=bearer(KEY.sign(claims())))
    assert reply.status_code == 413
    assert router.calls == []


def test_the_router_runs_once_per_accepted_request() -> None:
    router = FakeRouter(echo)
    http, _ = client(router)
    for tenant in ("a", "b", "a"):
        http.get("/gateway/f", headers=bearer(KEY.sign(claims(tenant))))
    assert [k.tenant_id for k, _ in router.calls] == ["a", "b", "a"]
