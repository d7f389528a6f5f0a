"""The function URL door: `ANY /url/{url-id}/{path}`, where silo serves the URLs of
CreateFunctionUrlConfig (on Lambda, `https://<url-id>.lambda-url.<region>.on.aws/{path}`).

For the URL of that id (silo.control.function_urls):

1. AuthType AWS_IAM: the caller signed the request with SigV4 (service `lambda`), as boto3's signer
   does; the authentication layer (silo.api.auth) verified it before this runs, and this refuses (403) a
   request that reaches it without a caller (the URL's AuthType changed under it). AuthType NONE: open to
   anyone. Lambda also checks the resource policy for `lambda:InvokeFunctionUrl` (with
   `FunctionUrlAuthType`) in both cases; silo does not: resource policies are stored, not enforced.
2. With `Cors` set, a CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered
   here, without invoking the function, and every answer to an allowed Origin carries the configured
   `Access-Control-*` headers in place of any the function set, as on Lambda.
3. The request becomes Lambda's function URL event (payload format version 2.0) and the function is
   invoked through the router, like a synchronous Invoke of the URL's function or alias.
4. Its answer becomes the HTTP answer by Lambda's rules: an object with `statusCode` gives `statusCode`,
   `headers`, `cookies` (one Set-Cookie each) and `body` (base64-decoded with `isBase64Encoded`); any
   other JSON value is a 200 with that JSON as the body. A function error (an exception, a timeout, an
   answer over 6 MB) or a malformed answer is a 502, the reason in silo's log.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from email.utils import formatdate
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from silo import errors, ids
from silo.api.body import receive_body
from silo.api.gateway_errors import HEADER_NAME, BadGatewayException, NotFoundException, header_text, proxy_body
from silo.api.invoke import PRINCIPAL, SYNC_PAYLOAD_LIMIT, FunctionResolver, Invoker, check_tenant
from silo.api.render import error_response
from silo.control.function_urls import URL_PATH, FunctionUrlRecord
from silo.control.names import LATEST
from silo.types import EnvKey, Invocation, InvocationResult, Principal

log = logging.getLogger(__name__)

PATHS = ("/url/{url_id}", "/url/{url_id}/{path:path}")
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# Set by silo from the body it sends, or about the connection, never by the function.
HOP_BY_HOP = frozenset(
    {"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "proxy-connection"}
)
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/xml",
        "application/x-www-form-urlencoded",
        "application/graphql",
        "application/yaml",
    }
)


class UrlFunctions(FunctionResolver, Protocol):
    """What the door asks the control plane: the URL of an id, and the function it names."""

    def function_url(self, url_id: str) -> FunctionUrlRecord | None: ...


def _header_list(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]


def _is_text(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return not kind or kind.startswith("text/") or kind in _TEXT_TYPES or kind.endswith(("+json", "+xml"))


def url_event(
    scope: Scope,
    record: FunctionUrlRecord,
    body: bytes,
    account: str,
    principal: Principal | None,
    request_id: str,
    now: float,
) -> dict[str, Any]:
    """Lambda's function URL event (payload format 2.0) of a request. Header names are lower-cased and a
    name's values joined with commas; the Cookie header becomes `cookies`; query parameters' values are
    joined with commas; the body is text when its Content-Type is textual and it is UTF-8, else base64."""
    prefix = f"{URL_PATH}{record.url_id}"
    raw_path_bytes: bytes = scope.get("raw_path") or scope["path"].encode()
    raw_path = raw_path_bytes.decode("latin-1")[len(prefix) :] or "/"
    path = unquote(raw_path)
    query: str = scope["query_string"].decode("latin-1")
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in _header_list(scope):
        if name == "cookie":
            cookies.extend(part.strip() for part in value.split(";") if part.strip())
        elif name in headers:
            headers[name] = f"{headers[name]},{value}"
        else:
            headers[name] = value
    client = scope.get("client")
    source_ip = client[0] if client else "127.0.0.1"
    server = scope.get("server")
    headers.setdefault("x-forwarded-for", source_ip)
    headers.setdefault("x-forwarded-proto", scope.get("scheme", "http"))
    if server:
        headers.setdefault("x-forwarded-port", str(server[1]))
    parameters: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        parameters[key] = f"{parameters[key]},{value}" if key in parameters else value
    method: str = scope["method"]
    host = headers.get("host", "")
    context: dict[str, Any] = {
        "accountId": "anonymous",
        "apiId": record.url_id,
        "domainName": host,
        "domainPrefix": record.url_id,
        "http": {
            "method": method,
            "path": path,
            "protocol": f"HTTP/{scope.get('http_version', '1.1')}",
            "sourceIp": source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
        "timeEpoch": int(now * 1000),
    }
    if record.auth_type == "AWS_IAM" and principal is not None and principal.key_id is not None:
        # The caller is a silo key of this server's account: its id stands where Lambda puts the IAM caller's.
        context["accountId"] = account
        context["authorizer"] = {
            "iam": {
                "accessKey": principal.key_id,
                "accountId": account,
                "callerId": principal.key_id,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": f"arn:aws:iam::{account}:user/{principal.key_id}",
                "userId": principal.key_id,
            }
        }
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if parameters:
        event["queryStringParameters"] = parameters
    event["requestContext"] = context
    encoded = False
    if body:
        text: str | None = None
        if _is_text(headers.get("content-type", "")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            text, encoded = base64.b64encode(body).decode(), True
        event["body"] = text
    event["pathParameters"] = None
    event["isBase64Encoded"] = encoded
    event["stageVariables"] = None
    return event


def url_answer(result: InvocationResult) -> tuple[int, list[tuple[str, str]], bytes]:
    """The HTTP answer of a function's result by Lambda's rules for function URLs, or a 502."""
    if result.function_error is not None:
        raise BadGatewayException(f"the function failed ({result.function_error.value}): {result.payload[:500]!r}")
    try:
        answer = json.loads(result.payload)
    except (ValueError, UnicodeDecodeError):
        raise BadGatewayException("the function's answer is not JSON") from None
    if not isinstance(answer, dict) or "statusCode" not in answer:
        return 200, [("content-type", "application/json")], result.payload
    status = answer["statusCode"]
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadGatewayException(f"statusCode must be a whole number from 100 to 599; got {status!r}")
    given = answer.get("headers") or {}
    if not isinstance(given, dict):
        raise BadGatewayException("headers must be an object")
    headers: list[tuple[str, str]] = []
    for name, value in given.items():
        if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
            raise BadGatewayException(f"header name {name!r} is not an HTTP token")
        if name.lower() not in HOP_BY_HOP:
            headers.append((name.lower(), header_text(value, f"headers[{name!r}]")))
    cookies = answer.get("cookies") or []
    if not isinstance(cookies, list):
        raise BadGatewayException("cookies must be a list of strings")
    for i, cookie in enumerate(cookies):
        if not isinstance(cookie, str):
            raise BadGatewayException(f"cookies[{i}] is not a string")
        headers.append(("set-cookie", header_text(cookie, f"cookies[{i}]")))
    out = proxy_body(answer, status)
    if not any(k == "content-type" for k, _ in headers):
        headers.append(("content-type", "application/json"))
    return status, headers, out


def _origin_allowed(cors: dict[str, Any], origin: str) -> bool:
    allowed = [o.lower() for o in cors.get("AllowOrigins", [])]
    return "*" in allowed or origin.lower() in allowed


def cors_headers(cors: dict[str, Any], origin: str | None, *, preflight: bool) -> list[tuple[str, str]]:
    """The Access-Control-* headers of an answer to `origin` under a URL's Cors (none when it is not allowed)."""
    if origin is None or not _origin_allowed(cors, origin):
        return []
    credentials = bool(cors.get("AllowCredentials"))
    wildcard = "*" in cors.get("AllowOrigins", []) and not credentials
    out = [("access-control-allow-origin", "*" if wildcard else origin)]
    if not wildcard:
        out.append(("vary", "Origin"))
    if credentials:
        out.append(("access-control-allow-credentials", "true"))
    if cors.get("ExposeHeaders"):
        out.append(("access-control-expose-headers", ",".join(cors["ExposeHeaders"])))
    if preflight:
        if cors.get("AllowMethods"):
            out.append(("access-control-allow-methods", ",".join(cors["AllowMethods"])))
        if cors.get("AllowHeaders"):
            out.append(("access-control-allow-headers", ",".join(cors["AllowHeaders"])))
        if cors.get("MaxAge") is not None:
            out.append(("access-control-max-age", str(cors["MaxAge"])))
    return out


