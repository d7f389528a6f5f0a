"""The HTTP application: Lambda's REST-JSON routes and silo's own, with errors rendered once here."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from silo import errors
from silo.api.render import error_response

log = logging.getLogger(__name__)


async def _lambda_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, errors.LambdaError):  # pragma: no cover - starlette dispatches by class
        raise exc
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        return error_response(errors.NotFoundRoute(f"{request.method} is not supported on {request.url.path}."))
    return error_response(errors.NotFoundRoute(f"No Lambda or silo operation is served at {request.url.path}."))


async def _gone(request: Request, exc: Exception) -> Response:
    # The client left (or the HTTP front closed it for being too slow) before its request was read:
    # nobody is there to answer, and it is no bug of ours.
    log.debug("client gone while serving %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug of ours: answer in Lambda's shape, and log it with its traceback so it can be fixed.
    log.exception("internal error while serving %s %s", request.method, request.url.path)
    return error_response(errors.ServiceException(f"silo hit an internal error: {type(exc).__name__}: {exc}"))


class HotEndpoint(Protocol):
    """An ASGI endpoint the server tries before anything else, for the requests it `accepts`."""

    def accepts(self, scope: Scope) -> bool: ...

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def build_app(
    routes: list[BaseRoute],
    hot: HotEndpoint | None = None,
    authenticate: Callable[[ASGIApp], ASGIApp] | None = None,
) -> ASGIApp:
    """The application. The `hot` endpoint (also routed among `routes`) gets what it accepts first, without
    the middleware stack and the route table: Invoke is the request every call makes, and on a small host
    that machinery cost a fifth of the daemon's time per call. It renders Lambda's errors itself; what
    escapes it is rendered exactly as elsewhere. `authenticate` wraps the whole of it, the hot endpoint
    included (silo.api.auth), so that no request reaches a route around it."""
    app = Starlette(
        routes=routes,
        exception_handlers={
            errors.LambdaError: _lambda_error,
            HTTPException: _http_error,
            ClientDisconnect: _gone,
            Exception: _unexpected,
        },
    )
    if hot is None:
        return app if authenticate is None else authenticate(app)

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and hot.accepts(scope):
            try:
                await hot(scope, receive, send)
            except ClientDisconnect:
                return
            except Exception as exc:
                response = await _unexpected(Request(scope, receive), exc)
                await response(scope, receive, send)
            return
        await app(scope, receive, send)

    return serve if authenticate is None else authenticate(serve)
