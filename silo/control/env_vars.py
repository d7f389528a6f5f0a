"""Environment variables of a function: key pattern, reserved keys and the 4 KB limit, with Lambda's messages."""

from __future__ import annotations

import json
import re
from typing import Any

from silo.control.fields import dict_member
from silo.control.violations import Violations
from silo.errors import InvalidParameterValueException, InvalidRequestContentException

KEY_PATTERN = r"[a-zA-Z]([a-zA-Z0-9_])+"
LIMIT_BYTES = 4096

# Set by the runtime for every environment; letting a function override them would lie to its code
# about where it runs (and AWS_LAMBDA_RUNTIME_API would point the runtime somewhere else).
RESERVED_KEYS = frozenset(
    {
        "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
    }
)  # fmt: skip


def _given(body: dict[str, Any]) -> dict[str, Any] | None:
    env = dict_member(body, "Environment")
    if env is None:
        return None
    return dict_member(env, "Variables", "Environment.Variables") or {}


def check_shapes(body: dict[str, Any], v: Violations) -> None:
    """Model constraints: string values, and keys matching the pattern (values are sensitive, so unshown)."""
    given = _given(body)
    if not given:
        return
    for key, value in given.items():
        if not isinstance(value, str):
            raise InvalidRequestContentException(
                f"Could not parse request body into json: environment variable '{key}' must be a string"
            )
    if any(not re.fullmatch(KEY_PATTERN, k) for k in given):
        v.add_sensitive(
            "environment.variables",
            f"Map keys must satisfy constraint: [Member must satisfy regular expression pattern: {KEY_PATTERN}]",
        )


def variables(body: dict[str, Any]) -> dict[str, str] | None:
    """The variables a request sets (None when it has no Environment), after Lambda's service rules."""
    given = _given(body)
    if given is None:
        return None
    out: dict[str, str] = {str(k): str(val) for k, val in given.items()}
    reserved = [k for k in out if k in RESERVED_KEYS]
    if reserved:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment variables "
            "you have provided contains reserved keys that are currently not supported for modification. "
            f"Reserved keys used in this request: {', '.join(reserved)}"
        )
    measured = json.dumps(out, separators=(",", ":"), ensure_ascii=False)
    if len(measured.encode()) > LIMIT_BYTES:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment variables "
            f"you have provided exceeded the 4KB limit. String measured: {measured}"
        )
    return out
