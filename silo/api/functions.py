"""Lambda's function-management routes (REST-JSON, apiVersion 2015-03-31) over FunctionService.

Paths, methods and status codes are those of botocore's service model. Handlers only translate
HTTP to service calls; errors are silo.errors exceptions, rendered by the app's LambdaError handler.
Writes that carry a package run in a worker thread: unpacking can take seconds and must not stall
the event loop that also serves invocations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo import ids
from silo.api import render
from silo.api.body import load_json, read_body
from silo.api.invoke import PRINCIPAL
from silo.control.functions import FunctionService
from silo.control.violations import Violations
from silo.errors import InvalidRequestContentException
from silo.types import Principal

# Lambda's request limit for CreateFunction: a 50 MB zip, base64-encoded, inside its JSON body.
MAX_REQUEST_BYTES = 70_167_211
CODE_PATH = "/silo/v1/functions/{function_name}/code"
SETTINGS_PATH = "/silo/v1/functions/{function_name}/settings"


async def read_json_body(request: Request, operation: str) -> dict[str, Any]:
    """The request's JSON object, refusing oversized bodies before reading them whole.

    An empty body counts as `{}`: botocore sends none for operations whose members are all absent.
    """
    raw = await read_body(request, MAX_REQUEST_BYTES, operation)
    if not raw.strip():
        return {}
    body = load_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequestContentException(
            "Could not parse request body into json: the request body must be a JSON object"
        )
    return body


def parse_max_items(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        v = Violations()
        v.add(raw, "maxItems", "Member must be a number")
        raise v.error() from None


def no_content() -> Response:
    return Response(status_code=204, headers={"x-amzn-RequestId": ids.request_id()})


# Signs a URL for the caller of a request: (caller, Host, path) -> the query to add ("" for none).
Presigner = Callable[[Principal | None, str, str], str]


class FunctionRoutes:
    """The handlers, bound to one service."""

    def __init__(self, service: FunctionService, presign: Presigner | None = None) -> None:
        self.service = service
        self.presign = presign

    def _code_location(self, request: Request) -> Callable[[str], str]:
        base = str(request.base_url).rstrip("/")
        principal: Principal | None = request.scope.get(PRINCIPAL)
        host = request.headers.get("host", "")

        def location(name: str) -> str:
            path = CODE_PATH.format(function_name=quote(name, safe=""))
            query = self.presign(principal, host, path) if self.presign is not None else ""
            return base + path + (f"?{query}" if query else "")

        return location

    async def create_function(self, request: Request) -> Response:
        body = await read_json_body(request, "CreateFunction")
        config = await run_in_threadpool(self.service.create_function, body)
        return render.json_response(config, status=201)

    async def list_functions(self, request: Request) -> Response:
        q = request.query_params
        page = self.service.list_functions(
            marker=q.get("Marker"),
            max_items=parse_max_items(q.get("MaxItems")),
            function_version=q.get("FunctionVersion"),
            master_region=q.get("MasterRegion"),
        )
        return render.json_response(page)

    async def get_function(self, request: Request) -> Response:
        out = self.service.get_function(
            request.path_params["function_name"],
            request.query_params.get("Qualifier"),
            self._code_location(request),
        )
        return render.json_response(out)

    async def get_function_configuration(self, request: Request) -> Response:
        out = self.service.get_function_configuration(
            request.path_params["function_name"], request.query_params.get("Qualifier")
        )
        return render.json_response(out)

    async def update_function_code(self, request: Request) -> Response:
        body = await read_json_body(request, "UpdateFunctionCode")
        name = request.path_params["function_name"]
        config = await run_in_threadpool(self.service.update_function_code, name, body)
        return render.json_response(config)

    async def update_function_configuration(self, request: Request) -> Response:
        body = await read_json_body(request, "UpdateFunctionConfiguration")
        name = request.path_params["function_name"]
        config = await run_in_threadpool(self.service.update_function_configuration, name, body)
        return render.json_response(config)

    async def delete_function(self, request: Request) -> Response:
        name = request.path_params["function_name"]
        await run_in_threadpool(self.service.delete_function, name, request.query_params.get("Qualifier"))
        # The model says 200, but Lambda answers 204 (AWS-recorded) and clients accept both.
        return no_content()

    async def put_function_concurrency(self, request: Request) -> Response:
        body = await read_json_body(request, "PutFunctionConcurrency")
        name = request.path_params["function_name"]
        return render.json_response(await run_in_threadpool(self.service.put_function_concurrency, name, body))

    async def get_function_concurrency(self, request: Request) -> Response:
        return render.json_response(self.service.get_function_concurrency(request.path_params["function_name"]))

    async def delete_function_concurrency(self, request: Request) -> Response:
        await run_in_threadpool(self.service.delete_function_concurrency, request.path_params["function_name"])
        return no_content()

    async def publish_version(self, request: Request) -> Response:
        body = await read_json_body(request, "PublishVersion")
        name = request.path_params["function_name"]
        return render.json_response(await run_in_threadpool(self.service.publish_version, name, body), status=201)

    async def list_versions_by_function(self, request: Request) -> Response:
        q = request.query_params
        page = self.service.list_versions_by_function(
            request.path_params["function_name"], q.get("Marker"), parse_max_items(q.get("MaxItems"))
        )
        return render.json_response(page)

    async def create_alias(self, request: Request) -> Response:
        body = await read_json_body(request, "CreateAlias")
        name = request.path_params["function_name"]
        return render.json_response(await run_in_threadpool(self.service.create_alias, name, body), status=201)

    async def list_aliases(self, request: Request) -> Response:
        q = request.query_params
        page = self.service.list_aliases(
            request.path_params["function_name"],
            q.get("FunctionVersion"),
            q.get("Marker"),
            parse_max_items(q.get("MaxItems")),
        )
        return render.json_response(page)

    async def get_alias(self, request: Request) -> Response:
        p = request.path_params
        return render.json_response(self.service.get_alias(p["function_name"], p["alias"]))

    async def update_alias(self, request: Request) -> Response:
        body = await read_json_body(request, "UpdateAlias")
        p = request.path_params
        return render.json_response(
            await run_in_threadpool(self.service.update_alias, p["function_name"], p["alias"], body)
        )

    async def delete_alias(self, request: Request) -> Response:
        p = request.path_params
        await run_in_threadpool(self.service.delete_alias, p["function_name"], p["alias"])
        return no_content()

    async def get_function_code_signing_config(self, request: Request) -> Response:
        name = request.path_params["function_name"]
        return render.json_response(self.service.get_function_code_signing_config(name))

    async def put_function_code_signing_config(self, request: Request) -> Response:
        body = await read_json_body(request, "PutFunctionCodeSigningConfig")
        name = request.path_params["function_name"]
        return render.json_response(await run_in_threadpool(self.service.put_function_code_signing_config, name, body))

    async def delete_function_code_signing_config(self, request: Request) -> Response:
        name = request.path_params["function_name"]
        await run_in_threadpool(self.service.delete_function_code_signing_config, name)
        return no_content()

    async def list_tags(self, request: Request) -> Response:
        return render.json_response(self.service.list_tags(request.path_params["resource"]))

    async def tag_resource(self, request: Request) -> Response:
        body = await read_json_body(request, "TagResource")
        await run_in_threadpool(self.service.tag_resource, request.path_params["resource"], body)
        return no_content()

    async def untag_resource(self, request: Request) -> Response:
        keys = request.query_params.getlist("tagKeys") if "tagKeys" in request.query_params else None
        await run_in_threadpool(self.service.untag_resource, request.path_params["resource"], keys)
        return no_content()

    async def add_permission(self, request: Request) -> Response:
        body = await read_json_body(request, "AddPermission")
        name = request.path_params["function_name"]
        qualifier = request.query_params.get("Qualifier")
        out = await run_in_threadpool(self.service.add_permission, name, qualifier, body)
        return render.json_response(out, status=201)

    async def remove_permission(self, request: Request) -> Response:
        q = request.query_params
        await run_in_threadpool(
            self.service.remove_permission,
            request.path_params["function_name"],
            request.path_params["statement_id"],
            q.get("Qualifier"),
            q.get("RevisionId"),
        )
        return no_content()

    async def get_policy(self, request: Request) -> Response:
        name = request.path_params["function_name"]
        return render.json_response(self.service.get_policy(name, request.query_params.get("Qualifier")))

    async def get_silo_settings(self, request: Request) -> Response:
        return render.json_response(self.service.get_silo_settings(request.path_params["function_name"]))

    async def update_silo_settings(self, request: Request) -> Response:
        body = await read_json_body(request, "UpdateSiloSettings")
        name = request.path_params["function_name"]
        return render.json_response(await run_in_threadpool(self.service.update_silo_settings, name, body))

    async def get_account_settings(self, request: Request) -> Response:
        return render.json_response(self.service.get_account_settings())

    async def download_code(self, request: Request) -> Response:
        """GetFunction's Code.Location: the package as uploaded."""
        data = await run_in_threadpool(self.service.function_code, request.path_params["function_name"])
        return Response(
            data,
            media_type="application/zip",
            headers={"x-amzn-RequestId": ids.request_id()},
        )


