"""Tags of functions: TagResource / UntagResource / ListTags and CreateFunction's `Tags`, with Lambda's limits.

Pure functions. Tags belong to the function, not to a version or an alias: a qualified ARN is refused, as on
Lambda. The wording of errors is Lambda's, as recorded from AWS in LocalStack's snapshot tests
(test_lambda_api.snapshot.json, TestLambdaTags and TestLambdaTag).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from silo.control.names import FunctionRef
from silo.control.violations import Violations
from silo.errors import InvalidParameterValueException, InvalidRequestContentException, ResourceNotFoundException

# Lambda's (and every AWS service's) limit of tags on one resource.
MAX_TAGS = 50
KEY_MAX = 128
VALUE_MAX = 256
TAG_PATTERN = r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)"
TAGGABLE_RESOURCE_PATTERN = (
    r"arn:(aws[a-zA-Z-]*):lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:"
    r"(function:[a-zA-Z0-9-_]+(:(\$LATEST|[a-zA-Z0-9-_]+))?|code-signing-config:csc-[a-z0-9]{17}|"
    r"event-source-mapping:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|"
    r"(capacity-provider|network-connector):[a-zA-Z0-9-_]{1,64})"
)
_RESOURCE = re.compile(TAGGABLE_RESOURCE_PATTERN, re.ASCII)
_FUNCTION = re.compile(
    r"arn:aws[a-zA-Z-]*:lambda:(?P<region>[^:]+):(?P<account>\d{12}):function:(?P<name>[a-zA-Z0-9-_]+)"
    r"(?::(?P<qualifier>[^:]+))?",
    re.ASCII,
)
_EXTRA = frozenset("_.:/=+-@")
TOO_MANY = "Number of tags exceeds resource tag limit."
QUALIFIED = "Tags on function aliases and versions are not supported. Please specify a function ARN."
# What Lambda answers a TagResource without a tag (AWS-recorded).
NO_TAGS = "An error occurred and the request cannot be processed."


def _allowed(text: str) -> bool:
    """The model's pattern: letters, separators and numbers of any script, and `_.:/=+-@`."""
    return all(c in _EXTRA or unicodedata.category(c)[0] in "LZN" for c in text)


def resource_function(resource: str) -> FunctionRef:
    """The function a taggable resource ARN names; any other resource is none of silo's."""
    v = Violations()
    if not 1 <= len(resource) <= 10000:
        v.add(resource, "resource", "Member must have length less than or equal to 10000")
    if not _RESOURCE.fullmatch(resource):
        v.add(resource, "resource", f"Member must satisfy regular expression pattern: {TAGGABLE_RESOURCE_PATTERN}")
    v.raise_if_any()
    match = _FUNCTION.fullmatch(resource)
    if match is None:
        kind = resource.split(":")[5]
        raise ResourceNotFoundException(f"silo has no {kind} resources; only functions can be tagged: {resource}")
    if match["qualifier"] is not None:
        raise InvalidParameterValueException(QUALIFIED)
    return FunctionRef(match["name"], None, match["region"], match["account"])


def check_tags(tags: dict[str, Any], member: str = "tags") -> dict[str, str]:
    """Tags as given (keys 1..128, values 0..256, the model's characters), as strings."""
    if any(not isinstance(value, str) for value in tags.values()):
        raise InvalidRequestContentException(
            f"Could not parse request body into json: every value of {member} must be a string"
        )
    out: dict[str, str] = dict(tags)
    v = Violations()
    if any(not 1 <= len(key) <= KEY_MAX or not _allowed(key) for key in out):
        v.add(
            show_map(out),
            member,
            f"Map keys must satisfy constraint: [Member must have length less than or equal to {KEY_MAX}, "
            "Member must have length greater than or equal to 1, "
            f"Member must satisfy regular expression pattern: {TAG_PATTERN}]",
        )
    if any(len(value) > VALUE_MAX or not _allowed(value) for value in out.values()):
        v.add(
            show_map(out),
            member,
            f"Map value must satisfy constraint: [Member must have length less than or equal to {VALUE_MAX}, "
            f"Member must satisfy regular expression pattern: {TAG_PATTERN}]",
        )
    v.raise_if_any()
    return out


def show_map(tags: dict[str, Any]) -> str:
    """A map as Lambda's validator prints it (Java's toString): `{a=1, b=2}`."""
    return "{" + ", ".join(f"{k}={val}" for k, val in tags.items()) + "}"


def merged(current: dict[str, str], new: dict[str, str]) -> dict[str, str]:
    """TagResource: the new tags over the current ones, within Lambda's 50 per function."""
    if not new:
        raise InvalidParameterValueException(NO_TAGS)
    out = {**current, **new}
    if len(out) > MAX_TAGS:
        raise InvalidParameterValueException(TOO_MANY)
    return out


def for_create(tags: dict[str, Any]) -> dict[str, str]:
    """CreateFunction's Tags: checked like TagResource's."""
    out = check_tags(tags)
    if len(out) > MAX_TAGS:
        raise InvalidParameterValueException(TOO_MANY)
    return out
