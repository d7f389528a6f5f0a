"""Lambda features silo does not serve, answered as Lambda answers what cannot be done: provisioned
concurrency and event source mappings.

A mixin of FunctionService. Tools read these configurations back after a deploy (and delete them on a
teardown), so the reads answer truthfully: a function here has no provisioned concurrency config and there
is no event source mapping (an empty list; a named one is not found). The writes that would create one are
refused with InvalidParameterValueException, never silently accepted: for a PER_TENANT function with the
refusal Lambda gives for tenant isolation (which supports neither), for any other function saying that
silo does not implement it and what to do instead. The function and qualifier are checked first, as on
Lambda, so a typo gets its ResourceNotFoundException, not the refusal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from silo.control.fields import int_member, str_member
from silo.control.names import LATEST, FunctionRef, function_arn, merge_qualifier, not_found, parse_function_name
from silo.control.violations import Violations
from silo.errors import (
    InvalidParameterValueException,
    ProvisionedConcurrencyConfigNotFoundException,
    ResourceNotFoundException,
)
from silo.store.aliases import AliasRecord
from silo.store.functions import FunctionRecord

# Lambda's words for tenant isolation's limits take the form of its SnapStart refusal (silo.control.validation):
# Lambda documents the limits ("not supported with") and records no message for them.
PROVISIONED_PER_TENANT = (
    "Provisioned concurrency is not supported for functions with tenant isolation mode. Each tenant's "
    "environments start on the tenant's own calls; silo keeps initialised environments ready for new tenants "
    "instead (stems)."
)
MAPPINGS_PER_TENANT = (
    "Event source mappings are not supported for functions with tenant isolation mode. Map the source to a "
    "function without tenant isolation that invokes this one with each record's tenant (X-Amz-Tenant-Id)."
)
PROVISIONED_UNSERVED = (
    "silo does not implement provisioned concurrency: environments start on demand, and a function without "
    "tenant isolation reuses its warm ones. Deploy without the provisioned concurrency config."
)
MAPPINGS_UNSERVED = (
    "silo does not implement event source mappings: it reads no queue or stream (SQS, Kinesis, DynamoDB "
    "Streams, Kafka, MQ, DocumentDB). Have a consumer of your own invoke the function for each batch."
)
PROVISIONED_LATEST = "Provisioned Concurrency Configs cannot be applied to unpublished function versions."
NOT_ALIAS_OR_VERSION = "The function resource provided must be an alias or a published version."
NO_PROVISIONED_CONFIG = "No Provisioned Concurrency Config found for this function"
NO_SUCH_RESOURCE = "The resource you requested does not exist."


class UnservedOperations:
    """Provisioned concurrency and event source mappings: truthful reads, refused writes."""

    region: str
    account: str
    _records: dict[str, dict[str, FunctionRecord]]
    _aliases: dict[str, dict[str, AliasRecord]]

    if TYPE_CHECKING:

        def _check_home(self, ref: FunctionRef) -> None: ...

        def _addressed(
            self, function_name: str, qualifier: str | None, *, namespaced: bool
        ) -> tuple[FunctionRecord, str | None]: ...

    def _provisioning_target(self, function_name: str, qualifier: str | None, latest_message: str) -> FunctionRecord:
        """The $LATEST record of the function whose alias or published version `qualifier` names."""
        ref = parse_function_name(function_name, namespaced=False)
        wanted = merge_qualifier(ref, qualifier)
        self._check_home(ref)
        if wanted is None or wanted == LATEST:
            raise InvalidParameterValueException(latest_message)
        stored = self._records.get(ref.name, {})
        if wanted.isdigit() and wanted.isascii():
            if LATEST not in stored or wanted not in stored:
                raise not_found(self.region, self.account, ref.name, wanted)
        elif LATEST not in stored or wanted not in self._aliases.get(ref.name, {}):
            arn = function_arn(self.region, self.account, ref.name, wanted)
            raise ResourceNotFoundException(f"Cannot find alias arn: {arn}")
        return stored[LATEST]

    def put_provisioned_concurrency_config(
        self, function_name: str, qualifier: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        """PutProvisionedConcurrencyConfig: validated, then refused (see the module's docstring)."""
        wanted = int_member(body, "ProvisionedConcurrentExecutions")
        v = Violations()
        if wanted is None:
            v.add("null", "provisionedConcurrentExecutions", "Member must not be null")
        elif wanted < 1:
            v.add(wanted, "provisionedConcurrentExecutions", "Member must have value greater than or equal to 1")
        v.raise_if_any()
        latest = self._provisioning_target(function_name, qualifier, PROVISIONED_LATEST)
        if "TenancyConfig" in latest.config:
            raise InvalidParameterValueException(PROVISIONED_PER_TENANT)
        raise InvalidParameterValueException(PROVISIONED_UNSERVED)

    def get_provisioned_concurrency_config(self, function_name: str, qualifier: str | None) -> dict[str, Any]:
        """GetProvisionedConcurrencyConfig: no alias or version here has one."""
        self._provisioning_target(function_name, qualifier, NOT_ALIAS_OR_VERSION)
        raise ProvisionedConcurrencyConfigNotFoundException(NO_PROVISIONED_CONFIG)

    def delete_provisioned_concurrency_config(self, function_name: str, qualifier: str | None) -> None:
        """DeleteProvisionedConcurrencyConfig: there is none to delete, which Lambda answers with a 204."""
        self._provisioning_target(function_name, qualifier, NOT_ALIAS_OR_VERSION)

    def list_provisioned_concurrency_configs(self, function_name: str) -> dict[str, Any]:
        """ListProvisionedConcurrencyConfigs: always empty, for a function that exists."""
        self._addressed(function_name, None, namespaced=False)
        return {"ProvisionedConcurrencyConfigs": []}

    def create_event_source_mapping(self, body: dict[str, Any]) -> dict[str, Any]:
        """CreateEventSourceMapping: the function is looked up, then the mapping refused."""
        name = str_member(body, "FunctionName")
        if name is None:
            v = Violations()
            v.add("null", "functionName", "Member must not be null")
            raise v.error()
        record, _ = self._addressed(name, None, namespaced=False)
        latest = self._records.get(record.name, {}).get(LATEST, record)
        if "TenancyConfig" in latest.config:
            raise InvalidParameterValueException(MAPPINGS_PER_TENANT)
        raise InvalidParameterValueException(MAPPINGS_UNSERVED)

    def list_event_source_mappings(self, function_name: str | None, event_source_arn: str | None) -> dict[str, Any]:
        """ListEventSourceMappings: there are none (a FunctionName given is checked against the model)."""
        if function_name is not None:
            parse_function_name(function_name, namespaced=False)
        return {"EventSourceMappings": []}

    def event_source_mapping(self, uuid: str) -> dict[str, Any]:
        """Get/Update/DeleteEventSourceMapping: no mapping of any id exists."""
        raise ResourceNotFoundException(NO_SUCH_RESOURCE)
