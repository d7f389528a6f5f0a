"""The gateway: `ANY /gateway/{function}/{proxy+}` (and `/gateway/{function}`), silo's door for end users.

A SaaS's end users arrive with an HTTP request and a JWT from the SaaS's identity provider, whose claim
says their tenant; on AWS, API Gateway (REST) with an authorizer maps that claim to `X-Amz-Tenant-Id`.
Here, for a function with a `Gateway` setting (silo.control.gateway_settings):

1. the bearer token is verified (silo.api.gateway_tokens) and the tenant read from its claim: 401 when the
   token is missing or does not verify, 403 when its tenant claim is missing or no tenant id;
2. only then is the body read, and the request becomes an API Gateway REST proxy event (payload format
   1.0), with the token's claims and the tenant under `requestContext.authorizer`;
3. the function is invoked through the router as that tenant, like a synchronous Invoke;
4. its answer (`statusCode`, `headers`, `multiValueHeaders`, `body`, `isBase64Encoded`) becomes the HTTP
   answer, as API Gateway makes it; a failed function or a malformed answer is API Gateway's 502
   `{"message": "Internal server error"}`, the reason in silo's log.

A path of no function, and of a function without a Gateway setting, are answered alike (404): the door
is open to anyone, and it should not tell which functions exist. Nothing of a refused request reaches an
environment: the router is asked only after the token and the tenant passed.

This route is not signed with SigV4 (silo.api.auth leaves `/gateway/` to it): the token is the caller's
proof, and it can only ever invoke, as the tenant its issuer vouched for.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import parse_qsl

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from silo import errors, ids
from silo.api.body import receive_body
from silo.api.gateway_errors import HEADER_NAME, BadGatewayException, NotFoundException, header_text, proxy_body
from silo.api.gateway_tokens import GatewayPolicy, Verified, bearer_token
from silo.api.invoke import SYNC_PAYLOAD_LIMIT, FunctionResolver, Invoker
from silo.api.jwks import KeySets
from silo.api.render import error_response
from silo.types import EnvKey, FunctionSpec, Invocation, InvocationResult

log = logging.getLogger(__name__)

PREFIX = "/gateway/"
PATHS = ("/gateway/{function}", "/gateway/{function}/{proxy:path}")
# API Gateway's ANY; Starlette answers HEAD wherever GET is served.
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
STAGE = "gateway"
RESPONSE_MEMBERS = frozenset({"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"})
# Set by silo from the body it sends, or about the connection, never by the function.
HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "proxy-connection"}
)


class GatewayFunctions(FunctionResolver, Protocol):
    """What the gateway asks the control plane: the function, and its silo settings."""

    def get_silo_settings(self, function_name: str) -> dict[str, Any]: ...


class GatewayEndpoint:
    """The ASGI endpoint of both gateway paths."""

    def __init__(self, functions: GatewayFunctions, router: Invoker, key_sets: KeySets | None = None) -> None:
        self._functions = functions
        self._router = router
        self._key_sets = key_sets or KeySets()
        # Each function's policy, by name, with the revision it was read at: settings change the revision.
        self._policies: dict[str, tuple[str, GatewayPolicy | None]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, headers, body = await self._serve(scope, receive)
        except errors.LambdaError as exc:
            if isinstance(exc, BadGatewayException):
                log.warning("gateway %s %s answered 502: %s", scope["method"], scope["path"], exc.reason)
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("gateway %s %s refused (%d): %s", scope["method"], scope["path"], exc.status, exc.message)
            await error_response(exc)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _serve(self, scope: Scope, receive: Receive) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        params: dict[str, str] = scope["path_params"]
        name = params["function"]
        spec, policy = await self._policy(name)
        verified = await policy.verify(bearer_token(_header(scope, b"authorization")), spec)
        body = await receive_body(receive, _header(scope, b"content-length") or "", SYNC_PAYLOAD_LIMIT, "Gateway")
        request_id = ids.request_id()
        payload = json.dumps(proxy_event(scope, params.get("proxy"), body, verified, spec, request_id)).encode()
        if len(payload) > SYNC_PAYLOAD_LIMIT:
            raise errors.RequestEntityTooLargeException(
                f"The request, as the function's event, is {len(payload)} bytes; an invocation's event may be at "
                f"most {SYNC_PAYLOAD_LIMIT} bytes (a body that is not UTF-8 text grows by a third, in base64)."
            )
        tenant = verified.tenant_id
        inv = Invocation(request_id=request_id, payload=payload, tenant_id=tenant, invoked_arn=spec.function_arn)
        result = await self._router.invoke(EnvKey(spec.function_arn, spec.version, tenant), spec, inv)
        status, headers, out = proxy_answer(result)
        if not any(k == b"x-amzn-requestid" for k, _ in headers):
            headers.append((b"x-amzn-requestid", request_id.encode()))
        return status, headers, out

    async def _policy(self, name: str) -> tuple[FunctionSpec, GatewayPolicy]:
        missing = NotFoundException(
            f"No gateway is served at {PREFIX}{name}: no function of that name has a Gateway setting."
        )
        try:
            spec = self._functions.resolve(name, None)
        except errors.LambdaError:
            raise missing from None
        if spec.function_name != name:  # a name only: an ARN or a qualifier would be another path to it
            raise missing
        cached = self._policies.get(name)
        if cached is None or cached[0] != spec.revision_id:
            try:
                settings = await asyncio.to_thread(self._functions.get_silo_settings, name)
            except errors.ResourceNotFoundException:
                raise missing from None
            setting = settings.get("Gateway")
            cached = (spec.revision_id, None if setting is None else GatewayPolicy(setting, self._key_sets))
            self._policies[name] = cached
        if cached[1] is None:
            raise missing
        return spec, cached[1]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def proxy_event(
    scope: Scope, proxy: str | None, body: bytes, verified: Verified, spec: FunctionSpec, request_id: str
) -> dict[str, Any]:
    """The API Gateway REST proxy event (payload format 1.0) of a request. Header names arrive lower-cased
    (as HTTP/2 and API Gateway's HTTP APIs send them); `headers` and `queryStringParameters` hold each
    name's last value, the `multiValue...` members all of them, as API Gateway does."""
    headers = _grouped((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
    query_string: bytes = scope["query_string"]
    query = _grouped(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    resource = "/{proxy+}" if proxy else "/"
    method: str = scope["method"]
    now = time.time()
    host = headers.get("host", [""])[-1]
    client = scope.get("client")
    text: str | None
    try:
        text, encoded = (body.decode("utf-8") if body else None), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
    claims = verified.claims
    authorizer: dict[str, Any] = {"claims": claims, "tenantId": verified.tenant_id}
    if isinstance(claims.get("sub"), str):
        authorizer["principalId"] = claims["sub"]
    return {
        "resource": resource,
        "path": "/" + (proxy or ""),
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in headers.items()},
        "multiValueHeaders": headers,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": proxy} if proxy else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": spec.function_arn.split(":")[4],
            "apiId": "silo",
            "authorizer": authorizer,
            "domainName": host,
            "domainPrefix": host.split(".", 1)[0].split(":", 1)[0],
            "extendedRequestId": request_id,
            "httpMethod": method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": client[0] if client else None,
                "user": None,
                "userAgent": headers.get("user-agent", [None])[-1],
                "userArn": None,
            },
            "path": scope["path"],
            "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
            "requestId": request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "resourceId": spec.function_name,
            "resourcePath": resource,
            "stage": STAGE,
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def _answer_headers(answer: dict[str, Any]) -> list[tuple[str, str]]:
    single = answer.get("headers") or {}
    multi = answer.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        raise BadGatewayException("headers and multiValueHeaders must be objects")
    merged: dict[str, tuple[str, list[str]]] = {}
    for name, values in multi.items():
        if not isinstance(values, list):
            raise BadGatewayException(f"multiValueHeaders[{name!r}] is not a list")
        entry = merged.setdefault(name.lower(), (name, []))
        entry[1].extend(header_text(v, f"multiValueHeaders[{name!r}]") for v in values)
    for name, value in single.items():
        text = header_text(value, f"headers[{name!r}]")
        entry = merged.setdefault(name.lower(), (name, []))
        if text not in entry[1]:  # the same pair in both appears once, as on API Gateway
            entry[1].append(text)
    out: list[tuple[str, str]] = []
    for lower, (name, values) in merged.items():
        if not HEADER_NAME.fullmatch(name):
            raise BadGatewayException(f"header name {name!r} is not an HTTP token")
        if lower not in HOP_BY_HOP:
            out.extend((name, v) for v in values)
    return out


def proxy_answer(result: InvocationResult) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The HTTP answer of a function's API Gateway proxy response, or BadGatewayException (502)."""
    if result.function_error is not None:
        raise BadGatewayException(f"the function failed ({result.function_error.value}): {result.payload[:500]!r}")
    try:
        answer = json.loads(result.payload)
    except (ValueError, UnicodeDecodeError):
        raise BadGatewayException("the function's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise BadGatewayException('the function\'s answer is not a proxy response object ({"statusCode": ...})')
    unknown = sorted(set(answer) - RESPONSE_MEMBERS)
    if unknown:
        raise BadGatewayException(f"the proxy response has member(s) API Gateway does not know: {', '.join(unknown)}")
    status = answer.get("statusCode")
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise BadGatewayException(f"statusCode must be a whole number from 200 to 599; got {status!r}")
    out = proxy_body(answer, status)
    headers = _answer_headers(answer)
    raw = [(k.lower().encode("latin-1"), v.encode()) for k, v in headers]
    if not any(k == b"content-type" for k, _ in raw):
        raw.append((b"content-type", b"application/json"))
    if not any(k == b"date" for k, _ in raw):
        raw.append((b"date", formatdate(usegmt=True).encode()))
    raw.append((b"content-length", str(len(out)).encode()))
    return status, raw, out


def routes(endpoint: GatewayEndpoint) -> list[Route]:
    return [Route(path, endpoint, methods=METHODS) for path in PATHS]
