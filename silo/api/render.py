"""Lambda's wire shapes for errors and JSON answers, rendered once at the api layer's edge."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from silo.errors import LambdaError
from silo.ids import request_id


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    all_headers = {"x-amzn-RequestId": request_id()}
    if headers:
        all_headers.update(headers)
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=all_headers,
        media_type="application/json",
    )


def error_response(error: LambdaError, rid: str | None = None) -> Response:
    """`x-amzn-ErrorType` names the code; botocore reads it from there and the message from the body."""
    headers = {"x-amzn-RequestId": rid or request_id(), "x-amzn-ErrorType": error.code}
    headers.update(error.headers())
    return Response(
        json.dumps(error.body(), separators=(",", ":")).encode(),
        status_code=error.status,
        headers=headers,
        media_type="application/json",
    )
