"""Typed reads of members of a decoded JSON body.

A member of the wrong JSON type is a malformed request, not a constraint violation: Lambda's front
end fails to deserialise it. `null` counts as absent, as it does for Lambda's deserialiser.
"""

from __future__ import annotations

from typing import Any

from silo.errors import InvalidRequestContentException


def _wrong_type(path: str, expected: str) -> InvalidRequestContentException:
    return InvalidRequestContentException(f"Could not parse request body into json: {path} must be {expected}")


def str_member(body: dict[str, Any], key: str, path: str | None = None) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _wrong_type(path or key, "a string")


def int_member(body: dict[str, Any], key: str, path: str | None = None) -> int | None:
    value = body.get(key)
    # bool is an int subclass in Python but not in JSON.
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _wrong_type(path or key, "an integer")


def bool_member(body: dict[str, Any], key: str, path: str | None = None) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise _wrong_type(path or key, "a boolean")


def dict_member(body: dict[str, Any], key: str, path: str | None = None) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None or isinstance(value, dict):
        return value
    raise _wrong_type(path or key, "an object")


def list_member(body: dict[str, Any], key: str, path: str | None = None) -> list[Any] | None:
    value = body.get(key)
    if value is None or isinstance(value, list):
        return value
    raise _wrong_type(path or key, "a list")