def routes(service: FunctionService, presign: Presigner | None = None) -> list[Route]:
    """The routes of the function-management operations.

    Paths with and without a trailing slash are both served: botocore has sent
    `/2015-03-31/functions/` for ListFunctions in some releases and `/2015-03-31/functions` in others.
    """
    h = FunctionRoutes(service, presign)
    fn = "/2015-03-31/functions/{function_name}"
    return [
        Route("/2015-03-31/functions", h.create_function, methods=["POST"]),
        Route("/2015-03-31/functions/", h.create_function, methods=["POST"]),
        Route("/2015-03-31/functions", h.list_functions, methods=["GET"]),
        Route("/2015-03-31/functions/", h.list_functions, methods=["GET"]),
        Route(fn, h.get_function, methods=["GET"]),
        Route(fn, h.delete_function, methods=["DELETE"]),
        Route(fn + "/configuration", h.get_function_configuration, methods=["GET"]),
        Route(fn + "/configuration", h.update_function_configuration, methods=["PUT"]),
        Route(fn + "/code", h.update_function_code, methods=["PUT"]),
        Route("/2017-10-31/functions/{function_name}/concurrency", h.put_function_concurrency, methods=["PUT"]),
        Route("/2019-09-30/functions/{function_name}/concurrency", h.get_function_concurrency, methods=["GET"]),
        Route("/2017-10-31/functions/{function_name}/concurrency", h.delete_function_concurrency, methods=["DELETE"]),
        Route(fn + "/versions", h.publish_version, methods=["POST"]),
        Route(fn + "/versions", h.list_versions_by_function, methods=["GET"]),
        Route(fn + "/aliases", h.create_alias, methods=["POST"]),
        Route(fn + "/aliases", h.list_aliases, methods=["GET"]),
        Route(fn + "/aliases/{alias}", h.get_alias, methods=["GET"]),
        Route(fn + "/aliases/{alias}", h.update_alias, methods=["PUT"]),
        Route(fn + "/aliases/{alias}", h.delete_alias, methods=["DELETE"]),
        Route(fn + "/policy", h.add_permission, methods=["POST"]),
        Route(fn + "/policy", h.get_policy, methods=["GET"]),
        Route(fn + "/policy/{statement_id}", h.remove_permission, methods=["DELETE"]),
        Route("/2017-03-31/tags/{resource}", h.list_tags, methods=["GET"]),
        Route("/2017-03-31/tags/{resource}", h.tag_resource, methods=["POST"]),
        Route("/2017-03-31/tags/{resource}", h.untag_resource, methods=["DELETE"]),
        Route(
            "/2020-06-30/functions/{function_name}/code-signing-config",
            h.get_function_code_signing_config,
            methods=["GET"],
        ),
        Route(
            "/2020-06-30/functions/{function_name}/code-signing-config",
            h.put_function_code_signing_config,
            methods=["PUT"],
        ),
        Route(
            "/2020-06-30/functions/{function_name}/code-signing-config",
            h.delete_function_code_signing_config,
            methods=["DELETE"],
        ),
        Route("/2016-08-19/account-settings", h.get_account_settings, methods=["GET"]),
        Route("/2016-08-19/account-settings/", h.get_account_settings, methods=["GET"]),
        Route(CODE_PATH, h.download_code, methods=["GET"]),
        Route(SETTINGS_PATH, h.get_silo_settings, methods=["GET"]),
        Route(SETTINGS_PATH, h.update_silo_settings, methods=["PUT"]),
    ]
