"""Reading a request's body under Lambda's size limits, refused as soon as it passes the limit, and its JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from silo.errors import InvalidRequestContentException, RequestEntityTooLargeException


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


def load_json(raw: bytes) -> Any:
    """The JSON value of a body, or Lambda's InvalidRequestContentException when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {exc}"
        ) from None
    except RecursionError:
        # Python's parser stops at arrays or objects nested about a thousand deep: a client's mistake
        # (or an attack on the parser), not an error of silo's.
        raise InvalidRequestContentException(
            "Could not parse request body into json: it nests arrays or objects deeper than this server "
            "parses (about a thousand levels); send it less deeply nested."
        ) from None
