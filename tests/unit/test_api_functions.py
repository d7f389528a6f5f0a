"""The function routes, driven in-process through ASGI (no network, no HTTP client library)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import zipfile
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from silo.api import render
from silo.api.functions import MAX_REQUEST_BYTES, routes
from silo.config import Settings
from silo.control.functions import FunctionService
from silo.errors import LambdaError
from silo.store.code import CodeStore
from silo.store.db import open_database

ROLE = "arn:aws:iam::123456789012:role/lambda-role"


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    app: Starlette,
    method: str,
    path: str,
    body: bytes | list[bytes] = b"",
    query: str = "",
    content_length: int | None = None,
) -> Reply:
    """One HTTP exchange with the app; a list body is sent in several chunks."""
    chunks = body if isinstance(body, list) else [body]
    headers = [(b"host", b"silo.test:9700")]
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    elif not isinstance(body, list):
        headers.append((b"content-length", str(len(body)).encode()))
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
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("silo.test", 9700),
    }
    inbox = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    out_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(start["status"], out_headers, data)


async def render_lambda_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, LambdaError):
        raise exc
    return render.error_response(exc)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Starlette]:
    settings = Settings(data_dir=tmp_path)
    db = open_database(settings.db_path)
    service = FunctionService(
        settings,
        db,
        CodeStore(settings.code_dir),
        lambda arn, version: None,
        available_runtimes=lambda: ["python3.11"],
        architecture="x86_64",
    )
    yield Starlette(routes=routes(service), exception_handlers={LambdaError: render_lambda_error})
    db.close()


def make_zip(text: str = "x = 1\n") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("app.py", date_time=(1980, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


def create_body(name: str = "fn", **extra: Any) -> bytes:
    return json.dumps(
        {
            "FunctionName": name,
            "Runtime": "python3.11",
            "Role": ROLE,
            "Handler": "app.handler",
            "Code": {"ZipFile": base64.b64encode(make_zip()).decode()},
            **extra,
        }
    ).encode()


def test_create_answers_201_with_a_request_id(app: Starlette) -> None:
    reply = call(app, "POST", "/2015-03-31/functions", create_body())
    assert reply.status == 201
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-amzn-requestid"]
    assert reply.json()["FunctionName"] == "fn"


def test_list_with_and_without_trailing_slash_and_pagination(app: Starlette) -> None:
    for name in ["c", "a", "b"]:
        assert call(app, "POST", "/2015-03-31/functions", create_body(name)).status == 201
    for path in ["/2015-03-31/functions", "/2015-03-31/functions/"]:
        reply = call(app, "GET", path, query="MaxItems=2")
        assert reply.status == 200
        assert [f["FunctionName"] for f in reply.json()["Functions"]] == ["a", "b"]
        marker = reply.json()["NextMarker"]
        rest = call(app, "GET", path, query=f"MaxItems=2&Marker={marker}").json()
        assert [f["FunctionName"] for f in rest["Functions"]] == ["c"]
        assert "NextMarker" not in rest


def test_get_function_points_code_location_at_this_server(app: Starlette) -> None:
    call(app, "POST", "/2015-03-31/functions", create_body())
    reply = call(app, "GET", "/2015-03-31/functions/fn")
    assert reply.status == 200
    location = reply.json()["Code"]["Location"]
    assert location == "http://silo.test:9700/silo/v1/functions/fn/code"
    code = call(app, "GET", "/silo/v1/functions/fn/code")
    assert code.status == 200
    assert code.headers["content-type"] == "application/zip"
    assert code.body == make_zip()


def test_get_configuration_by_arn_and_qualifier(app: Starlette) -> None:
    call(app, "POST", "/2015-03-31/functions", create_body())
    arn = "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Afn"
    reply = call(app, "GET", f"/2015-03-31/functions/{arn}/configuration", query="Qualifier=%24LATEST")
    assert reply.status == 200
    assert reply.json()["FunctionArn"] == "arn:aws:lambda:us-east-1:000000000000:function:fn:$LATEST"
    missing = call(app, "GET", "/2015-03-31/functions/fn/configuration", query="Qualifier=9")
    assert missing.status == 404
    assert missing.headers["x-amzn-errortype"] == "ResourceNotFoundException"
    assert missing.json() == {
        "Type": "User",
        "Message": "Function not found: arn:aws:lambda:us-east-1:000000000000:function:fn:9",
    }


def test_updates_and_delete(app: Starlette) -> None:
    created = call(app, "POST", "/2015-03-31/functions", create_body()).json()
    code = json.dumps({"ZipFile": base64.b64encode(make_zip("y = 2\n")).decode()}).encode()
    updated = call(app, "PUT", "/2015-03-31/functions/fn/code", code)
    assert updated.status == 200
    assert updated.json()["CodeSha256"] != created["CodeSha256"]
    config = call(app, "PUT", "/2015-03-31/functions/fn/configuration", b'{"Timeout": 42}')
    assert config.status == 200
    assert config.json()["Timeout"] == 42
    deleted = call(app, "DELETE", "/2015-03-31/functions/fn")
    assert deleted.status == 204
    assert deleted.body == b""
    assert call(app, "GET", "/2015-03-31/functions/fn").status == 404


def test_account_settings_with_and_without_slash(app: Starlette) -> None:
    for path in ["/2016-08-19/account-settings", "/2016-08-19/account-settings/"]:
        reply = call(app, "GET", path)
        assert reply.status == 200
        assert reply.json()["AccountUsage"] == {"TotalCodeSize": 0, "FunctionCount": 0}


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_body_that_is_not_a_json_object(app: Starlette, raw: bytes) -> None:
    reply = call(app, "POST", "/2015-03-31/functions", raw)
    assert reply.status == 400
    assert reply.headers["x-amzn-errortype"] == "InvalidRequestContentException"
    assert reply.json()["message"].startswith("Could not parse request body into json")


def test_oversized_request_refused_by_declared_length(app: Starlette) -> None:
    reply = call(app, "POST", "/2015-03-31/functions", b"{}", content_length=MAX_REQUEST_BYTES + 1)
    assert reply.status == 413
    assert reply.headers["x-amzn-errortype"] == "RequestEntityTooLargeException"
    assert reply.json() == {"Message": "Request must be smaller than 70167211 bytes for the CreateFunction operation"}


def test_oversized_request_refused_while_streaming(app: Starlette) -> None:
    chunk = b" " * (8 << 20)
    reply = call(app, "POST", "/2015-03-31/functions", [chunk] * 9)
    assert reply.status == 413
    assert reply.json()["Message"].endswith("for the CreateFunction operation")
    update = call(app, "PUT", "/2015-03-31/functions/fn/code", [chunk] * 9)
    assert update.json()["Message"].endswith("for the UpdateFunctionCode operation")


def test_validation_errors_have_lambdas_wire_shape(app: Starlette) -> None:
    reply = call(app, "POST", "/2015-03-31/functions", create_body(Role="r1"))
    assert reply.status == 400
    assert reply.headers["x-amzn-errortype"] == "ValidationException"
    assert reply.json()["message"].startswith("1 validation error detected: Value 'r1' at 'role'")
    bad_max = call(app, "GET", "/2015-03-31/functions", query="MaxItems=many")
    assert bad_max.status == 400
    assert bad_max.headers["x-amzn-errortype"] == "ValidationException"


def test_duplicate_create_conflicts(app: Starlette) -> None:
    call(app, "POST", "/2015-03-31/functions", create_body())
    reply = call(app, "POST", "/2015-03-31/functions", create_body())
    assert reply.status == 409
    assert reply.json() == {"Type": "User", "message": "Function already exist: fn"}
