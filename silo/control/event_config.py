"""EventInvokeConfig: how a function's asynchronous invocations are retried and where their records go.

Put/Update/Get/Delete/ListFunctionEventInvokeConfigs with Lambda's validation, messages and shapes
(AWS-recorded in LocalStack's snapshots). One config exists per function and qualifier; an unqualified
call means `$LATEST`. silo delivers destination records to Lambda functions only: an SQS queue, SNS
topic, EventBridge bus, S3 bucket or Kafka topic is refused with a message that says so, rather than
accepted and silently never written to.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from silo.control.fields import dict_member, int_member, str_member
from silo.control.names import LATEST, function_arn, merge_qualifier, parse_function_name
from silo.control.violations import Violations
from silo.errors import InvalidParameterValueException, LambdaError, ResourceNotFoundException
from silo.store.events import EventInvokeConfigRepository, StoredInvokeConfig
from silo.types import FunctionSpec

MAX_RETRY_ATTEMPTS = 2
MIN_EVENT_AGE_S = 60
MAX_EVENT_AGE_S = 21600
# What applies when a function has no config, or its config leaves a member out (Lambda's defaults).
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_EVENT_AGE_S = 21600
LIST_MAX_ITEMS = 50
DESTINATION_MAX = 350
# The service model's DestinationArn pattern, verbatim: it appears in error messages.
DESTINATION_ARN_PATTERN = (
    r"$|kafka://([^.]([a-zA-Z0-9\-_.]{0,248}))|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:"
    r"((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1})?:(\d{12})?:(.*)"
)
_DESTINATION_ARN = re.compile(DESTINATION_ARN_PATTERN)
# Destinations Lambda accepts and silo cannot write to.
_FOREIGN_SERVICES = {"sqs": "an SQS queue", "sns": "an SNS topic", "events": "an EventBridge bus", "s3": "an S3 bucket"}
NO_SUCH_FUNCTION = "The function doesn't exist."
KINDS = (("OnSuccess", "onSuccess"), ("OnFailure", "onFailure"))


class FunctionResolver(Protocol):
    region: str
    account: str

    def resolve(self, function_name: str, qualifier: str | None) -> FunctionSpec: ...


@dataclass(frozen=True, slots=True)
class AsyncPolicy:
    """What the dispatcher applies to one event: retries, maximum age and destinations (function ARNs)."""

    max_retries: int = DEFAULT_RETRY_ATTEMPTS
    max_age_s: int = DEFAULT_EVENT_AGE_S
    on_success: str | None = None
    on_failure: str | None = None


def _request(body: dict[str, Any]) -> dict[str, Any]:
    """The members of a Put/Update body, checked against the model; absent members stay absent."""
    retries = int_member(body, "MaximumRetryAttempts")
    age = int_member(body, "MaximumEventAgeInSeconds")
    destinations = dict_member(body, "DestinationConfig")
    v = Violations()
    if retries is not None and retries > MAX_RETRY_ATTEMPTS:
        v.add(retries, "maximumRetryAttempts", f"Member must have value less than or equal to {MAX_RETRY_ATTEMPTS}")
    if retries is not None and retries < 0:
        v.add(retries, "maximumRetryAttempts", "Member must have value greater than or equal to 0")
    if age is not None and age > MAX_EVENT_AGE_S:
        v.add(age, "maximumEventAgeInSeconds", f"Member must have value less than or equal to {MAX_EVENT_AGE_S}")
    if age is not None and age < MIN_EVENT_AGE_S:
        v.add(age, "maximumEventAgeInSeconds", f"Member must have value greater than or equal to {MIN_EVENT_AGE_S}")
    out: dict[str, Any] = {}
    if destinations is not None:
        config: dict[str, dict[str, str]] = {}
        for key, member in KINDS:
            part = dict_member(destinations, key, f"DestinationConfig.{key}") or {}
            arn = str_member(part, "Destination", f"DestinationConfig.{key}.Destination")
            config[key] = {}
            if arn is None:
                continue
            where = f"destinationConfig.{member}.destination"
            if len(arn) > DESTINATION_MAX:
                v.add(arn, where, f"Member must have length less than or equal to {DESTINATION_MAX}")
            if not _DESTINATION_ARN.fullmatch(arn):
                v.add(arn, where, f"Member must satisfy regular expression pattern: {DESTINATION_ARN_PATTERN}")
            if arn:
                config[key] = {"Destination": arn}
        out["DestinationConfig"] = config
    v.raise_if_any()
    if retries is None and age is None and destinations is None:
        raise InvalidParameterValueException("You must specify at least one of error handling or destination setting.")
    if retries is not None:
        out["MaximumRetryAttempts"] = retries
    if age is not None:
        out["MaximumEventAgeInSeconds"] = age
    return out


def _describe(config: dict[str, Any]) -> str:
    """Lambda's rendering of a destination config in its "is invalid" message (Java's toString)."""
    parts = []
    for key, member in KINDS:
        arn = config.get(key, {}).get("Destination")
        parts.append(f"{member}={key}(destination={arn})" if arn else f"{member}=null")
    return f"DestinationConfig({', '.join(parts)})"


class EventInvokeConfigService:
    """The EventInvokeConfig operations, and the policy the dispatcher applies to each event."""

    def __init__(
        self,
        functions: FunctionResolver,
        repo: EventInvokeConfigRepository,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.functions = functions
        self.repo = repo
        self.clock = clock

    # -- helpers ----------------------------------------------------------------------------------

    def _target(self, function_name: str, qualifier: str | None) -> tuple[FunctionSpec, str]:
        """The function a request addresses and the qualifier its config is stored under.

        Raises ResourceNotFoundException from `resolve`; callers put Lambda's message for their
        operation on it.
        """
        ref = parse_function_name(function_name, namespaced=True)
        wanted = merge_qualifier(ref, qualifier)
        spec = self.functions.resolve(function_name, qualifier)
        return spec, wanted or LATEST

    def _existing(self, function_name: str, qualifier: str | None) -> tuple[FunctionSpec, str]:
        try:
            return self._target(function_name, qualifier)
        except ResourceNotFoundException:
            raise ResourceNotFoundException(NO_SUCH_FUNCTION) from None

    def _no_config(self, function_name: str, qualifier: str | None) -> ResourceNotFoundException:
        ref = parse_function_name(function_name, namespaced=True)
        wanted = merge_qualifier(ref, qualifier) or LATEST
        arn = function_arn(self.functions.region, self.functions.account, ref.name, wanted)
        return ResourceNotFoundException(f"The function {arn} doesn't have an EventInvokeConfig")

    def _arn(self, spec: FunctionSpec, qualifier: str) -> str:
        return function_arn(self.functions.region, self.functions.account, spec.function_name, qualifier)

    def _check_destinations(self, spec: FunctionSpec, config: dict[str, Any]) -> None:
        invalid = InvalidParameterValueException(f"The provided destination config {_describe(config)} is invalid.")
        for key, _ in KINDS:
            arn = config.get(key, {}).get("Destination")
            if not arn:
                continue
            if arn.startswith("kafka://"):
                raise self._foreign(arn, "a Kafka topic")
            service = arn.split(":")[2]
            if service in _FOREIGN_SERVICES:
                raise self._foreign(arn, _FOREIGN_SERVICES[service])
            if service != "lambda":
                raise invalid
            try:
                target = self.functions.resolve(arn, None)
            except LambdaError:
                raise InvalidParameterValueException(f"The destination ARN {arn} is invalid.") from None
            if target.function_name == spec.function_name:
                raise InvalidParameterValueException("You can't specify the function as a destination for itself.")
            if target.per_tenant and not spec.per_tenant:
                raise InvalidParameterValueException(
                    f"The destination function {target.function_name} has tenant isolation mode PER_TENANT, but "
                    f"{spec.function_name} does not: its invocation records would carry no tenant id to run "
                    "under. Choose a destination function without tenant isolation."
                )

    @staticmethod
    def _foreign(arn: str, what: str) -> InvalidParameterValueException:
        return InvalidParameterValueException(
            f"The destination {arn} is {what}; silo delivers asynchronous invocation records to Lambda "
            "functions only. Use a function ARN as the destination (it receives the same record), or leave "
            "OnFailure unset and read failed events from silo's dead-letter list."
        )

    def _render(self, item: StoredInvokeConfig, spec: FunctionSpec) -> dict[str, Any]:
        config = item.config
        out: dict[str, Any] = {"LastModified": item.last_modified, "FunctionArn": self._arn(spec, item.qualifier)}
        for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
            if key in config:
                out[key] = config[key]
        destinations = config.get("DestinationConfig", {})
        out["DestinationConfig"] = {key: dict(destinations.get(key, {})) for key, _ in KINDS}
        return out

    def _store(self, spec: FunctionSpec, qualifier: str, config: dict[str, Any]) -> dict[str, Any]:
        item = StoredInvokeConfig(spec.function_name, qualifier, config, self.clock())
        if not self.repo.put(item):
            raise ResourceNotFoundException(NO_SUCH_FUNCTION)
        return self._render(item, spec)

    # -- operations -------------------------------------------------------------------------------

    def put(self, function_name: str, qualifier: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """PutFunctionEventInvokeConfig: replaces the whole config; members left out are removed."""
        config = _request(body)
        spec, key = self._existing(function_name, qualifier)
        self._check_destinations(spec, config.get("DestinationConfig", {}))
        return self._store(spec, key, config)

    def update(self, function_name: str, qualifier: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """UpdateFunctionEventInvokeConfig: members given replace the current ones, the others stay."""
        changes = _request(body)
        spec, key = self._existing(function_name, qualifier)
        current = self.repo.get(spec.function_name, key)
        if current is None:
            raise self._no_config(function_name, qualifier)
        self._check_destinations(spec, changes.get("DestinationConfig", {}))
        return self._store(spec, key, {**current.config, **changes})

    def get(self, function_name: str, qualifier: str | None) -> dict[str, Any]:
        """GetFunctionEventInvokeConfig."""
        try:
            spec, key = self._target(function_name, qualifier)
        except ResourceNotFoundException:
            raise self._no_config(function_name, qualifier) from None
        item = self.repo.get(spec.function_name, key)
        if item is None:
            raise self._no_config(function_name, qualifier)
        return self._render(item, spec)

    def delete(self, function_name: str, qualifier: str | None) -> None:
        """DeleteFunctionEventInvokeConfig."""
        try:
            spec, key = self._target(function_name, qualifier)
        except ResourceNotFoundException:
            raise self._no_config(function_name, qualifier) from None
        if not self.repo.delete(spec.function_name, key):
            raise self._no_config(function_name, qualifier)

    def list(self, function_name: str, marker: str | None, max_items: int | None) -> dict[str, Any]:
        """ListFunctionEventInvokeConfigs: every qualifier's config, in pages of at most 50."""
        if max_items is not None and not 1 <= max_items <= LIST_MAX_ITEMS:
            v = Violations()
            bound = "greater than or equal to 1" if max_items < 1 else f"less than or equal to {LIST_MAX_ITEMS}"
            v.add(max_items, "maxItems", f"Member must have value {bound}")
            v.raise_if_any()
        spec, _ = self._existing(function_name, None)
        limit = max_items or LIST_MAX_ITEMS
        items = self.repo.list_page(spec.function_name, marker, limit + 1)
        out: dict[str, Any] = {"FunctionEventInvokeConfigs": [self._render(i, spec) for i in items[:limit]]}
        if len(items) > limit:
            out["NextMarker"] = items[limit - 1].qualifier
        return out

    def policy(self, function_name: str, qualifier: str | None) -> AsyncPolicy:
        """The policy for an event of this function and qualifier: its config over Lambda's defaults."""
        item = self.repo.get(function_name, qualifier or LATEST)
        if item is None:
            return AsyncPolicy()
        config = item.config
        destinations = config.get("DestinationConfig", {})
        return AsyncPolicy(
            max_retries=config.get("MaximumRetryAttempts", DEFAULT_RETRY_ATTEMPTS),
            max_age_s=config.get("MaximumEventAgeInSeconds", DEFAULT_EVENT_AGE_S),
            on_success=destinations.get("OnSuccess", {}).get("Destination"),
            on_failure=destinations.get("OnFailure", {}).get("Destination"),
        )
