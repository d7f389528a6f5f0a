"""Invoke: `POST /2015-03-31/functions/{name}/invocations`, the data plane.

Parses the call, applies Lambda's tenant rules and payload limits, and hands it to the router for
`EnvKey(function, version, tenant)`. The answer carries `X-Amz-Executed-Version`, and
`X-Amz-Function-Error` / `X-Amz-Log-Result` when they apply.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo import errors
from silo.api.body import read_body
from silo.control.names import merge_qualifier, parse_function_name
from silo.types import EnvKey, FunctionSpec, Invocation, InvocationResult

SYNC_PAYLOAD_LIMIT = 6 * 1024 * 1024
ASYNC_PAYLOAD_LIMIT = 1024 * 1024  # Lambda's "1 MB" for InvocationType Event
TENANT_ID_MAX = 256
TENANT_ID_PATTERN = r"[a-zA-Z0-9\._:\/=+\-@ ]+"
_TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")


class FunctionResolver(Protocol):
    def resolve(self, function_name: str, qualifier: str | None) -> FunctionSpec: ...


class Invoker(Protocol):
    async def invoke(self, key: EnvKey, spec: FunctionSpec, inv: Invocation) -> InvocationResult: ...


class EventSink(Protocol):
    """Where `InvocationType: Event` calls go: stored durably before `accept` returns."""

    async def accept(
        self, *, request_id: str, function_name: str, qualifier: str | None, tenant_id: str | None, payload: bytes
    ) -> None: ...


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
    try:
        json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {exc}"
        ) from None


def routes(functions: FunctionResolver, router: Invoker, events: EventSink | None = None) -> list[Route]:
    async def invoke(request: Request) -> Response:
        headers = request.headers
        spec = functions.resolve(request.path_params["name"], request.query_params.get("Qualifier"))
        invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
        if invocation_type not in INVOCATION_TYPES:
            raise errors.InvalidParameterValueException(
                f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed to satisfy "
                "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )
        tenant_id = headers.get("x-amz-tenant-id")
        check_tenant(spec, tenant_id)
        limit = ASYNC_PAYLOAD_LIMIT if invocation_type == "Event" else SYNC_PAYLOAD_LIMIT
        payload = await read_body(request, limit, "InvokeFunction")
        if not payload:
            payload = b"{}"
        check_json(payload)
        if invocation_type == "DryRun":
            return Response(status_code=204, headers={"x-amzn-RequestId": str(uuid.uuid4())})
        if invocation_type == "Event":
            if events is None:
                raise errors.ServiceException("This silo server runs no dispatcher for InvocationType Event.")
            # Stored (committed) before the 202: an accepted event is never lost. X-Amz-Log-Type and
            # X-Amz-Client-Context apply to synchronous calls only, so they are ignored here, as on Lambda.
            name = request.path_params["name"]
            qualifier = merge_qualifier(
                parse_function_name(name, namespaced=True), request.query_params.get("Qualifier")
            )
            request_id = str(uuid.uuid4())
            await events.accept(
                request_id=request_id,
                function_name=spec.function_name,
                qualifier=qualifier,
                tenant_id=tenant_id,
                payload=payload,
            )
            return Response(status_code=202, headers={"x-amzn-RequestId": request_id})
        inv = Invocation(
            request_id=str(uuid.uuid4()),
            payload=payload,
            tenant_id=tenant_id,
            invoked_arn=spec.function_arn,
            client_context=headers.get("x-amz-client-context"),
            want_log_tail=headers.get("x-amz-log-type") == "Tail",
        )
        result = await router.invoke(EnvKey(spec.function_arn, spec.version, tenant_id), spec, inv)
        out = {"x-amzn-RequestId": inv.request_id, "X-Amz-Executed-Version": result.executed_version}
        if result.function_error is not None:
            out["X-Amz-Function-Error"] = result.function_error.value
        if inv.want_log_tail:
            out["X-Amz-Log-Result"] = base64.b64encode(result.log_tail).decode()
        return Response(result.payload, status_code=200, headers=out, media_type="application/json")

    return [Route("/2015-03-31/functions/{name}/invocations", invoke, methods=["POST"])]
