"""The routes of Lambda operations silo answers without serving the feature: provisioned concurrency and
event source mappings (silo.control.unserved says what each answers). Paths, methods and status codes are
those of botocore's service model, so that a client gets Lambda's answer, not an unknown route."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo.api import render
from silo.api.functions import no_content, read_json_body
from silo.control.functions import FunctionService

PROVISIONED = "/2019-09-30/functions/{function_name}/provisioned-concurrency"
MAPPINGS = "/2015-03-31/event-source-mappings"


class UnservedRoutes:
    def __init__(self, service: FunctionService) -> None:
        self.service = service

    async def put_provisioned(self, request: Request) -> Response:
        body = await read_json_body(request, "PutProvisionedConcurrencyConfig")
        name = request.path_params["function_name"]
        out = self.service.put_provisioned_concurrency_config(name, request.query_params.get("Qualifier"), body)
        return render.json_response(out, status=202)

    async def get_provisioned(self, request: Request) -> Response:
        name = request.path_params["function_name"]
        # ListProvisionedConcurrencyConfigs is the same path with `?List=ALL`.
        if "List" in request.query_params:
            return render.json_response(self.service.list_provisioned_concurrency_configs(name))
        return render.json_response(
            self.service.get_provisioned_concurrency_config(name, request.query_params.get("Qualifier"))
        )

    async def delete_provisioned(self, request: Request) -> Response:
        name = request.path_params["function_name"]
        self.service.delete_provisioned_concurrency_config(name, request.query_params.get("Qualifier"))
        return no_content()

    async def create_mapping(self, request: Request) -> Response:
        body = await read_json_body(request, "CreateEventSourceMapping")
        return render.json_response(self.service.create_event_source_mapping(body), status=202)

    async def list_mappings(self, request: Request) -> Response:
        q = request.query_params
        return render.json_response(
            self.service.list_event_source_mappings(q.get("FunctionName"), q.get("EventSourceArn"))
        )

    async def one_mapping(self, request: Request) -> Response:
        if request.method == "PUT":
            await read_json_body(request, "UpdateEventSourceMapping")
        return render.json_response(self.service.event_source_mapping(request.path_params["uuid"]))


def routes(service: FunctionService) -> list[Route]:
    h = UnservedRoutes(service)
    return [
        Route(PROVISIONED, h.put_provisioned, methods=["PUT"]),
        Route(PROVISIONED, h.get_provisioned, methods=["GET"]),
        Route(PROVISIONED, h.delete_provisioned, methods=["DELETE"]),
        Route(MAPPINGS, h.create_mapping, methods=["POST"]),
        Route(MAPPINGS + "/", h.create_mapping, methods=["POST"]),
        Route(MAPPINGS, h.list_mappings, methods=["GET"]),
        Route(MAPPINGS + "/", h.list_mappings, methods=["GET"]),
        Route(MAPPINGS + "/{uuid}", h.one_mapping, methods=["GET", "PUT", "DELETE"]),
    ]
