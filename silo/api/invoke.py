"""Invoke: `POST /2015-03-31/functions/{name}/invocations`, the data plane.

Parses the call, applies Lambda's tenant rules and payload limits, and hands it to the router for
`EnvKey(function, version, tenant)`. The answer carries `X-Amz-Executed-Version`, and
`X-Amz-Function-Error` / `X-Amz-Log-Result` when they apply.
"""

from __future__ import annotations

import base64
import re
from typing import Protocol
from urllib.parse import parse_qsl

from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from silo import errors, ids
from silo.api.body import load_json, receive_body
from silo.api.render import error_response
from silo.control.names import merge_qualifier, parse_function_name
from silo.types import TENANT_ID_MAX, TENANT_ID_PATTERN, EnvKey, FunctionSpec, Invocation, InvocationResult, Principal

SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024
ASYNC_PAYLOAD_LIMIT = 1024 * 1024  # Lambda's "1 MB" for InvocationType Event
# Where the authentication layer (silo.api.auth) leaves the caller in the ASGI scope.
PRINCIPAL = "silo.principal"
_TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")


class FunctionResolver(Protocol):
    def resolve(self, function_name: str, qualifier: str | None, tenant_id: str | None = None) -> FunctionSpec: ...


class Invoker(Protocol):
    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult: ...


class EventSink(Protocol):
    """Where `InvocationType: Event` calls go: stored durably before `accept` returns."""

    async def accept(
        self,
        *,
        request_id: str,
        function_name: str,
        qualifier: str | None,
        tenant_id: str | None,
        payload: bytes,
        caller_key: str | None = None,
    ) -> None: ...


def caller_tenant(principal: Principal | None, function_name: str, tenant_id: str | None) -> str | None:
    """The tenant a call runs as, given who sent it. An administrator key (and a server without
    authentication) invokes as the tenant it names, as a trusted backend does. A tenant-bound key invokes
    only the functions it names, only as its tenant: no X-Amz-Tenant-Id means that tenant, another one is
    refused."""
    if principal is None or principal.admin:
        return tenant_id
    if function_name not in principal.functions:
        raise errors.AccessDeniedException(
            f"Key {principal.key_id} is bound to tenant '{principal.tenant}' and may not invoke function "
            f"{function_name}: it may invoke only {', '.join(sorted(principal.functions))}."
        )
    if tenant_id is None:
        return principal.tenant
    if tenant_id != principal.tenant:
        raise errors.AccessDeniedException(
            f"Key {principal.key_id} is bound to tenant '{principal.tenant}' and may not invoke as tenant "
            f"'{tenant_id}'."
        )
    return tenant_id


def check_tenant(spec: FunctionSpec, tenant_id: str | None) -> None:
    """Lambda's pairing rule: a PER_TENANT function needs a tenant id, any other function refuses one."""
    if tenant_id is not None:
        if not 1 <= len(tenant_id) <= TENANT_ID_MAX:
            raise errors.InvalidParameterValueException(
                f"1 validation error detected: Value '{tenant_id}' at 'tenantId' failed to satisfy constraint: "
                f"Member must have length between 1 and {TENANT_ID_MAX}"
            )
        if not _TENANT_ID_RE.fullmatch(tenant_id):
            raise errors.InvalidParameterValueException(
                f"1 validation error detected: Value '{tenant_id}' at 'tenantId' failed to satisfy constraint: "
                f"Member must satisfy regular expression pattern: {TENANT_ID_PATTERN}"
            )
        if tenant_id[0] == " " or tenant_id[-1] == " ":
            # The pattern allows it, but the id would not survive its trip: HTTP parsers drop the spaces at
            # the start of a header value and runtimes strip both ends, so silo would route on 'a ' while
            # the function is told 'a' and keys that tenant's data with another's name.
            raise errors.InvalidParameterValueException(
                f"Tenant id '{tenant_id}' begins or ends with a space, which headers do not carry intact: "
                f"the function would be told '{tenant_id.strip(' ')}'. Remove the spaces at its ends."
            )
    if spec.per_tenant and tenant_id is None:
        raise errors.InvalidParameterValueException(
            f"Function {spec.function_arn} has tenant isolation mode PER_TENANT: every invocation must name "
            "its tenant in the X-Amz-Tenant-Id header (boto3: TenantId=..., AWS CLI: --tenant-id)."
        )
    if not spec.per_tenant and tenant_id is not None:
        raise errors.InvalidParameterValueException(
            f"Function {spec.function_arn} does not have tenant isolation mode enabled, so it cannot be invoked "
            "with a tenant id: drop the X-Amz-Tenant-Id header, or create the function with "
            'TenancyConfig {"TenantIsolationMode": "PER_TENANT"}.'
        )


def check_json(payload: bytes) -> None:
    """An event may be any JSON value, and nothing else."""
    load_json(payload)


