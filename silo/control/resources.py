"""Resource policies, tags and the code signing configuration of functions: the operations Terraform reads
right after a create, and that AWS tools use to let other services call a function.

A mixin of FunctionService: it shares the service's store, lock and in-memory map, and the helpers named
under TYPE_CHECKING below. The rules themselves are pure functions in silo.control.permissions and
silo.control.tags.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from silo.control import aliases, permissions, tags, validation
from silo.control.fields import dict_member, str_member
from silo.control.names import LATEST, FunctionRef, function_arn, merge_qualifier, not_found, parse_function_name
from silo.errors import InvalidParameterValueException, PreconditionFailedException, ResourceNotFoundException
from silo.store.aliases import AliasRecord
from silo.store.functions import FunctionRecord, FunctionRepository

REVISION_MISMATCH = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
)
POLICY_REVISION_MISMATCH = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetPolicy API to retrieve the latest Revision Id"
)


class PolicyAndTagOperations:
    """GetFunctionCodeSigningConfig, ListTags/TagResource/UntagResource, AddPermission/RemovePermission/GetPolicy."""

    region: str
    account: str
    repo: FunctionRepository
    _write_lock: threading.RLock

    if TYPE_CHECKING:

        def _record(self, function_name: str, qualifier: str | None, *, namespaced: bool) -> FunctionRecord: ...

        def _check_home(self, ref: FunctionRef) -> None: ...

        def _check_revision(self, record: FunctionRecord, revision_id: str | None) -> None: ...

        def _set_function_member(self, current: FunctionRecord, key: str, value: Any) -> None: ...

        def _remember(self, record: FunctionRecord) -> None: ...

        def _alias(self, name: str, alias: str) -> AliasRecord: ...

        def _store_alias(self, record: AliasRecord, expected_revision: str) -> None: ...

    def get_function_code_signing_config(self, function_name: str) -> dict[str, str]:
        """GetFunctionCodeSigningConfig: a function without a code signing configuration answers with an
        empty ARN, as on Lambda."""
        record = self._record(function_name, None, namespaced=True)
        latest = self.repo.get(record.name) or record
        return {"CodeSigningConfigArn": latest.config.get("CodeSigningConfigArn", ""), "FunctionName": record.name}

    def _tagged(self, resource: str) -> FunctionRecord:
        ref = tags.resource_function(resource)
        self._check_home(ref)
        record = self.repo.get(ref.name)
        if record is None:
            raise not_found(self.region, self.account, ref.name)
        return record

    def list_tags(self, resource: str) -> dict[str, Any]:
        """ListTags of a function ARN."""
        return {"Tags": dict(self._tagged(resource).config.get("Tags", {}))}

    def tag_resource(self, resource: str, body: dict[str, Any]) -> None:
        """TagResource: the tags given are added to the function's, replacing those of the same key."""
        given = dict_member(body, "Tags")
        if given is None:
            raise validation.missing("tags")
        checked = tags.check_tags(given)
        with self._write_lock:
            current = self._tagged(resource)
            self._set_function_member(current, "Tags", tags.merged(current.config.get("Tags", {}), checked))

    def untag_resource(self, resource: str, keys: list[str] | None) -> None:
        """UntagResource: the keys named go; keys the function does not have are no error."""
        if keys is None:
            raise validation.missing("tagKeys")
        with self._write_lock:
            current = self._tagged(resource)
            left = {k: v for k, v in current.config.get("Tags", {}).items() if k not in keys}
            self._set_function_member(current, "Tags", left or None)

    def _policy_target(
        self, function_name: str, qualifier: str | None
    ) -> tuple[FunctionRecord | AliasRecord, str | None]:
        """What holds the policy a request addresses (a version, or an alias), and the qualifier its
        statements name."""
        ref = parse_function_name(function_name, namespaced=True)
        wanted = merge_qualifier(ref, qualifier)
        if wanted is not None and aliases.is_alias(wanted):
            self._check_home(ref)
            latest = self._record(ref.name, None, namespaced=True)
            return self._alias(latest.name, wanted), wanted
        return self._record(function_name, qualifier, namespaced=True), wanted

    @staticmethod
    def _statements(holder: FunctionRecord | AliasRecord) -> list[dict[str, Any]]:
        if isinstance(holder, AliasRecord):
            return list(holder.policy)
        return list(holder.config.get("Policy", []))

    def _check_holder_revision(self, holder: FunctionRecord | AliasRecord, revision_id: str | None) -> None:
        if revision_id is not None and revision_id != holder.revision_id:
            # Lambda names GetPolicy for an alias's revision, GetFunction/GetAlias otherwise (AWS-recorded).
            raise PreconditionFailedException(
                POLICY_REVISION_MISMATCH if isinstance(holder, AliasRecord) else REVISION_MISMATCH
            )

    def add_permission(self, function_name: str, qualifier: str | None, body: dict[str, Any]) -> dict[str, str]:
        """AddPermission: one statement more in the policy of the function (or of a version or alias)."""
        ref = parse_function_name(function_name, namespaced=True)
        if merge_qualifier(ref, qualifier) == LATEST:
            raise InvalidParameterValueException(permissions.LATEST_REFUSED)
        with self._write_lock:
            holder, wanted = self._policy_target(function_name, qualifier)
            self._check_holder_revision(holder, str_member(body, "RevisionId"))
            arn = function_arn(self.region, self.account, holder.name, wanted)
            new = permissions.statement(body, arn, self.account)
            self._set_policy(holder, permissions.added(self._statements(holder), new))
        return {"Statement": json.dumps(new, separators=(",", ":"))}

    def remove_permission(
        self, function_name: str, statement_id: str, qualifier: str | None, revision_id: str | None
    ) -> None:
        """RemovePermission: the statement goes; a policy left empty is no policy."""
        permissions.check_statement_id(statement_id)
        ref = parse_function_name(function_name, namespaced=True)
        wanted = merge_qualifier(ref, qualifier)
        with self._write_lock:
            try:
                holder, wanted = self._policy_target(function_name, qualifier)
            except ResourceNotFoundException as exc:
                if self.repo.get(ref.name) is not None:
                    raise
                raise ResourceNotFoundException(
                    f"No policy found for: {function_arn(self.region, self.account, ref.name, wanted)}"
                ) from exc
            self._check_holder_revision(holder, revision_id)
            self._set_policy(holder, permissions.removed(self._statements(holder), statement_id))

    def get_policy(self, function_name: str, qualifier: str | None) -> dict[str, str]:
        """GetPolicy: the policy document as a JSON string, with the revision it belongs to."""
        try:
            holder, _ = self._policy_target(function_name, qualifier)
        except ResourceNotFoundException:
            raise ResourceNotFoundException(permissions.NO_RESOURCE) from None
        statements = self._statements(holder)
        if not statements:
            raise ResourceNotFoundException(permissions.NO_RESOURCE)
        return {"Policy": permissions.document(statements), "RevisionId": holder.revision_id}

    def _set_policy(self, current: FunctionRecord | AliasRecord, statements: list[dict[str, Any]]) -> None:
        # A policy is part of its version's (or alias's) state, so changing it gives a new RevisionId, as on
        # Lambda; what the environments run is unchanged, so none is retired (spec.revision_id is the
        # digest of what they run, silo.control.configuration.run_digest).
        if isinstance(current, AliasRecord):
            self._store_alias(replace(current, policy=statements, revision_id=str(uuid.uuid4())), current.revision_id)
            return
        config = {k: v for k, v in current.config.items() if k != "Policy"}
        if statements:
            config["Policy"] = statements
        record = replace(current, config=config, revision_id=str(uuid.uuid4()))
        if not self.repo.replace(record, current.revision_id):
            raise PreconditionFailedException(REVISION_MISMATCH)
        self._remember(record)