class FunctionUrlEndpoint:
    """The ASGI endpoint of both URL paths. `signed`: the server authenticates callers (SigV4), so an
    AWS_IAM URL must have been reached by a verified caller."""

    def __init__(self, functions: UrlFunctions, router: Invoker, account: str, *, signed: bool) -> None:
        self._functions = functions
        self._router = router
        self._account = account
        self._signed = signed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, headers, body = await self._serve(scope, receive)
        except errors.LambdaError as exc:
            if isinstance(exc, BadGatewayException):
                log.warning("function URL %s %s answered 502: %s", scope["method"], scope["path"], exc.reason)
            await error_response(exc)(scope, receive, send)
            return
        raw = [(k.encode("latin-1"), v.encode()) for k, v in headers]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _serve(self, scope: Scope, receive: Receive) -> tuple[int, list[tuple[str, str]], bytes]:
        url_id: str = scope["path_params"]["url_id"]
        record = self._functions.function_url(url_id)
        if record is None:
            raise NotFoundException(f"No function URL is served at {URL_PATH}{url_id}/: no URL has that id.")
        principal: Principal | None = scope.get(PRINCIPAL)
        if record.auth_type == "AWS_IAM" and self._signed and principal is None:
            # The layer passed it unsigned while the URL was NONE; it is AWS_IAM now: fail closed.
            raise errors.AccessDeniedException("Forbidden")
        request_id = ids.request_id()
        headers = dict(_header_list(scope))
        cors = record.cors
        origin = headers.get("origin")
        preflight = scope["method"] == "OPTIONS" and origin is not None and "access-control-request-method" in headers
        if cors is not None and preflight:
            return 200, [*cors_headers(cors, origin, preflight=True), ("x-amzn-requestid", request_id)], b""
        body = await receive_body(receive, headers.get("content-length", ""), SYNC_PAYLOAD_LIMIT, "InvokeFunctionUrl")
        spec = self._functions.resolve(record.name, None if record.qualifier == LATEST else record.qualifier)
        check_tenant(spec, None)
        event = url_event(scope, record, body, self._account, principal, request_id, time.time())
        payload = json.dumps(event, separators=(",", ":")).encode()
        if len(payload) > SYNC_PAYLOAD_LIMIT:
            raise errors.RequestEntityTooLargeException(
                f"The request, as the function's event, is {len(payload)} bytes; an invocation's event may be at "
                f"most {SYNC_PAYLOAD_LIMIT} bytes (a body that is not text grows by a third, in base64)."
            )
        invoked = spec.function_arn if record.qualifier == LATEST else f"{spec.function_arn}:{record.qualifier}"
        inv = Invocation(
            request_id=request_id,
            payload=payload,
            tenant_id=None,
            invoked_arn=invoked,
            caller_key=None if principal is None else principal.key_id,
        )
        result = await self._router.invoke(EnvKey(spec.function_arn, spec.version, None), spec, inv)
        status, out_headers, out = url_answer(result)
        if cors is not None:
            out_headers = [(k, v) for k, v in out_headers if not k.startswith("access-control-")]
            out_headers.extend(cors_headers(cors, origin, preflight=False))
        out_headers.append(("x-amzn-requestid", request_id))
        if not any(k == "date" for k, _ in out_headers):
            out_headers.append(("date", formatdate(usegmt=True)))
        return status, out_headers, out


def routes(endpoint: FunctionUrlEndpoint) -> list[Route]:
    return [Route(path, endpoint, methods=METHODS) for path in PATHS]
