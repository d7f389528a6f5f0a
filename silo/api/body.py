"""Reading a request's body under Lambda's size limits, refused as soon as it passes the limit."""

from __future__ import annotations

from starlette.requests import Request

from silo.errors import RequestEntityTooLargeException


async def read_body(request: Request, limit: int, operation: str) -> bytes:
    """The whole body, or Lambda's 413 for `operation` once it passes `limit` bytes (declared or read)."""
    too_large = RequestEntityTooLargeException(
        f"Request must be smaller than {limit} bytes for the {operation} operation"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
