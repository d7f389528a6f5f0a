"""Lambda's code signing configuration routes (`/2020-04-22/code-signing-configs`) and silo's own signing
profiles (`/silo/v1/signing-profiles`), over CodeSigningService. A function's own configuration
(Put/Get/DeleteFunctionCodeSigningConfig) is served with the function routes."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo.api import render
from silo.api.functions import no_content, parse_max_items, read_json_body
from silo.control.code_signing import CodeSigningService

PROFILES_PATH = "/silo/v1/signing-profiles"


class CodeSigningRoutes:
    def __init__(self, service: CodeSigningService) -> None:
        self.service = service

    async def create(self, request: Request) -> Response:
        body = await read_json_body(request, "CreateCodeSigningConfig")
        return render.json_response(await run_in_threadpool(self.service.create_config, body), status=201)

    async def list_configs(self, request: Request) -> Response:
        q = request.query_params
        return render.json_response(self.service.list_configs(q.get("Marker"), parse_max_items(q.get("MaxItems"))))

    async def get(self, request: Request) -> Response:
        return render.json_response(self.service.get_config(request.path_params["arn"]))

    async def update(self, request: Request) -> Response:
        body = await read_json_body(request, "UpdateCodeSigningConfig")
        arn = request.path_params["arn"]
        return render.json_response(await run_in_threadpool(self.service.update_config, arn, body))

    async def delete(self, request: Request) -> Response:
        await run_in_threadpool(self.service.delete_config, request.path_params["arn"])
        return no_content()

    async def list_functions(self, request: Request) -> Response:
        q = request.query_params
        page = self.service.list_functions(
            request.path_params["arn"], q.get("Marker"), parse_max_items(q.get("MaxItems"))
        )
        return render.json_response(page)

    async def add_profile(self, request: Request) -> Response:
        body = await read_json_body(request, "AddSigningProfile")
        return render.json_response(await run_in_threadpool(self.service.add_profile, body), status=201)

    async def list_profiles(self, request: Request) -> Response:
        return render.json_response(self.service.list_profiles())

    async def delete_profile(self, request: Request) -> Response:
        await run_in_threadpool(self.service.delete_profile, request.path_params["name"])
        return no_content()


def routes(service: CodeSigningService) -> list[Route]:
    h = CodeSigningRoutes(service)
    configs = "/2020-04-22/code-signing-configs"
    return [
        Route(configs, h.create, methods=["POST"]),
        Route(configs + "/", h.create, methods=["POST"]),
        Route(configs, h.list_configs, methods=["GET"]),
        Route(configs + "/", h.list_configs, methods=["GET"]),
        Route(configs + "/{arn}", h.get, methods=["GET"]),
        Route(configs + "/{arn}", h.update, methods=["PUT"]),
        Route(configs + "/{arn}", h.delete, methods=["DELETE"]),
        Route(configs + "/{arn}/functions", h.list_functions, methods=["GET"]),
        Route(PROFILES_PATH, h.add_profile, methods=["POST"]),
        Route(PROFILES_PATH, h.list_profiles, methods=["GET"]),
        Route(PROFILES_PATH + "/{name}", h.delete_profile, methods=["DELETE"]),
    ]
