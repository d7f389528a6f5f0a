"""The function URL door below the server: it fails closed when an AWS_IAM URL is reached unsigned, its
answer rules, and its CORS headers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from silo.api.function_urls import FunctionUrlEndpoint, cors_headers, url_answer
from silo.api.gateway_errors import BadGatewayException
from silo.api.invoke import PRINCIPAL
from silo.control.function_urls import FunctionUrlRecord
from silo.types import EnvKey, FunctionError, FunctionSpec, Invocation, InvocationResult, Principal
from tests.support import function_spec


def record(auth_type: str) -> FunctionUrlRecord:
    return FunctionUrlRecord("f", "$LATEST", "u" * 32, auth_type, None, "BUFFERED", "t", "t")


class Functions:
    def __init__(self, url: FunctionUrlRecord) -> None:
        self.url = url

    def function_url(self, url_id: str) -> FunctionUrlRecord | None:
        return self.url if url_id == self.url.url_id else None

    def resolve(self, function_name: str, qualifier: str | None, tenant_id: str | None = None) -> FunctionSpec:
        return function_spec("f", per_tenant=False)


class Router:
    def __init__(self) -> None:
        self.calls: list[Invocation] = []

    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult:
        self.calls.append(inv)
        return InvocationResult(payload=b'{"ok": true}')


def serve(endpoint: FunctionUrlEndpoint, principal: Principal | None) -> tuple[int, bytes]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/url/" + "u" * 32 + "/",
        "raw_path": b"/url/" + b"u" * 32 + b"/",
        "query_string": b"",
        "headers": [(b"host", b"silo")],
        "path_params": {"url_id": "u" * 32, "path": ""},
        PRINCIPAL: principal,
    }
    if principal is None:
        del scope[PRINCIPAL]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(endpoint(scope, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_an_aws_iam_url_reached_unsigned_runs_nothing() -> None:
    router = Router()
    signed = FunctionUrlEndpoint(Functions(record("AWS_IAM")), router, "000000000000", signed=True)
    status, body = serve(signed, None)
    assert status == 403 and json.loads(body)["Message"] == "Forbidden" and not router.calls
    status, _ = serve(signed, Principal("SILOKEY", True))
    assert status == 200 and router.calls[-1].caller_key == "SILOKEY"
    # A server without authentication serves every URL to anyone, as it serves everything.
    unsigned = FunctionUrlEndpoint(Functions(record("AWS_IAM")), router, "000000000000", signed=False)
    assert serve(unsigned, None)[0] == 200


def test_answer_rules() -> None:
    assert url_answer(InvocationResult(payload=b'"text"')) == (200, [("content-type", "application/json")], b'"text"')
    status, headers, body = url_answer(
        InvocationResult(payload=json.dumps({"statusCode": 204, "body": "gone", "cookies": ["a=1"]}).encode())
    )
    assert (status, body) == (204, b"")
    assert ("set-cookie", "a=1") in headers
    for bad in (
        {"statusCode": "200"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "headers": {"x": "a\r\nb"}},
        {"statusCode": 200, "isBase64Encoded": True, "body": "***"},
        {"statusCode": 200, "cookies": "a=1"},
    ):
        with pytest.raises(BadGatewayException):
            url_answer(InvocationResult(payload=json.dumps(bad).encode()))
    with pytest.raises(BadGatewayException):
        url_answer(InvocationResult(payload=b"{}", function_error=FunctionError.UNHANDLED))


def test_cors_headers() -> None:
    cors = {"AllowOrigins": ["*"], "AllowMethods": ["GET"], "MaxAge": 0}
    assert cors_headers(cors, "https://a.example", preflight=True) == [
        ("access-control-allow-origin", "*"),
        ("access-control-allow-methods", "GET"),
        ("access-control-max-age", "0"),
    ]
    assert cors_headers(cors, None, preflight=False) == []
    # With credentials the origin is named, never "*".
    named = cors_headers({**cors, "AllowCredentials": True}, "https://a.example", preflight=False)
    assert ("access-control-allow-origin", "https://a.example") in named
    assert cors_headers({"AllowOrigins": ["https://b.example"]}, "https://a.example", preflight=False) == []
