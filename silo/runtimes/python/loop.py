"""The runtime's life: INIT (import the handler, or report why not and exit), then the invoke loop.

The Runtime API client is passed in, so the loop is tested with a fake one. An init failure is
reported and ends the process; an invocation failure is reported and the loop goes on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from . import logs
from .client import InvocationRequest, RuntimeClient
from .context import ContextUnmarshalError, LambdaContext
from .handler import (
    CONTEXT_UNMARSHAL_ERROR,
    FaultError,
    exception_error,
    load_handler,
    make_error,
    marshal,
    to_json,
    unmarshal,
)

if TYPE_CHECKING:
    from .handler import Handler

LAMBDA_TASK_ROOT = "/var/task"
OPT_PYTHON = "/opt/python"
# Where the development backend says the SDK is on the host (isolating backends show it at Lambda's path);
# silo.runtimes.catalog.SDK_VARIABLE, which the runtime cannot import.
SDK_VARIABLE = "SILO_RUNTIME_SDK"


class Client(Protocol):
    def wait_next_invocation(self) -> InvocationRequest: ...

    def post_invocation_result(self, request_id: str, body: bytes, content_type: str) -> int: ...

    def post_invocation_error(self, request_id: str, error_doc: bytes) -> int: ...

    def post_init_error(self, error_doc: bytes, error_type: str) -> int: ...


def _flush() -> None:
    # Output written before the answer must reach the log before the platform sees the answer.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


def init(client: Client, handler_name: str, json_logs: bool) -> Handler | None:
    """Import the handler. On failure report it to /init/error and return None."""
    try:
        return load_handler(handler_name)
    except FaultError as fault:
        error = make_error(fault.message, fault.error_type, fault.trace)
    except Exception as exc:
        error = exception_error(exc)
    logs.log_error(error, json_logs)
    _flush()
    client.post_init_error(to_json(error), error["errorType"])
    return None


def handle(client: Client, handler: Handler, request: InvocationRequest, json_logs: bool) -> None:
    """Run one invocation and post its result or its error."""
    request_id = request.request_id
    logs.Invoke.request_id = request_id
    logs.Invoke.tenant_id = request.tenant_id
    if request.trace_id is not None:
        os.environ["_X_AMZN_TRACE_ID"] = request.trace_id
    else:
        os.environ.pop("_X_AMZN_TRACE_ID", None)
    # silo's per-tenant credentials: the tenant token comes with each invocation (docs/operating.md).
    if request.tenant_token is not None:
        os.environ["SILO_TENANT_TOKEN"] = request.tenant_token
    else:
        os.environ.pop("SILO_TENANT_TOKEN", None)
    # And the tenant's PostgreSQL login, which libpq (psycopg.connect() with no arguments) reads.
    if request.postgres_user is not None and request.postgres_password is not None:
        os.environ["PGUSER"] = request.postgres_user
        os.environ["PGPASSWORD"] = request.postgres_password
    error: dict[str, Any] | None = None
    try:
        try:
            context = LambdaContext(
                request_id,
                request.deadline_ms,
                request.invoked_function_arn,
                request.tenant_id,
                request.client_context,
                request.cognito_identity,
            )
        except ContextUnmarshalError as exc:
            raise FaultError(CONTEXT_UNMARSHAL_ERROR, str(exc)) from None
        event = unmarshal(request.body, request.content_type)
        body, content_type = marshal(handler(event, context))
    except FaultError as fault:
        error = make_error(fault.message, fault.error_type, fault.trace, request_id)
    except Exception as exc:
        error = exception_error(exc, request_id)
    if error is None:
        _flush()
        status = client.post_invocation_result(request_id, body, content_type)
    else:
        logs.log_error(error, json_logs)
        _flush()
        status = client.post_invocation_error(request_id, to_json(error))
    if status != 202:
        # 413 (too large) is already the caller's answer; anything else is the platform's concern.
        sys.stderr.write(f"[WARNING] the Runtime API answered {status} for request {request_id}\n")


def run(client: Client, handler_name: str, json_logs: bool) -> int:
    """INIT then the invoke loop; returns only when init failed (the process exit status)."""
    handler = init(client, handler_name, json_logs)
    if handler is None:
        return 1
    while True:
        handle(client, handler, client.wait_next_invocation(), json_logs)


def _line_buffered() -> None:
    # Prints from the function and log records must interleave in the order they were made.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)


def search_path(task_root: str) -> list[str]:
    """What goes before the interpreter's own path, in Lambda's order: the code, then the layers' Python
    directories (`python/lib/python3.X/site-packages` and `python` of /opt). Layers are at /opt only where
    the code is at /var/task, laid out as on Lambda; the development backend runs the code where it is
    stored and shows no layers, so the host's /opt stays off the path there."""
    if task_root != LAMBDA_TASK_ROOT:
        return [task_root]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return [task_root, f"{OPT_PYTHON}/lib/{version}/site-packages", OPT_PYTHON]


def sdk_path(task_root: str, environ: Mapping[str, str]) -> str | None:
    """Where the boto3 and botocore the runtime ships are (silo.store.sdk): Lambda's site-packages of the
    interpreter, which goes after the standard library, so the code's and the layers' own boto3 win."""
    if task_root != LAMBDA_TASK_ROOT:
        return environ.get(SDK_VARIABLE) or None
    return f"/var/lang/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def main(environ: Mapping[str, str], connection_fd: int = -1) -> int:
    """Entry of the runtime process: environment in, exit status out. `connection_fd`: a Runtime API
    connection the platform already made (the jail's socket pair), used before any other."""
    task_root = environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    sys.path[0:0] = search_path(task_root)
    sdk = sdk_path(task_root, environ)
    if sdk is not None and sdk not in sys.path:
        sys.path.append(sdk)
    _line_buffered()
    json_logs = (environ.get("AWS_LAMBDA_LOG_FORMAT") or "").upper() == "JSON"
    logs.setup(json_logs, logs.level_from_env(environ.get("AWS_LAMBDA_LOG_LEVEL")))
    client = RuntimeClient(environ["AWS_LAMBDA_RUNTIME_API"], connection_fd)
    try:
        return run(client, environ.get("_HANDLER", ""), json_logs)
    finally:
        _flush()
        client.close()
