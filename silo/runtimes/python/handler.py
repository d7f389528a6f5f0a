"""Loading the handler, and the JSON the runtime exchanges: events, results, error documents.

Error types and messages are awslambdaric's, so functions and their callers see what Lambda shows.
"""

from __future__ import annotations

import decimal
import importlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # collections.abc.Callable cannot be subscripted at run time on Python 3.8
    from collections.abc import Callable

    Handler = Callable[[Any, Any], Any]

MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
MARSHAL_ERROR = "Runtime.MarshalError"
CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"

# Frames from this directory are the runtime's, not the function's; error reports leave them out.
_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class FaultError(Exception):
    """A failure the runtime diagnosed itself, reported with a `Runtime.*` type."""

    def __init__(self, error_type: str, message: str, trace: list[str] | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.trace = trace


def load_handler(name: str) -> Handler:
    """Import `module.function` (`/` allowed in the module path) and return the function."""
    try:
        module_name, function_name = name.rsplit(".", 1)
    except ValueError as exc:
        raise FaultError(MALFORMED_HANDLER_NAME, f"Bad handler '{name}': {exc}") from None
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise FaultError(BUILT_IN_MODULE_CONFLICT, f"Cannot use built-in module {module_name} as a handler module")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise FaultError(IMPORT_MODULE_ERROR, f"Unable to import module '{module_name}': {exc}") from None
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise FaultError(USER_CODE_SYNTAX_ERROR, f"Syntax error in module '{module_name}': {exc}", trace) from None
    try:
        handler: Handler = getattr(module, function_name)
    except AttributeError:
        raise FaultError(HANDLER_NOT_FOUND, f"Handler '{function_name}' missing on module '{module_name}'") from None
    return handler


def make_error(message: str, error_type: str, trace: list[str] | None, request_id: str = "") -> dict[str, Any]:
    """Lambda's error document: exactly these four keys."""
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id,
        "stackTrace": trace or [],
    }


def exception_error(exc: BaseException, request_id: str = "") -> dict[str, Any]:
    """The error document of an exception raised by function code, with the function's frames only."""
    import traceback  # only failures pay for it

    frames = [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)]
    for i, frame in enumerate(frames):
        if not frame[0].startswith(_RUNTIME_DIR):
            frames = frames[i:]
            break
    # Plain tuples, as awslambdaric formats them: no column carets on Python 3.11+.
    trace = traceback.format_list(frames)  # type: ignore[arg-type]
    return make_error(str(exc), type(exc).__name__, trace, request_id)


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, decimal.Decimal):
            # awslambdaric writes Decimals as numbers; the stdlib cannot emit raw digits, so this is
            # exact for integers and a float otherwise.
            return int(o) if o.is_finite() and o == o.to_integral_value() else float(o)
        return super().default(o)


def _encoder() -> json.JSONEncoder:
    # awslambdaric's python3.12 runtime alone writes non-ASCII characters unescaped.
    ascii_only = os.environ.get("AWS_EXECUTION_ENV") != "AWS_Lambda_python3.12"
    return _Encoder(ensure_ascii=ascii_only)


_ENCODE = _encoder().encode


def to_json(obj: Any) -> bytes:
    return _ENCODE(obj).encode("utf-8")


def unmarshal(body: bytes, content_type: str) -> Any:
    if content_type != "application/json":
        return body
    try:
        return json.loads(body)
    except ValueError as exc:
        raise FaultError(UNMARSHAL_ERROR, f"Unable to unmarshal input: {exc}") from None


def marshal(result: Any) -> tuple[bytes, str]:
    if isinstance(result, bytes):
        return result, "application/unknown"
    try:
        return to_json(result), "application/json"
    except Exception as exc:
        raise FaultError(MARSHAL_ERROR, f"Unable to marshal response: {exc}") from None
