"""Function names and ARNs: parsing what clients send, building what Lambda reports.

A client may address a function as `my-function`, `my-function:qualifier`, a partial ARN
`123456789012:function:my-function[:qualifier]` or a full ARN
`arn:aws:lambda:us-east-1:123456789012:function:my-function[:qualifier]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from silo.control.violations import Violations
from silo.errors import InvalidParameterValueException, ResourceNotFoundException

LATEST = "$LATEST"

# The service model's patterns, verbatim: they appear in error messages.
FUNCTION_NAME_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
    r"(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)
NAMESPACED_FUNCTION_NAME_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
    r"(\d{12}:)?(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
)
QUALIFIER_PATTERN = r"\$(LATEST(\.PUBLISHED)?)|[a-zA-Z0-9-_$]+"

# The same languages with the parts named, so one match both validates and splits.
_PARTS = (
    r"(?:arn:(?:aws[a-zA-Z-]*)?:lambda:)?"
    r"(?:(?P<region>(?:eusc-)?[a-z]{{2}}(?:-gov|-iso[a-z]?)?-[a-z]+-\d):)?"
    r"(?:(?P<account>\d{{12}}):)?(?:function:)?(?P<name>{name})(?::(?P<qualifier>{qualifier}))?"
)
# ASCII: the model's `\d` is Java's, 0-9 only; Python's would take the digits of any script.
_FUNCTION_NAME = re.compile(_PARTS.format(name=r"[a-zA-Z0-9-_]+", qualifier=r"\$LATEST|[a-zA-Z0-9-_]+"), re.ASCII)
_NAMESPACED = re.compile(
    _PARTS.format(name=r"[a-zA-Z0-9-_.]+", qualifier=r"\$LATEST(?:\.PUBLISHED)?|[a-zA-Z0-9-_]+"), re.ASCII
)
_QUALIFIER = re.compile(QUALIFIER_PATTERN, re.ASCII)

NAME_ONLY_MAX = 64


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """What a client's FunctionName designates, before looking anything up."""

    name: str
    qualifier: str | None
    region: str | None
    account: str | None


def function_arn(region: str, account: str, name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
    return arn if qualifier is None else f"{arn}:{qualifier}"


def match_function_name(value: str, *, namespaced: bool, v: Violations) -> re.Match[str] | None:
    """Check a FunctionName against the model, adding any failure to `v`; the match when it passed.

    `namespaced` selects the model's NamespacedFunctionName (read and delete operations: 256 chars,
    dots, `$LATEST.PUBLISHED`) over FunctionName (create and update: 140 chars).
    """
    pattern, max_len = (NAMESPACED_FUNCTION_NAME_PATTERN, 256) if namespaced else (FUNCTION_NAME_PATTERN, 140)
    before = len(v.items)
    if len(value) < 1:
        v.add(value, "functionName", "Member must have length greater than or equal to 1")
    if len(value) > max_len:
        v.add(value, "functionName", f"Member must have length less than or equal to {max_len}")
    match = (_NAMESPACED if namespaced else _FUNCTION_NAME).fullmatch(value)
    if match is None:
        v.add(value, "functionName", f"Member must satisfy regular expression pattern: {pattern}")
    return match if len(v.items) == before else None


def function_ref(value: str, match: re.Match[str]) -> FunctionRef:
    """The parts of a FunctionName that passed `match_function_name`."""
    ref = FunctionRef(match["name"], match["qualifier"], match["region"], match["account"])
    if len(ref.name) > NAME_ONLY_MAX:
        # Lambda reports this one as InvalidParameterValueException, not ValidationException (AWS-recorded).
        raise InvalidParameterValueException(
            f"1 validation error detected: Value '{value}' at 'functionName' failed to satisfy "
            f"constraint: Member must have length less than or equal to {NAME_ONLY_MAX}"
        )
    return ref


def parse_function_name(value: str, *, namespaced: bool) -> FunctionRef:
    """Validate and split a FunctionName given as a path parameter."""
    v = Violations()
    match = match_function_name(value, namespaced=namespaced, v=v)
    if match is None:
        raise v.error()
    return function_ref(value, match)


def check_qualifier(value: str) -> None:
    v = Violations()
    if len(value) > 128:
        v.add(value, "qualifier", "Member must have length less than or equal to 128")
    if not value:
        v.add(value, "qualifier", "Member must have length greater than or equal to 1")
    if not _QUALIFIER.fullmatch(value):
        v.add(value, "qualifier", f"Member must satisfy regular expression pattern: {QUALIFIER_PATTERN}")
    v.raise_if_any()


def merge_qualifier(ref: FunctionRef, qualifier: str | None) -> str | None:
    """The one qualifier a request means: from the name, from the Qualifier parameter, or neither."""
    if qualifier is not None:
        check_qualifier(qualifier)
    if ref.qualifier is not None and qualifier is not None and ref.qualifier != qualifier:
        raise InvalidParameterValueException(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    return ref.qualifier if ref.qualifier is not None else qualifier


def not_found(region: str, account: str, name: str, qualifier: str | None = None) -> ResourceNotFoundException:
    return ResourceNotFoundException(f"Function not found: {function_arn(region, account, name, qualifier)}")
