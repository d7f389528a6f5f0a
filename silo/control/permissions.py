"""Resource policies of functions: AddPermission's statements as Lambda writes them, and GetPolicy's document.

Pure functions over the request body and the stored statements. A policy belongs to one qualifier: the
unqualified function (which Lambda stores as `$LATEST`'s, though it refuses `Qualifier=$LATEST`), a
published version or an alias. silo stores and returns policies; it does not enforce them yet (its callers
are authenticated with silo keys, docs/security.md), and says so in docs/design-notes.md.

The wording of errors and the shape of statements are Lambda's, as recorded from AWS in LocalStack's
snapshot tests (test_lambda_api.snapshot.json, TestLambdaPermissions).
"""

from __future__ import annotations

import json
import re
from typing import Any

from silo.control.fields import bool_member, str_member
from silo.control.violations import Violations, enum_constraint
from silo.errors import (
    InvalidParameterValueException,
    PolicyLengthExceededException,
    ResourceConflictException,
    ResourceNotFoundException,
)

STATEMENT_ID_PATTERN = r"([a-zA-Z0-9-_]+)"
NAMESPACED_STATEMENT_ID_PATTERN = r"([a-zA-Z0-9-_.]+)"
ACTION_PATTERN = r"(lambda:[*]|lambda:[a-zA-Z]+|[*])"
PRINCIPAL_PATTERN = r"[^\s]+"
SOURCE_ACCOUNT_PATTERN = r"\d{12}"
EVENT_SOURCE_TOKEN_PATTERN = r"[a-zA-Z0-9._\-]+"
PRINCIPAL_ORG_ID_PATTERN = r"o-[a-z0-9]{10,32}"
ARN_PATTERN = (
    r"arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:"
    r"(\d{12})?:(.*)"
)
FUNCTION_URL_AUTH_TYPES = ("NONE", "AWS_IAM")
# Lambda's quota on a function's resource policy (each qualifier's document).
POLICY_MAX_BYTES = 20480

LATEST_REFUSED = "We currently do not support adding policies for $LATEST."
NO_RESOURCE = "The resource you requested does not exist."
NO_POLICY = "No policy is associated with the given resource."
BAD_PRINCIPAL = "The provided principal was invalid. Please check the principal and try again."
_SERVICE = re.compile(r"[a-z0-9][a-z0-9.-]*\.(amazonaws\.com|amazon\.com|amazonaws\.com\.cn)", re.ASCII)
_ACCOUNT = re.compile(r"\d{12}", re.ASCII)


def _pattern(value: str, member: str, pattern: str, v: Violations, *, low: int, high: int) -> None:
    if len(value) < low:
        v.add(value, member, f"Member must have length greater than or equal to {low}")
    if len(value) > high:
        v.add(value, member, f"Member must have length less than or equal to {high}")
    if value and not re.fullmatch(pattern, value, re.ASCII):
        v.add(value, member, f"Member must satisfy regular expression pattern: {pattern}")


def principal(value: str, account: str) -> str | dict[str, str]:
    """The statement's Principal for AddPermission's: `*`, an account (its root), an ARN, or a service."""
    if value == "*":
        return "*"
    if _ACCOUNT.fullmatch(value):
        return {"AWS": f"arn:aws:iam::{value}:root"}
    if value.startswith("arn:"):
        return {"AWS": value}
    if _SERVICE.fullmatch(value):
        return {"Service": value}
    raise InvalidParameterValueException(BAD_PRINCIPAL)


