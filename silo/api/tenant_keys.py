"""`GET /.well-known/jwks.json`: the public keys that verify silo's tenant tokens (silo.credentials.tokens).

Unauthenticated, like the probes: the user's services fetch it to check which tenant calls them, and it
holds public keys only. Cached by them for an hour: the key changes only when its file is replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from silo.api.render import json_response

PATH = "/.well-known/jwks.json"


def routes(jwks: Callable[[], dict[str, Any]]) -> list[BaseRoute]:
    async def key_set(request: Request) -> Response:
        return json_response(jwks(), headers={"Cache-Control": "public, max-age=3600"})

    return [Route(PATH, key_set, methods=["GET"])]
