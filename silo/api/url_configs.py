"""The function URL configuration routes (Create/Get/Update/Delete/ListFunctionUrlConfigs) over
FunctionService; paths, methods and status codes are those of botocore's service model. A URL is reported
at this server's address as the caller reached it (the request's base URL), where the door
(silo.api.function_urls) serves it."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo.api import render
from silo.api.functions import no_content, parse_max_items, read_json_body
from silo.control.functions import FunctionService

URL_CONFIG = "/2021-10-31/functions/{function_name}/url"
URL_CONFIGS = "/2021-10-31/functions/{function_name}/urls"


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


class UrlConfigRoutes:
    def __init__(self, service: FunctionService) -> None:
        self.service = service

    async def create(self, request: Request) -> Response:
        body = await read_json_body(request, "CreateFunctionUrlConfig")
        name, qualifier = request.path_params["function_name"], request.query_params.get("Qualifier")
        out = await run_in_threadpool(self.service.create_function_url_config, name, qualifier, body, _base(request))
        return render.json_response(out, status=201)

    async def get(self, request: Request) -> Response:
        name, qualifier = request.path_params["function_name"], request.query_params.get("Qualifier")
        return render.json_response(self.service.get_function_url_config(name, qualifier, _base(request)))

    async def update(self, request: Request) -> Response:
        body = await read_json_body(request, "UpdateFunctionUrlConfig")
        name, qualifier = request.path_params["function_name"], request.query_params.get("Qualifier")
        out = await run_in_threadpool(self.service.update_function_url_config, name, qualifier, body, _base(request))
        return render.json_response(out)

    async def delete(self, request: Request) -> Response:
        name, qualifier = request.path_params["function_name"], request.query_params.get("Qualifier")
        await run_in_threadpool(self.service.delete_function_url_config, name, qualifier)
        return no_content()

    async def list(self, request: Request) -> Response:
        q = request.query_params
        out = self.service.list_function_url_configs(
            request.path_params["function_name"], q.get("Marker"), parse_max_items(q.get("MaxItems")), _base(request)
        )
        return render.json_response(out)


def routes(service: FunctionService) -> list[Route]:
    h = UrlConfigRoutes(service)
    return [
        Route(URL_CONFIG, h.create, methods=["POST"]),
        Route(URL_CONFIG, h.get, methods=["GET"]),
        Route(URL_CONFIG, h.update, methods=["PUT"]),
        Route(URL_CONFIG, h.delete, methods=["DELETE"]),
        Route(URL_CONFIGS, h.list, methods=["GET"]),
    ]
