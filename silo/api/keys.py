"""silo's caller keys over HTTP (administrator keys only: the authentication layer refuses tenant-bound ones).

POST   /silo/v1/keys            create a key: {"Admin": true} or {"TenantId": "t", "Functions": ["f"]},
                                optional "ExpiresInSeconds" and "Description"; 201 with the secret, once
GET    /silo/v1/keys            every key, revoked and expired ones included, never a secret
GET    /silo/v1/keys/{key_id}   one key
DELETE /silo/v1/keys/{key_id}   revoke it, effective on the next request; 200 with the key as it is now
"""

from __future__ import annotations

import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from silo import errors
from silo.api import render
from silo.api.functions import read_json_body
from silo.api.invoke import PRINCIPAL
from silo.control.keys import KeyRecord, KeyService, state
from silo.events.records import timestamp
from silo.types import Principal

PATH = "/silo/v1/keys"


def render_key(record: KeyRecord, now: float) -> dict[str, Any]:
    """A key as the API shows it: what it may do and its state, never its secret."""
    out: dict[str, Any] = {
        "AccessKeyId": record.key_id,
        "Kind": "admin" if record.admin else "tenant",
        "State": state(record, now),
        "CreatedAt": timestamp(record.created_at),
        "CreatedBy": record.created_by or "silo serve",
        "Description": record.description,
    }
    if not record.admin:
        out["TenantId"] = record.tenant_id
        out["Functions"] = list(record.functions)
    if record.expires_at is not None:
        out["ExpiresAt"] = timestamp(record.expires_at)
    if record.revoked_at is not None:
        out["RevokedAt"] = timestamp(record.revoked_at)
        out["RevokedBy"] = record.revoked_by or "silo serve"
    return out


def _caller(request: Request) -> str | None:
    principal: Principal | None = request.scope.get(PRINCIPAL)
    return None if principal is None else principal.key_id


def routes(keys: KeyService) -> list[Route]:
    async def create(request: Request) -> Response:
        body = await read_json_body(request, "CreateKey")
        record = await run_in_threadpool(keys.create, body, _caller(request))
        out = render_key(record, time.time())
        out["SecretAccessKey"] = record.secret
        return render.json_response(out, status=201)

    async def list_keys(request: Request) -> Response:
        now = time.time()
        return render.json_response({"Keys": [render_key(r, now) for r in keys.keys()]})

    def find(key_id: str) -> KeyRecord:
        for record in keys.keys():
            if record.key_id == key_id:
                return record
        raise errors.ResourceNotFoundException(f"No caller key {key_id} exists (`silo keys list` lists them).")

    async def get_key(request: Request) -> Response:
        return render.json_response(render_key(find(request.path_params["key_id"]), time.time()))

    async def revoke(request: Request) -> Response:
        record = await run_in_threadpool(keys.revoke, request.path_params["key_id"], _caller(request))
        return render.json_response(render_key(record, time.time()))

    return [
        Route(PATH, create, methods=["POST"]),
        Route(PATH, list_keys, methods=["GET"]),
        Route(PATH + "/{key_id}", get_key, methods=["GET"]),
        Route(PATH + "/{key_id}", revoke, methods=["DELETE"]),
    ]