PATH_PREFIX = "/2015-03-31/functions/"
PATH_SUFFIX = "/invocations"
PATH = PATH_PREFIX + "{name}" + PATH_SUFFIX
_HEADERS = (
    b"x-amz-invocation-type",
    b"x-amz-tenant-id",
    b"x-amz-client-context",
    b"x-amz-log-type",
    b"content-length",
)
_JSON = (b"content-type", b"application/json")


class InvokeEndpoint:
    """Invoke as a bare ASGI endpoint. Every call of every function comes through here, so it reads the
    scope and writes its answer itself: Starlette's request and response objects cost about a tenth of
    the daemon's time per call. The server calls it first (`accepts`), past the route table."""

    def __init__(self, functions: FunctionResolver, router: Invoker, events: EventSink | None) -> None:
        self._functions = functions
        self._router = router
        self._events = events

    @staticmethod
    def accepts(scope: Scope) -> bool:
        path: str = scope["path"]
        return (
            scope["method"] == "POST"
            and path.startswith(PATH_PREFIX)
            and path.endswith(PATH_SUFFIX)
            and "/" not in path[len(PATH_PREFIX) : -len(PATH_SUFFIX)]
            and len(path) > len(PATH_PREFIX) + len(PATH_SUFFIX)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, headers, body = await self._invoke(scope, receive)
        except errors.LambdaError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _invoke(self, scope: Scope, receive: Receive) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        name: str = scope["path"][len(PATH_PREFIX) : -len(PATH_SUFFIX)]
        headers: dict[bytes, str] = {}
        for key, value in scope["headers"]:
            if key in _HEADERS and key not in headers:
                headers[key] = value.decode("latin-1")
        query: bytes = scope["query_string"]
        qualifier = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)).get("Qualifier") if query else None
        principal: Principal | None = scope.get(PRINCIPAL)
        tenant_id = headers.get(b"x-amz-tenant-id")
        if principal is not None and not principal.admin:
            # Decided before the function is looked up: a tenant-bound key learns nothing of other functions.
            tenant_id = caller_tenant(principal, parse_function_name(name, namespaced=True).name, tenant_id)
        spec = self._functions.resolve(name, qualifier, tenant_id)
        invocation_type = headers.get(b"x-amz-invocation-type", "RequestResponse")
        if invocation_type not in INVOCATION_TYPES:
            raise errors.InvalidParameterValueException(
                f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )
        check_tenant(spec, tenant_id)
        limit = ASYNC_PAYLOAD_LIMIT if invocation_type == "Event" else SYNC_PAYLOAD_LIMIT
        payload = await receive_body(receive, headers.get(b"content-length", ""), limit, "InvokeFunction")
        if not payload:
            payload = b"{}"
        check_json(payload)
        request_id = ids.request_id()
        if invocation_type == "DryRun":
            return 204, [(b"x-amzn-requestid", request_id.encode())], b""
        if invocation_type == "Event":
            if self._events is None:
                raise errors.ServiceException("This silo server runs no dispatcher for InvocationType Event.")
            # Stored (committed) before the 202: an accepted event is never lost. X-Amz-Log-Type and
            # X-Amz-Client-Context apply to synchronous calls only, so they are ignored here, as on Lambda.
            await self._events.accept(
                request_id=request_id,
                function_name=spec.function_name,
                qualifier=merge_qualifier(parse_function_name(name, namespaced=True), qualifier),
                tenant_id=tenant_id,
                payload=payload,
                caller_key=None if principal is None else principal.key_id,
            )
            return 202, [(b"x-amzn-requestid", request_id.encode()), (b"content-length", b"0")], b""
        addressed = (
            merge_qualifier(parse_function_name(name, namespaced=True), qualifier) if ":" in name or qualifier else None
        )
        inv = Invocation(
            request_id=request_id,
            payload=payload,
            tenant_id=tenant_id,
            # The ARN as invoked, qualified when the call named a version or an alias (Lambda's
            # Lambda-Runtime-Invoked-Function-Arn, the context's invoked_function_arn).
            invoked_arn=spec.function_arn if addressed is None else f"{spec.function_arn}:{addressed}",
            client_context=headers.get(b"x-amz-client-context"),
            want_log_tail=headers.get(b"x-amz-log-type") == "Tail",
            caller_key=None if principal is None else principal.key_id,
        )
        result = await self._router.invoke(EnvKey(spec.function_arn, spec.version, tenant_id), spec, inv)
        out = [
            (b"x-amzn-requestid", request_id.encode()),
            (b"x-amz-executed-version", result.executed_version.encode("latin-1")),
            _JSON,
            (b"content-length", str(len(result.payload)).encode()),
        ]
        if result.function_error is not None:
            out.append((b"x-amz-function-error", result.function_error.value.encode()))
        if inv.want_log_tail:
            out.append((b"x-amz-log-result", base64.b64encode(result.log_tail)))
        return 200, out, result.payload


def route(endpoint: InvokeEndpoint) -> Route:
    """Invoke in the route table, for what the hot path does not take (a wrong method gets its 405 there)."""
    return Route(PATH, endpoint, methods=["POST"])
