"""The HTTP application: Lambda's REST-JSON routes and silo's own, with errors rendered once here."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

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


async def _unexpected(request: Request, exc: Exception) -> Response:
    # A bug of ours: answer in Lambda's shape, and log it with its traceback so it can be fixed.
    log.exception("internal error while serving %s %s", request.method, request.url.path)
    return error_response(errors.ServiceException(f"silo hit an internal error: {type(exc).__name__}: {exc}"))


def build_app(routes: list[BaseRoute]) -> Starlette:
    return Starlette(
        routes=routes,
        exception_handlers={
            errors.LambdaError: _lambda_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
