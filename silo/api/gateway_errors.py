"""The gateway's refusals, in API Gateway's codes: what an end user's client sees instead of the function's
answer. Rendered like every error (`x-amzn-ErrorType`, `x-amzn-RequestId`, a JSON body with `message`)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from silo.errors import LambdaError


class UnauthorizedException(LambdaError):
    """401: no bearer token, or one that does not verify (signature, issuer, audience, time)."""

    code = "UnauthorizedException"
    status = 401
    message_key = "message"
    error_type = None

    def __init__(self, message: str, *, token_given: bool = True) -> None:
        super().__init__(message)
        self.token_given = token_given

    def headers(self) -> dict[str, str]:
        # RFC 6750 3: a client told how to authenticate; `invalid_token` when it sent a token that failed.
        if not self.token_given:
            return {"WWW-Authenticate": 'Bearer realm="silo gateway"'}
        return {"WWW-Authenticate": 'Bearer realm="silo gateway", error="invalid_token"'}


class NotFoundException(LambdaError):
    """404: no gateway at this path (no such function, or one without a Gateway setting)."""

    code = "NotFoundException"
    status = 404
    message_key = "message"
    error_type = None


class BadGatewayException(LambdaError):
    """502: the function failed, or answered something that is not an API Gateway proxy response.
    API Gateway's body is `{"message": "Internal server error"}`; the reason goes to silo's log."""

    code = "InternalServerErrorException"
    status = 502
    message_key = "message"
    error_type = None

    def __init__(self, reason: str) -> None:
        super().__init__("Internal server error")
        self.reason = reason


# Statuses whose answers carry no body, whatever the function returned.
NO_BODY = (204, 304)


def proxy_body(answer: dict[str, Any], status: int) -> bytes:
    """The body a proxy response object (`body`, `isBase64Encoded`) gives, as API Gateway and function URLs
    decode it; BadGatewayException when it makes no sense."""
    body = answer.get("body")
    if body is not None and not isinstance(body, str):
        raise BadGatewayException(f"body must be a string (or absent); got a {type(body).__name__}")
    encoded = answer.get("isBase64Encoded", False)
    if not isinstance(encoded, bool):
        raise BadGatewayException("isBase64Encoded must be true or false")
    try:
        out = base64.b64decode(body or "", validate=True) if encoded else (body or "").encode()
    except (binascii.Error, ValueError):
        raise BadGatewayException("isBase64Encoded is true, but the body is not base64") from None
    return b"" if status in NO_BODY else out


# A header's name: an HTTP token.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What no header value may hold: control characters, of which a line break would split the header.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def header_text(value: Any, where: str) -> str:
    """A header value of a proxy response object as text; BadGatewayException when it cannot be one."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        text = str(value)
        if _BAD_VALUE.search(text):
            raise BadGatewayException(f"{where} holds a control character (a line break would split the header)")
        return text
    raise BadGatewayException(f"{where} is a {type(value).__name__}, not a string")
