"""Typed reads of members of a decoded JSON body.

A member of the wrong JSON type is a malformed request, not a constraint violation: Lambda's front
end fails to deserialise it. `null` counts as absent, as it does for Lambda's deserialiser.
"""

from __future__ import annotations

from typing import Any

from silo.errors import InvalidParameterValueException, InvalidRequestContentException


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


def tenant_setting(
    name: str, value: Any, members: tuple[str, ...], *, per_tenant: bool, why_per_tenant: str
) -> dict[str, Any] | None:
    """A silo setting that is an object of `members` serving functions in tenant isolation mode only
    (the gateway, the credentials): the object, None for null, or InvalidParameterValueException naming
    the setting. `why_per_tenant` begins the refusal for a function without tenant isolation ("..., so it
    serves")."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidParameterValueException(
            f"{name}: must be an object (or null to remove it); got {type(value).__name__}."
        )
    if not per_tenant:
        raise InvalidParameterValueException(
            f"{name}: {why_per_tenant} only functions in tenant isolation mode; create the "
            'function with TenancyConfig {"TenantIsolationMode": "PER_TENANT"}.'
        )
    unknown = sorted(set(value) - set(members))
    if unknown:
        raise InvalidParameterValueException(
            f"{name}: unknown member(s) {', '.join(unknown)}; known: {', '.join(members)}."
        )
    return value
