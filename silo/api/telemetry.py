"""silo's own telemetry routes: `/metrics`, a function's logs and per-tenant summary, and metering.

    GET /metrics                                         Prometheus text format
    GET /silo/v1/functions/{name}/logs                   ?tenant= &request_id= &stream= &since= &until= &limit= &cursor=
    GET /silo/v1/functions/{name}/tenants                ?limit= &cursor=
    GET /silo/v1/functions/{name}/tenants/{tenant}
    GET /silo/v1/metering                                ?function= &tenant= &from= &to= &limit= &cursor=
    GET /silo/v1/server                                  the sandbox backends; whether tenants are isolated

Times (`since`, `until`, `from`, `to`) are epoch milliseconds, a duration back from now (`90s`,
`10m`, `2h`, `7d`) or an ISO 8601 time. Logs come oldest first; without `cursor` or `since` the
newest `limit` events. `NextToken` continues after the last event returned (after everything
stored so far when nothing matched), which is how `silo logs --follow` polls.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo import errors
from silo.api import render
from silo.api.query import SQL_INT_MAX, position, whole_number
from silo.telemetry.events import EventStore, LogQuery, MeteringQuery
from silo.telemetry.metrics import CONTENT_TYPE
from silo.telemetry.platform import iso_time
from silo.telemetry.recorder import Telemetry, TenantSummary
from silo.telemetry.tenants import QUANTILE_RELATIVE_ERROR
from silo.types import ColdStart, FunctionSpec

MAX_LIMIT = 10_000
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class FunctionResolver(Protocol):
    def resolve(self, function_name: str, qualifier: str | None) -> FunctionSpec: ...


def parse_time(raw: str | None, name: str, now_ms: int | None = None) -> int | None:
    """Epoch ms from `1700000000000`, `10m` (ago) or `2025-01-31T12:00:00Z`.

    A time past what the store can hold is brought to its edge: every stored time lies inside, so
    `since` a thousand centuries ago still means everything, and `until` then means nothing.
    """
    if raw is None or raw == "":
        return None
    raw = raw.strip()
    epoch_ms = whole_number(raw)
    if epoch_ms is not None:
        return _stored_time(epoch_ms)
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    match = _DURATION.fullmatch(raw)
    if match:
        return _stored_time(now_ms - int(match[1]) * _UNIT_MS[match[2]])
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise errors.InvalidParameterValueException(
            f"{name} must be epoch milliseconds, a duration back from now such as 10m, 2h or 7d, "
            f"or an ISO 8601 time such as 2025-01-31T12:00:00Z; got {raw!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _stored_time(ms: int) -> int:
    return max(-SQL_INT_MAX, min(ms, SQL_INT_MAX))


def parse_limit(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    limit = whole_number(raw)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise errors.InvalidParameterValueException(f"limit must be a whole number from 1 to {MAX_LIMIT}; got {raw!r}")
    return limit


def parse_cursor(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    cursor = position(raw)
    if cursor is None:
        raise errors.InvalidParameterValueException(
            f"cursor must be a NextToken returned by an earlier call; got {raw!r}"
        )
    return cursor


def _encode_token(tenant_id: str) -> str:
    return base64.urlsafe_b64encode(tenant_id.encode()).decode()


def _decode_token(raw: str) -> str:
    try:
        return base64.urlsafe_b64decode(raw.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise errors.InvalidParameterValueException(
            f"cursor must be a NextToken returned by an earlier call; got {raw!r}"
        ) from None


def tenant_document(summary: TenantSummary) -> dict[str, Any]:
    s = summary.stats
    p50 = s.durations.quantile(0.5)
    p99 = s.durations.quantile(0.99)
    return {
        "TenantId": summary.tenant_id,
        "Calls": s.calls,
        "Errors": s.errors,
        "Throttles": s.throttles,
        "ColdStarts": {
            kind.value.capitalize(): s.cold_starts.get(kind.value, 0) for kind in ColdStart if kind.value != "warm"
        },
        "DurationMs": {
            "P50": None if p50 is None else round(p50, 3),
            "P99": None if p99 is None else round(p99, 3),
        },
        "LiveEnvironments": summary.live_environments,
        "FirstSeen": iso_time(s.first_seen_ms / 1000) if s.first_seen_ms else None,
        "LastSeen": iso_time(s.last_seen_ms / 1000) if s.last_seen_ms else None,
    }


class TelemetryRoutes:
    def __init__(self, functions: FunctionResolver, telemetry: Telemetry) -> None:
        self.functions = functions
        self.telemetry = telemetry

    def _store(self) -> EventStore:
        if self.telemetry.store is None:
            raise errors.ServiceException(
                "this server keeps no logs or metering events (it was started without a store)"
            )
        return self.telemetry.store

    def _function(self, raw: str) -> str:
        return self.functions.resolve(raw, None).function_name

    async def metrics(self, request: Request) -> Response:
        return Response(self.telemetry.metrics.exposition(), media_type=CONTENT_TYPE)

    async def logs(self, request: Request) -> Response:
        q = request.query_params
        raw_name = request.path_params["function_name"]
        try:
            function, missing = self._function(raw_name), None
        except errors.ResourceNotFoundException as exc:
            # The logs of a deleted function stay readable, as a log group outlives its function.
            function, missing = raw_name, exc
        query = LogQuery(
            function=function,
            tenant_id=q.get("tenant") or None,
            request_id=q.get("request_id") or None,
            stream=q.get("stream") or None,
            since_ms=parse_time(q.get("since"), "since"),
            until_ms=parse_time(q.get("until"), "until"),
            after_id=parse_cursor(q.get("cursor")),
            limit=parse_limit(q.get("limit"), 100),
        )
        store = self._store()
        await self.telemetry.flush()
        page = await run_in_threadpool(store.read_logs, query)
        if missing is not None and not page.events and query.after_id is None:
            raise missing
        return render.json_response(
            {
                "FunctionName": function,
                "Events": [
                    {
                        "EventId": str(event_id),
                        "Timestamp": e.timestamp_ms,
                        "LogStreamName": e.stream,
                        "TenantId": e.tenant_id,
                        "RequestId": e.request_id,
                        "Message": e.message,
                        **({"CallerKeyId": e.caller_key} if e.caller_key is not None else {}),
                    }
                    for event_id, e in page.events
                ],
                "NextToken": str(page.next_cursor),
                "HasMore": page.more,
            }
        )

    async def tenants(self, request: Request) -> Response:
        q = request.query_params
        function = self._function(request.path_params["function_name"])
        limit = parse_limit(q.get("limit"), 1000)
        after = _decode_token(q["cursor"]) if q.get("cursor") else None
        summaries = self.telemetry.tenant_summaries(function)
        if after is not None:
            summaries = [s for s in summaries if (s.tenant_id or "") > after]
        page = summaries[:limit]
        body: dict[str, Any] = {
            "FunctionName": function,
            "Since": iso_time(self.telemetry.started_at),
            "QuantileRelativeError": round(QUANTILE_RELATIVE_ERROR, 4),
            "Tenants": [tenant_document(s) for s in page],
        }
        if len(summaries) > limit:
            body["NextToken"] = _encode_token(page[-1].tenant_id or "")
        return render.json_response(body)

    async def tenant(self, request: Request) -> Response:
        function = self._function(request.path_params["function_name"])
        tenant_id = request.path_params["tenant_id"]
        summary = self.telemetry.tenant_summary(function, tenant_id)
        if summary is None:
            raise errors.ResourceNotFoundException(
                f"Tenant {tenant_id} of function {function} has made no call since this server started "
                f"({iso_time(self.telemetry.started_at)}) and has no live environment."
            )
        return render.json_response({"FunctionName": function, **tenant_document(summary)})

    async def server(self, request: Request) -> Response:
        isolation = self.telemetry.isolation
        isolated = bool(isolation) and all(isolation.values())  # not told yet: nothing is promised
        body: dict[str, Any] = {
            "Sandbox": self.telemetry.default_backend,
            "TenantIsolation": isolated,
            "Backends": [{"Name": name, "IsolatesTenants": isolates} for name, isolates in sorted(isolation.items())],
            "Since": iso_time(self.telemetry.started_at),
        }
        if not isolated:
            unisolated = ", ".join(sorted(name for name, isolates in isolation.items() if not isolates))
            body["Warning"] = (
                f"Tenants are NOT isolated on this server: the {unisolated or 'unknown'} backend runs environments "
                "as plain processes sharing the host's processes, network and files. Development only; never "
                "run untrusted code here."
            )
        return render.json_response(body)

    async def metering(self, request: Request) -> Response:
        q = request.query_params
        query = MeteringQuery(
            function=q.get("function") or None,
            tenant_id=q.get("tenant") or None,
            from_ms=parse_time(q.get("from"), "from"),
            to_ms=parse_time(q.get("to"), "to"),
            after_id=parse_cursor(q.get("cursor")),
            limit=parse_limit(q.get("limit"), 1000),
        )
        store = self._store()
        await self.telemetry.flush()
        page = await run_in_threadpool(store.read_metering, query)
        body: dict[str, Any] = {
            "Events": [
                {
                    "EventId": str(event_id),
                    "FunctionName": m.function,
                    "Version": m.version,
                    "TenantId": m.tenant_id,
                    "EnvironmentId": m.environment_id,
                    "MemorySizeMB": m.memory_mb,
                    "Timestamp": m.timestamp_ms,
                }
                for event_id, m in page.events
            ],
            "Totals": [
                {
                    "FunctionName": t.function,
                    "TenantId": t.tenant_id,
                    "Environments": t.environments,
                    "MemoryMB": t.memory_mb,
                }
                for t in page.totals
            ],
            "Total": {
                "Environments": sum(t.environments for t in page.totals),
                "MemoryMB": sum(t.memory_mb for t in page.totals),
            },
        }
        if page.more:
            body["NextToken"] = str(page.next_cursor)
        return render.json_response(body)


def routes(functions: FunctionResolver, telemetry: Telemetry) -> list[Route]:
    h = TelemetryRoutes(functions, telemetry)
    fn = "/silo/v1/functions/{function_name}"
    return [
        Route("/metrics", h.metrics, methods=["GET"]),
        Route(fn + "/logs", h.logs, methods=["GET"]),
        Route(fn + "/tenants", h.tenants, methods=["GET"]),
        Route(fn + "/tenants/{tenant_id:path}", h.tenant, methods=["GET"]),
        Route("/silo/v1/metering", h.metering, methods=["GET"]),
        Route("/silo/v1/server", h.server, methods=["GET"]),
    ]
