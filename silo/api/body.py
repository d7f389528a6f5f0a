"""Reading a request's body under Lambda's size limits, refused as soon as it passes the limit."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from silo.errors import RequestEntityTooLargeException


async def read_body(request: Request, limit: int, operation: str) -> bytes:
    """The whole body, or Lambda's 413 for `operation` once it passes `limit` bytes (declared or read)."""
    return await receive_body(request.receive, request.headers.get("content-length", ""), limit, operation)


async def receive_body(receive: Receive, declared: str, limit: int, operation: str) -> bytes:
    """`read_body` at the ASGI level: `declared` is the Content-Length header ("" when there is none)."""
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, operation)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the whole body in one piece: the usual case
        if len(body) > limit:
            raise _too_large(limit, operation)
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, operation)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


def _too_large(limit: int, operation: str) -> RequestEntityTooLargeException:
    return RequestEntityTooLargeException(f"Request must be smaller than {limit} bytes for the {operation} operation")
