"""Routes of asynchronous invocation: Lambda's EventInvokeConfig operations and silo's own queue views.

Lambda's (paths, methods and status codes of botocore's model):
  PUT    /2019-09-25/functions/{name}/event-invoke-config        PutFunctionEventInvokeConfig
  POST   /2019-09-25/functions/{name}/event-invoke-config        UpdateFunctionEventInvokeConfig
  GET    /2019-09-25/functions/{name}/event-invoke-config        GetFunctionEventInvokeConfig
  DELETE /2019-09-25/functions/{name}/event-invoke-config        DeleteFunctionEventInvokeConfig (204)
  GET    /2019-09-25/functions/{name}/event-invoke-config/list   ListFunctionEventInvokeConfigs

silo's own (Lambda has no equivalent; names and shapes follow Lambda's conventions):
  GET  /silo/v1/functions/{name}/dead-letters                    the dead-letter list, oldest first
  POST /silo/v1/functions/{name}/dead-letters/{id}/replay        queue a dead letter again (202)
  GET  /silo/v1/functions/{name}/events?State=pending,running    a function's queued events
  GET  /silo/v1/functions/{name}/events/{id}                     one event and every attempt at it
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo.api import render
from silo.api.functions import no_content, parse_max_items, read_json_body
from silo.api.query import position
from silo.control.event_config import EventInvokeConfigService
from silo.control.names import parse_function_name
from silo.errors import InvalidParameterValueException
from silo.events import Attempt, EventState, QueuedEvent
from silo.events.dispatcher import Dispatcher
from silo.events.records import timestamp

CONFIG_PATH = "/2019-09-25/functions/{function_name}/event-invoke-config"
SILO_PATH = "/silo/v1/functions/{function_name}"
PAGE_MAX = 100


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def render_attempt(a: Attempt) -> dict[str, Any]:
    out: dict[str, Any] = {"StartedAt": timestamp(a.started_at), "Outcome": a.outcome or "running", "BootId": a.boot_id}
    if a.finished_at is not None:
        out["FinishedAt"] = timestamp(a.finished_at)
    if a.detail:
        out["Detail"] = a.detail
    return out


def render_event(ev: QueuedEvent, attempts: list[Attempt] | None = None) -> dict[str, Any]:
    """An event as silo's API shows it; optional members appear only when they have a value."""
    out: dict[str, Any] = {
        "RequestId": ev.request_id,
        "FunctionName": ev.function_name,
        "State": ev.state.value,
        "Runs": ev.runs,
        "Throttles": ev.throttles,
        "EnqueuedAt": timestamp(ev.enqueued_at),
        "Payload": _text(ev.payload),
    }
    optional: dict[str, Any] = {
        "Qualifier": ev.qualifier,
        "TenantId": ev.tenant_id,
        "Condition": ev.condition,
        "NextAttemptAt": timestamp(ev.next_attempt_at) if ev.state is EventState.PENDING else None,
        "FinishedAt": None if ev.finished_at is None else timestamp(ev.finished_at),
        "FunctionError": ev.function_error,
        "ExecutedVersion": ev.executed_version,
        "ResponsePayload": None if ev.response is None else _text(ev.response),
        "DestinationRequestId": ev.destination_id,
        "ReplayOf": ev.replay_of,
        "ReplayedAs": ev.replayed_as,
        "CallerKeyId": ev.caller_key,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if attempts is not None:
        out["Attempts"] = [render_attempt(a) for a in attempts]
    return out


def _states(raw: str | None) -> tuple[EventState, ...]:
    if raw is None:
        return (EventState.PENDING, EventState.RUNNING)
    names = [s.strip().lower() for s in raw.split(",") if s.strip()]
    known = {s.value: s for s in EventState}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise InvalidParameterValueException(
            f"State must be a comma-separated list of: {', '.join(known)}; got {raw!r}."
        )
    return tuple(known[n] for n in names)


def _marker(raw: str | None) -> int | None:
    if raw is None:
        return None
    marker = position(raw)
    if marker is None:
        raise InvalidParameterValueException(f"Marker {raw!r} is not one this API returned (NextMarker).")
    return marker


class EventRoutes:
    """The handlers, bound to the EventInvokeConfig service and the dispatcher."""

    def __init__(self, configs: EventInvokeConfigService, dispatcher: Dispatcher) -> None:
        self.configs = configs
        self.dispatcher = dispatcher

    # -- Lambda's EventInvokeConfig operations ------------------------------------------------------

    async def put_config(self, request: Request) -> Response:
        body = await read_json_body(request, "PutFunctionEventInvokeConfig")
        name, qualifier = request.path_params["function_name"], request.query_params.get("Qualifier")
        return render.json_response(await run_in_threadpool(self.configs.put, name, qualifier, body))

    async def update_config(self, request: Request) -> Response:
        body = await read_json_body(request, "UpdateFunctionEventInvokeConfig")
        name, qualifier = request.path_params["function_name"], request.query_params.get("Qualifier")
        return render.json_response(await run_in_threadpool(self.configs.update, name, qualifier, body))

    async def get_config(self, request: Request) -> Response:
        name, qualifier = request.path_params["function_name"], request.query_params.get("Qualifier")
        return render.json_response(await run_in_threadpool(self.configs.get, name, qualifier))

    async def delete_config(self, request: Request) -> Response:
        name, qualifier = request.path_params["function_name"], request.query_params.get("Qualifier")
        await run_in_threadpool(self.configs.delete, name, qualifier)
        return no_content()

    async def list_configs(self, request: Request) -> Response:
        q = request.query_params
        out = await run_in_threadpool(
            self.configs.list, request.path_params["function_name"], q.get("Marker"), parse_max_items(q.get("MaxItems"))
        )
        return render.json_response(out)

    # -- silo's queue views -------------------------------------------------------------------------

    def _page(self, request: Request) -> tuple[str, int | None, int]:
        name = parse_function_name(request.path_params["function_name"], namespaced=True).name
        asked = parse_max_items(request.query_params.get("MaxItems"))
        limit = PAGE_MAX if asked is None else asked
        if not 1 <= limit <= PAGE_MAX:
            raise InvalidParameterValueException(f"MaxItems must be between 1 and {PAGE_MAX}; got {limit}.")
        return name, _marker(request.query_params.get("Marker")), limit

    async def _listing(self, request: Request, key: str, states: tuple[EventState, ...]) -> Response:
        name, marker, limit = self._page(request)
        page = await self.dispatcher.events(name, states, marker, limit + 1)
        out: dict[str, Any] = {key: [render_event(ev) for ev in page[:limit]]}
        if len(page) > limit:
            out["NextMarker"] = str(page[limit - 1].seq)
        return render.json_response(out)

    async def dead_letters(self, request: Request) -> Response:
        """Events that finally failed with no on-failure destination (or whose function was deleted)."""
        return await self._listing(request, "DeadLetters", (EventState.DEAD,))

    async def list_events(self, request: Request) -> Response:
        return await self._listing(request, "Events", _states(request.query_params.get("State")))

    async def get_event(self, request: Request) -> Response:
        name = parse_function_name(request.path_params["function_name"], namespaced=True).name
        ev, attempts = await self.dispatcher.event(name, request.path_params["request_id"])
        return render.json_response(render_event(ev, attempts))

    async def replay(self, request: Request) -> Response:
        """Queue a dead letter again as a new event; the answer names the new request id."""
        name = parse_function_name(request.path_params["function_name"], namespaced=True).name
        old = request.path_params["request_id"]
        new = await self.dispatcher.replay(name, old)
        return render.json_response({"RequestId": new, "ReplayOf": old}, status=202)


def routes(configs: EventInvokeConfigService, dispatcher: Dispatcher) -> list[Route]:
    h = EventRoutes(configs, dispatcher)
    return [
        Route(CONFIG_PATH, h.put_config, methods=["PUT"]),
        Route(CONFIG_PATH, h.update_config, methods=["POST"]),
        Route(CONFIG_PATH, h.get_config, methods=["GET"]),
        Route(CONFIG_PATH, h.delete_config, methods=["DELETE"]),
        Route(CONFIG_PATH + "/list", h.list_configs, methods=["GET"]),
        Route(SILO_PATH + "/dead-letters", h.dead_letters, methods=["GET"]),
        Route(SILO_PATH + "/dead-letters/{request_id}/replay", h.replay, methods=["POST"]),
        Route(SILO_PATH + "/events", h.list_events, methods=["GET"]),
        Route(SILO_PATH + "/events/{request_id}", h.get_event, methods=["GET"]),
    ]
