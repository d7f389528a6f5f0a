"""The `context` object handlers receive, attribute for attribute as awslambdaric builds it."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _repr(obj: object, names: tuple[str, ...]) -> str:
    """awslambdaric's repr style: `Name([a=1,b=2])`."""
    fields = ",".join(f"{name}={getattr(obj, name)}" for name in names)
    return f"{type(obj).__name__}([{fields}])"


class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, doc: dict[str, Any] | None) -> None:
        doc = doc or {}
        self.cognito_identity_id = doc.get("cognitoIdentityId")
        self.cognito_identity_pool_id = doc.get("cognitoIdentityPoolId")

    def __repr__(self) -> str:
        return _repr(self, self.__slots__)


class Client:
    # awslambdaric's order, which its repr shows.
    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")  # noqa: RUF023

    def __init__(self, doc: dict[str, Any]) -> None:
        for name in self.__slots__:
            setattr(self, name, doc.get(name))

    def __repr__(self) -> str:
        return _repr(self, self.__slots__)


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.custom = doc.get("custom")
        self.env = doc.get("env")
        client = doc.get("client")
        self.client = Client(client) if isinstance(client, dict) else None

    def __repr__(self) -> str:
        return _repr(self, ("custom", "env", "client"))


class ContextUnmarshalError(ValueError):
    """A context header that is not the JSON it must be."""


def _parse(header: str | None, name: str) -> dict[str, Any] | None:
    if not header:
        return None
    try:
        doc = json.loads(header)
    except ValueError as exc:
        raise ContextUnmarshalError(f"Unable to parse {name} JSON: {exc}") from None
    return doc if isinstance(doc, dict) else None


# Read live, not at import: a template process may import this before its child's environment is set.
_ENV = os.environ


_CONTEXT_FIELDS = (
    "aws_request_id",
    "log_group_name",
    "log_stream_name",
    "function_name",
    "memory_limit_in_mb",
    "function_version",
    "invoked_function_arn",
    "client_context",
    "identity",
    "tenant_id",
)


class LambdaContext:
    """What a handler learns about its invocation and its environment."""

    def __init__(
        self,
        request_id: str,
        deadline_ms: int,
        invoked_function_arn: str | None,
        tenant_id: str | None,
        client_context: str | None = None,
        cognito_identity: str | None = None,
    ) -> None:
        self.aws_request_id = request_id
        self.log_group_name = _ENV.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = _ENV.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = _ENV.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = _ENV.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = _ENV.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id = tenant_id
        client_doc = _parse(client_context, "Client Context")
        self.client_context = ClientContext(client_doc) if client_doc is not None else None
        self.identity = CognitoIdentity(_parse(cognito_identity, "Cognito Identity"))
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        remaining = self._deadline_ms - int(time.time() * 1000)
        return remaining if remaining > 0 else 0

    def log(self, msg: object) -> None:
        sys.stdout.write(str(msg))

    def __repr__(self) -> str:
        return _repr(self, _CONTEXT_FIELDS)
