"""Aliases: what Create/UpdateAlias ask, Lambda's rules for RoutingConfig, and which version a call through
a weighted alias runs. Pure functions; the alias operations (silo.control.aliasing) apply them.

An alias names one version of its function and may send a share of the calls (a weight from 0 to 1) to one
other version. Which version a call runs:

- a function without tenant isolation: drawn at random for each call, by the weight;
- a PER_TENANT function: the tenant id is hashed, with the function's and the alias's names, to a point in
  [0, 1), and the tenant runs the additional version when its point is below the weight. So a tenant's calls
  all run one version while the weights hold, and raising a weight only moves tenants onto the additional
  version (never back and forth); each alias spreads tenants independently of the others.

The wording of errors is Lambda's, as recorded from AWS in LocalStack's snapshot tests
(test_lambda_api.snapshot.json, TestLambdaAlias).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from silo.control.fields import dict_member, str_member
from silo.control.names import LATEST, function_arn
from silo.control.violations import Violations, show
from silo.errors import InvalidParameterValueException, InvalidRequestContentException
from silo.store.aliases import AliasRecord

ALIAS_PATTERN = r"(?!^[0-9]+$)([a-zA-Z0-9-_]+)"
VERSION_PATTERN = r"(\$LATEST|[0-9]+)"
ADDITIONAL_VERSION_PATTERN = r"[0-9]+"
_ALIAS = re.compile(r"(?![0-9]+$)[a-zA-Z0-9_-]+", re.ASCII)
_VERSION = re.compile(r"\$LATEST|[0-9]+", re.ASCII)
_ADDITIONAL = re.compile(r"[0-9]+", re.ASCII)
# ListAliases answers at most this many a page.
LIST_PAGE_MAX = 50


@dataclass(frozen=True, slots=True)
class AliasRequest:
    function_version: str | None
    description: str | None
    weights: dict[str, float] | None  # None: RoutingConfig not given
    revision_id: str | None


def check_name(name: str, v: Violations) -> None:
    if not 1 <= len(name) <= 128:
        v.add(name, "name", "Member must have length less than or equal to 128")
    if not _ALIAS.fullmatch(name):
        v.add(name, "name", f"Member must satisfy regular expression pattern: {ALIAS_PATTERN}")


def is_alias(qualifier: str) -> bool:
    """Whether a qualifier can only name an alias (not `$LATEST`, not a version number)."""
    return _ALIAS.fullmatch(qualifier) is not None


def _weights(body: dict[str, Any], v: Violations) -> dict[str, float] | None:
    routing = dict_member(body, "RoutingConfig")
    if routing is None:
        return None
    given = dict_member(routing, "AdditionalVersionWeights", "RoutingConfig.AdditionalVersionWeights") or {}
    out: dict[str, float] = {}
    member = "routingConfig.additionalVersionWeights"
    for key, weight in given.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidRequestContentException(
                "Could not parse request body into json: every weight of RoutingConfig.AdditionalVersionWeights "
                "must be a number"
            )
        out[str(key)] = float(weight)
    shown = "{" + ", ".join(f"{k}={show(w)}" for k, w in out.items()) + "}"
    if any(not 1 <= len(k) <= 1024 or not _ADDITIONAL.fullmatch(k) for k in out):
        v.add(
            shown,
            member,
            "Map keys must satisfy constraint: [Member must have length less than or equal to 1024, Member must "
            f"have length greater than or equal to 1, Member must satisfy regular expression pattern: "
            f"{ADDITIONAL_VERSION_PATTERN}]",
        )
    if any(not 0.0 <= w <= 1.0 for w in out.values()):
        v.add(
            shown,
            member,
            "Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must "
            "have value greater than or equal to 0.0, Member must not be null]",
        )
    return out


def alias_request(body: dict[str, Any], *, creating: bool) -> AliasRequest:
    """Validate the body of CreateAlias (`creating`: Name and FunctionVersion required) or UpdateAlias."""
    v = Violations()
    if creating:
        name = str_member(body, "Name")
        if name is None:
            v.add("null", "name", "Member must not be null")
        else:
            check_name(name, v)
    version = str_member(body, "FunctionVersion")
    if version is None and creating:
        v.add("null", "functionVersion", "Member must not be null")
    if version is not None and (not 1 <= len(version) <= 1024 or not _VERSION.fullmatch(version)):
        v.add(version, "functionVersion", f"Member must satisfy regular expression pattern: {VERSION_PATTERN}")
    description = str_member(body, "Description")
    if description is not None and len(description) > 256:
        v.add(description, "description", "Member must have length less than or equal to 256")
    weights = _weights(body, v)
    v.raise_if_any()
    return AliasRequest(version, description, weights, str_member(body, "RevisionId"))


def check_routing(primary: str, weights: dict[str, float]) -> None:
    """Lambda's rules for a RoutingConfig beside the alias's version."""
    if len(weights) > 1:
        raise InvalidParameterValueException("Number of items in AdditionalVersionWeights cannot be greater than 1")
    if weights and primary == LATEST:
        error = InvalidParameterValueException("$LATEST is not supported for an alias pointing to more than 1 version")
        error.error_type = None  # Lambda's answer to this one has no Type (AWS-recorded)
        raise error
    for version in weights:
        if version == primary:
            raise InvalidParameterValueException(
                f"Invalid function version {version}. Function version {version} is already included in routing "
                "configuration."
            )


def tenant_point(function_name: str, alias: str, tenant_id: str) -> float:
    """A tenant's place in [0, 1) for one alias: the same for every call, spread evenly over tenants."""
    digest = hashlib.sha256(f"{function_name}\0{alias}\0{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(record: AliasRecord, point: float) -> str:
    """The version a call through the alias runs, for a point in [0, 1) (the tenant's, or drawn at random)."""
    for version, weight in record.weights.items():
        if point < weight:
            return version
    return record.function_version


def render(record: AliasRecord, region: str, account: str) -> dict[str, Any]:
    """The AliasConfiguration; RoutingConfig only when it sends calls to a second version, as on Lambda."""
    out: dict[str, Any] = {
        "AliasArn": function_arn(region, account, record.name, record.alias),
        "Name": record.alias,
        "FunctionVersion": record.function_version,
        "Description": record.description,
    }
    if record.weights:
        out["RoutingConfig"] = {"AdditionalVersionWeights": dict(record.weights)}
    out["RevisionId"] = record.revision_id
    return out
