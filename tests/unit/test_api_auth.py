"""The authentication layer over a fake key store and a fake clock: what it lets through, to which route, as whom."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from silo import sigv4
from silo.api.auth import Authentication, body_limit, check_auth_setting
from silo.api.invoke import PRINCIPAL
from silo.control.keys import ActiveKey
from silo.types import Principal

NOW = 1_800_000_000.0
ADMIN = ActiveKey(Principal("SILOADMIN", True), "admin-secret", None)
TENANT = ActiveKey(Principal("SILOTENANT", False, "acme", frozenset({"f"})), "tenant-secret", None)
INVOKE = "/2015-03-31/functions/f/invocations"


class Keys:
    def lookup(self, key_id: str) -> ActiveKey | None:
        return {k.principal.key_id: k for k in (ADMIN, TENANT)}.get(key_id)


class Route:
    """What the wrapped application saw: the caller, and the body it could read."""

    def __init__(self) -> None:
        self.seen: list[tuple[Principal, bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.seen.append((scope[PRINCIPAL], message["body"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(
    method: str,
    path: str,
    *,
    key: ActiveKey | None = ADMIN,
    body: bytes = b"{}",
    signed_at: float = NOW,
    extra: dict[str, str] | None = None,
    sent_body: bytes | None = None,
    layer: Authentication | None = None,
    route: Route | None = None,
) -> tuple[int, dict[str, Any], Route]:
    headers = {"Content-Type": "application/json", **(extra or {})}
    if key is not None:
        headers.update(
            sigv4.sign_headers(
                access_key=key.principal.key_id or "",
                secret=key.secret,
                method=method,
                host="silo",
                raw_path=path,
                raw_query="",
                headers=headers,
                body=body,
                region="us-east-1",
                now=signed_at,
            )
        )
    if route is None or layer is None:
        route = Route()
        layer = Authentication(route, Keys(), region="us-east-1", body_limit=body_limit(1000, 100), clock=lambda: NOW)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"silo"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
    }
    sent: list[dict[str, Any]] = []
    payload = body if sent_body is None else sent_body

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": payload, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(layer(scope, receive, send))
    status = sent[0]["status"]
    answer = json.loads(sent[1]["body"]) if status != 200 else {}
    code = dict(sent[0]["headers"]).get(b"x-amzn-errortype", b"").decode()
    return status, {"code": code, **answer}, route


def test_a_signed_request_reaches_its_route_as_its_key_with_its_body() -> None:
    status, _, route = call("POST", INVOKE, body=b'{"a": 1}')
    assert status == 200 and route.seen == [(ADMIN.principal, b'{"a": 1}')]


def test_each_request_is_checked_against_its_own_signature() -> None:
    """What one layer keeps from request to request (a parsed header, a day's key) decides nothing alone."""
    route = Route()
    layer = Authentication(route, Keys(), region="us-east-1", body_limit=body_limit(1000, 100), clock=lambda: NOW)
    for body in (b'{"n": 1}', b'{"n": 2}', b'{"n": 3}'):
        assert call("POST", INVOKE, body=body, layer=layer, route=route)[0] == 200
    # A request whose header differs from an accepted one by its signature alone, and its body.
    status, answer, _ = call("POST", INVOKE, body=b'{"n": 1}', sent_body=b'{"n": 4}', layer=layer, route=route)
    assert (status, answer["code"]) == (403, "InvalidSignatureException")
    assert [body for _, body in route.seen] == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']


def test_the_five_minutes_are_the_servers_clock_and_the_messages_awss() -> None:
    assert call("GET", "/2015-03-31/functions", signed_at=NOW - 300)[0] == 200
    status, answer, route = call("GET", "/2015-03-31/functions", signed_at=NOW - 301)
    assert (status, answer["code"]) == (403, "InvalidSignatureException") and not route.seen
    assert answer["message"].startswith(
        "Signature expired: 20270115T075459Z is now earlier than 20270115T075500Z (20270115T080000Z - 5 min.)"
    )
    status, answer, _ = call("GET", "/2015-03-31/functions", signed_at=NOW + 301)
    assert answer["message"].startswith("Signature not yet current: 20270115T080501Z is still later than")


def test_unsigned_unknown_and_tampered_requests_reach_no_route() -> None:
    stranger = ActiveKey(Principal("SILOSTRANGER", True), "x", None)
    cases = [
        (call("POST", INVOKE, key=None), "MissingAuthenticationTokenException"),
        (call("POST", INVOKE, key=stranger), "UnrecognizedClientException"),
        (call("POST", INVOKE, sent_body=b'{"b": 2}'), "InvalidSignatureException"),
        (call("POST", INVOKE, key=None, extra={"Authorization": "Bearer x"}), "IncompleteSignatureException"),
    ]
    for (status, answer, route), code in cases:
        assert (status, answer["code"]) == (403, code), answer
        assert not route.seen


def test_a_tenant_bound_key_reaches_invoke_only() -> None:
    status, _, route = call("POST", INVOKE, key=TENANT)
    assert status == 200 and route.seen[0][0].tenant == "acme"
    status, answer, route = call("GET", "/2015-03-31/functions", key=TENANT)
    assert (status, answer["code"]) == (403, "AccessDeniedException") and not route.seen
    assert "SILOTENANT" in answer["Message"] and "'acme'" in answer["Message"]


def open_call(path: str, url_auth: Callable[[str], str | None] | None = None) -> int:
    """The status of an unsigned GET of `path` through the layer (`url_auth`: the function URLs' AuthType)."""
    route = Route()
    layer = Authentication(route, Keys(), region="us-east-1", body_limit=body_limit(1000, 100), url_auth=url_auth)
    scope = {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": [], PRINCIPAL: None}
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(layer(scope, receive, send))
    status: int = sent[0]["status"]
    return status


def test_open_paths_need_no_signature() -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/.well-known/jwks.json", "/gateway/f/x"):
        assert open_call(path) == 200, path
    assert open_call("/silo/v1/keys") == 403


def test_function_urls_are_open_by_their_auth_type() -> None:
    kinds = {"open": "NONE", "iam": "AWS_IAM"}
    assert open_call("/url/open/a/b", kinds.get) == 200
    assert open_call("/url/gone/", kinds.get) == 200  # no such URL: the door answers its 404
    assert open_call("/url/iam/a", kinds.get) == 403
    # Without the URLs' AuthType to go by, nothing under /url/ is open.
    assert open_call("/url/open/a") == 403


def test_no_authentication_only_on_loopback() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.8.9.10"):
        check_auth_setting("none", host)
    for host in ("0.0.0.0", "10.0.0.1", "::", "example.com"):
        try:
            check_auth_setting("none", host)
        except ValueError as exc:
            assert "loopback" in str(exc)
        else:
            raise AssertionError(f"--auth none allowed on {host}")
    check_auth_setting("sigv4", "0.0.0.0")