def statement(body: dict[str, Any], resource_arn: str, account: str) -> dict[str, Any]:
    """Validate an AddPermission body; the statement it adds, in Lambda's member order."""
    v = Violations()
    sid = str_member(body, "StatementId")
    action = str_member(body, "Action")
    who = str_member(body, "Principal")
    for member, value in (("statementId", sid), ("action", action)):
        if value is None:
            v.add("null", member, "Member must not be null")
    if who is None:
        v.add("null", "principal", "Member must not be null")
    if sid is not None:
        _pattern(sid, "statementId", STATEMENT_ID_PATTERN, v, low=1, high=100)
    if action is not None:
        _pattern(action, "action", ACTION_PATTERN, v, low=0, high=10000)
    if who is not None:
        _pattern(who, "principal", PRINCIPAL_PATTERN, v, low=0, high=2048)
    source_arn = str_member(body, "SourceArn")
    if source_arn is not None:
        _pattern(source_arn, "sourceArn", ARN_PATTERN, v, low=0, high=10000)
    source_account = str_member(body, "SourceAccount")
    if source_account is not None:
        _pattern(source_account, "sourceAccount", SOURCE_ACCOUNT_PATTERN, v, low=0, high=12)
    token = str_member(body, "EventSourceToken")
    if token is not None:
        _pattern(token, "eventSourceToken", EVENT_SOURCE_TOKEN_PATTERN, v, low=0, high=256)
    org = str_member(body, "PrincipalOrgID")
    if org is not None:
        _pattern(org, "principalOrgID", PRINCIPAL_ORG_ID_PATTERN, v, low=12, high=34)
    auth_type = str_member(body, "FunctionUrlAuthType")
    if auth_type is not None and auth_type not in FUNCTION_URL_AUTH_TYPES:
        v.add(auth_type, "functionUrlAuthType", enum_constraint(FUNCTION_URL_AUTH_TYPES))
    via_url = bool_member(body, "InvokedViaFunctionUrl")
    if v or sid is None or action is None or who is None:
        raise v.error()
    out: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal(who, account),
        "Action": action,
        "Resource": resource_arn,
    }
    equals: dict[str, str] = {}
    if source_account is not None:
        equals["AWS:SourceAccount"] = source_account
    if auth_type is not None:
        equals["lambda:FunctionUrlAuthType"] = auth_type
    if org is not None:
        equals["aws:PrincipalOrgID"] = org
    if token is not None:
        equals["lambda:EventSourceToken"] = token
    condition: dict[str, Any] = {}
    if equals:
        condition["StringEquals"] = equals
    if source_arn is not None:
        condition["ArnLike"] = {"AWS:SourceArn": source_arn}
    if via_url:
        condition["Bool"] = {"lambda:InvokedViaFunctionUrl": "true"}
    if condition:
        out["Condition"] = condition
    return out


def document(statements: list[dict[str, Any]]) -> str:
    """GetPolicy's `Policy`: the document as a JSON string."""
    return json.dumps({"Version": "2012-10-17", "Id": "default", "Statement": statements}, separators=(",", ":"))


def added(statements: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements with `new` appended; a statement id may be used once per policy."""
    if any(s["Sid"] == new["Sid"] for s in statements):
        raise ResourceConflictException(
            f"The statement id ({new['Sid']}) provided already exists. Please provide a new statement id, "
            "or remove the existing statement."
        )
    out = [*statements, new]
    size = len(document(out).encode())
    if size > POLICY_MAX_BYTES:
        raise PolicyLengthExceededException(
            f"The final policy size ({size}) is bigger than the limit ({POLICY_MAX_BYTES})."
        )
    return out


def check_statement_id(sid: str) -> None:
    v = Violations()
    _pattern(sid, "statementId", NAMESPACED_STATEMENT_ID_PATTERN, v, low=1, high=100)
    v.raise_if_any()


def removed(statements: list[dict[str, Any]], sid: str) -> list[dict[str, Any]]:
    """The statements without `sid`'s; RemovePermission of a statement not there is refused, as on Lambda."""
    if not statements:
        raise ResourceNotFoundException(NO_POLICY)
    out = [s for s in statements if s["Sid"] != sid]
    if len(out) == len(statements):
        raise ResourceNotFoundException(f"Statement {sid} is not found in resource policy.")
    return out
