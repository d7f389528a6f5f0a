"""Lambda's layer routes (REST-JSON, `/2018-10-31/layers`) over LayerService.

Paths, methods and status codes are those of botocore's service model; handlers only translate HTTP to
service calls. Publishing carries a zip and runs in a worker thread, as CreateFunction does.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo import ids
from silo.api import render
from silo.api.functions import Presigner, no_content, parse_max_items, read_json_body
from silo.api.invoke import PRINCIPAL
from silo.control.layers import LayerService
from silo.types import Principal

CONTENT_PATH = "/silo/v1/layers/{layer_name}/versions/{version_number}/content"


class LayerRoutes:
    """The handlers, bound to one service."""

    def __init__(self, service: LayerService, presign: Presigner | None = None) -> None:
        self.service = service
        self.presign = presign

    def _location(self, request: Request) -> Callable[[str, int], str]:
        """Content.Location: where this server serves a version's zip, signed for the caller."""
        base = str(request.base_url).rstrip("/")
        principal: Principal | None = request.scope.get(PRINCIPAL)
        host = request.headers.get("host", "")

        def location(name: str, version: int) -> str:
            path = CONTENT_PATH.format(layer_name=quote(name, safe=""), version_number=version)
            query = self.presign(principal, host, path) if self.presign is not None else ""
            return base + path + (f"?{query}" if query else "")

        return location

    async def publish_layer_version(self, request: Request) -> Response:
        body = await read_json_body(request, "PublishLayerVersion")
        name = request.path_params["layer_name"]
        out = await run_in_threadpool(self.service.publish_layer_version, name, body, self._location(request))
        return render.json_response(out, status=201)

    async def get_layer_version(self, request: Request) -> Response:
        p = request.path_params
        out = self.service.get_layer_version(p["layer_name"], p["version_number"], self._location(request))
        return render.json_response(out)

    async def list_layers(self, request: Request) -> Response:
        q = request.query_params
        if q.get("find") == "LayerVersion":
            # GetLayerVersionByArn shares ListLayers' path, told apart by `find`.
            return render.json_response(self.service.get_layer_version_by_arn(q.get("Arn"), self._location(request)))
        page = self.service.list_layers(
            q.get("CompatibleRuntime"),
            q.get("CompatibleArchitecture"),
            q.get("Marker"),
            parse_max_items(q.get("MaxItems")),
        )
        return render.json_response(page)

    async def list_layer_versions(self, request: Request) -> Response:
        q = request.query_params
        page = self.service.list_layer_versions(
            request.path_params["layer_name"],
            q.get("CompatibleRuntime"),
            q.get("CompatibleArchitecture"),
            q.get("Marker"),
            parse_max_items(q.get("MaxItems")),
        )
        return render.json_response(page)

    async def delete_layer_version(self, request: Request) -> Response:
        p = request.path_params
        await run_in_threadpool(self.service.delete_layer_version, p["layer_name"], p["version_number"])
        return no_content()

    async def add_permission(self, request: Request) -> Response:
        body = await read_json_body(request, "AddLayerVersionPermission")
        p = request.path_params
        revision = request.query_params.get("RevisionId")
        out = await run_in_threadpool(self.service.add_permission, p["layer_name"], p["version_number"], body, revision)
        return render.json_response(out, status=201)

    async def get_policy(self, request: Request) -> Response:
        p = request.path_params
        return render.json_response(self.service.get_policy(p["layer_name"], p["version_number"]))

    async def remove_permission(self, request: Request) -> Response:
        p = request.path_params
        revision = request.query_params.get("RevisionId")
        await run_in_threadpool(
            self.service.remove_permission, p["layer_name"], p["version_number"], p["statement_id"], revision
        )
        return no_content()

    async def download_content(self, request: Request) -> Response:
        """GetLayerVersion's Content.Location: the zip as uploaded."""
        p = request.path_params
        data = await run_in_threadpool(self.service.layer_zip, p["layer_name"], p["version_number"])
        return Response(data, media_type="application/zip", headers={"x-amzn-RequestId": ids.request_id()})


def routes(service: LayerService, presign: Presigner | None = None) -> list[Route]:
    """The routes of the layer operations (a trailing slash is served too, as for functions)."""
    h = LayerRoutes(service, presign)
    versions = "/2018-10-31/layers/{layer_name}/versions"
    version = versions + "/{version_number}"
    return [
        Route("/2018-10-31/layers", h.list_layers, methods=["GET"]),
        Route("/2018-10-31/layers/", h.list_layers, methods=["GET"]),
        Route(versions, h.publish_layer_version, methods=["POST"]),
        Route(versions, h.list_layer_versions, methods=["GET"]),
        Route(version, h.get_layer_version, methods=["GET"]),
        Route(version, h.delete_layer_version, methods=["DELETE"]),
        Route(version + "/policy", h.add_permission, methods=["POST"]),
        Route(version + "/policy", h.get_policy, methods=["GET"]),
        Route(version + "/policy/{statement_id}", h.remove_permission, methods=["DELETE"]),
        Route(CONTENT_PATH, h.download_content, methods=["GET"]),
    ]
