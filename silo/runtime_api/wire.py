"""What the Runtime API writes on the wire: pre-built answers, the /next answer, error documents.

Pure functions over plain data, so the connection code stays small and these stay easy to test.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import time
from http import HTTPStatus

from silo.runtime_api import paths
from silo.types import Invocation

# Lambda's own normalisation of Lambda-Runtime-Function-Error-Type (RIE fatalerror package).
ERROR_TYPE_PATTERN = re.compile(r"(Runtime|Function)\.[A-Z][a-zA-Z]+")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def answer(status: int, body: bytes, *, close: bool = False) -> bytes:
    """A complete HTTP/1.1 answer with a JSON body."""
    phrase = HTTPStatus(status).phrase
    connection = b"Connection: close\r\n" if close else b""
    return (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n".encode()
        + connection
        + b"\r\n"
        + body
    )


def error_doc(message: str, error_type: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


ACCEPTED = answer(202, b'{"status":"OK"}')


def not_found(method: bytes, path: bytes) -> bytes:
    text = f"No Runtime API route for {method.decode('latin-1')} {path.decode('latin-1')}"
    return answer(404, error_doc(text, "NotFound"))


def method_not_allowed(method: bytes, path: bytes) -> bytes:
    text = f"Method {method.decode('latin-1')} not allowed on {path.decode('latin-1')}"
    return answer(405, error_doc(text, "MethodNotAllowed"))


def invalid_request_id(request_id: bytes) -> bytes:
    text = f"Invalid request ID: {request_id.decode('latin-1')!r} is not the invocation in flight"
    return answer(400, error_doc(text, "InvalidRequestID"))


def forbidden(why: str) -> bytes:
    return answer(403, error_doc(why, "AccessDenied"))


def invalid_state_transition(what: str) -> bytes:
    return answer(403, error_doc(f"State transition is not allowed: {what}", "InvalidStateTransition"))


def bad_request(why: str) -> bytes:
    return answer(400, error_doc(why, "InvalidRequest"), close=True)


def too_large(max_bytes: int, *, close: bool = False) -> bytes:
    text = f"Exceeded maximum allowed payload size ({max_bytes} bytes)."
    return answer(413, error_doc(text, "RequestEntityTooLarge"), close=close)


def response_too_large_doc(max_bytes: int) -> bytes:
    """The payload the caller sees when the function's answer is too big (Lambda's wording)."""
    text = f"Response payload size exceeded maximum allowed payload size ({max_bytes} bytes)."
    return error_doc(text, "Function.ResponseSizeTooLarge")


def no_response_doc(request_id: str) -> bytes:
    text = f"RequestId: {request_id} Error: Runtime asked for the next invocation without answering this one"
    return error_doc(text, "Runtime.NoResponse")


def trace_id() -> str:
    """An X-Ray trace header. Sampled=0: silo records no traces, the ids only correlate logs."""
    # random, not os.urandom: the ids need to be unique, not secret, and this avoids a syscall.
    bits = random.getrandbits
    return f"Root=1-{int(time.time()):08x}-{bits(96):024x};Parent={bits(64):016x};Sampled=0"


def client_context_text(encoded: str) -> str | None:
    """The Client-Context header value: the caller's base64 JSON, decoded to text on one line."""
    try:
        text = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if "\r" in text or "\n" in text:
        # A header cannot carry line breaks. JSON can always be re-encoded without them.
        try:
            text = json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            return None
    return text


def _header_safe(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} contains a line break and cannot be sent as a header")
    return value


def next_head(
    inv: Invocation, deadline_ms: int, tenant_token: str | None = None, postgres: tuple[str, str] | None = None
) -> bytes:
    """Status line and headers of the GET /next answer that hands `inv` to the runtime (and the environment's
    tenant token and PostgreSQL user and password, when its function has them)."""
    lines = [
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
        f"{paths.REQUEST_ID}: {_header_safe(inv.request_id, 'request id')}\r\n",
        f"{paths.DEADLINE_MS}: {deadline_ms}\r\n",
        f"{paths.INVOKED_FUNCTION_ARN}: {_header_safe(inv.invoked_arn, 'invoked ARN')}\r\n",
        f"{paths.TRACE_ID}: {trace_id()}\r\n",
    ]
    if inv.client_context:
        context = client_context_text(inv.client_context)
        if context is not None:
            lines.append(f"{paths.CLIENT_CONTEXT}: {context}\r\n")
    if inv.tenant_id is not None:
        lines.append(f"{paths.TENANT_ID}: {_header_safe(inv.tenant_id, 'tenant id')}\r\n")
    if tenant_token is not None:
        lines.append(f"{paths.TENANT_TOKEN_HEADER}: {_header_safe(tenant_token, 'tenant token')}\r\n")
    if postgres is not None:
        user, password = postgres
        lines.append(f"{paths.POSTGRES_USER_HEADER}: {_header_safe(user, 'PostgreSQL user')}\r\n")
        lines.append(f"{paths.POSTGRES_PASSWORD_HEADER}: {_header_safe(password, 'PostgreSQL password')}\r\n")
    lines.append(f"Content-Length: {len(inv.payload)}\r\n\r\n")
    return "".join(lines).encode()


def normalise_error(body: bytes, header_type: str | None) -> tuple[bytes, str]:
    """The caller-visible error document and its error type, from what a runtime posted.

    The header wins when it is well formed; awslambdaric sends none on /error, so the body's
    `errorType` is the usual source. A body that is not a JSON object is wrapped into one, so
    callers always receive Lambda's error shape.
    """
    doc: object = None
    try:
        doc = json.loads(body)
    except ValueError:
        pass
    if header_type is not None and ERROR_TYPE_PATTERN.fullmatch(header_type):
        error_type: str | None = header_type
    else:
        error_type = None
    if error_type is None and isinstance(doc, dict):
        body_type = doc.get("errorType")
        if isinstance(body_type, str) and body_type:
            error_type = body_type
    if error_type is None:
        error_type = "Function.Unknown" if (header_type or "").startswith("Function") else "Runtime.Unknown"
    if not isinstance(doc, dict):
        body = error_doc(body.decode("utf-8", "replace"), error_type)
    return body, error_type
