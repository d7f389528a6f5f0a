"""The alias operations: CreateAlias, GetAlias, UpdateAlias, DeleteAlias and ListAliases, and the aliases a
call or a read resolves through.

A mixin of FunctionService: it shares the service's lock and in-memory map, and the helpers named under
TYPE_CHECKING below; aliases are kept in memory too (`_aliases`), so that an Invoke through one touches no
database. The rules are pure functions in silo.control.aliases.
"""

from __future__ import annotations

import random
import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from silo.control import aliases
from silo.control.names import LATEST, function_arn, not_found
from silo.control.violations import Violations
from silo.errors import PreconditionFailedException, ResourceConflictException, ResourceNotFoundException
from silo.store.aliases import AliasRecord, AliasRepository
from silo.store.functions import FunctionRecord

ALIAS_REVISION_MISMATCH = (
    "The Revision Id provided does not match the latest Revision Id. "
    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
)


class AliasOperations:
    """Aliases of functions, each naming a version and, with a weight, a second one."""

    region: str
    account: str
    alias_repo: AliasRepository
    _write_lock: threading.RLock
    _aliases: dict[str, dict[str, AliasRecord]]  # by function name, then alias name
    _records: dict[str, dict[str, FunctionRecord]]

    if TYPE_CHECKING:

        def _unqualified(self, function_name: str) -> FunctionRecord: ...

        def _forget_url(self, name: str, qualifier: str | None = None) -> None: ...

    # -- helpers ----------------------------------------------------------------------------------

    def _alias_arn(self, name: str, alias: str) -> str:
        return function_arn(self.region, self.account, name, alias)

    def _alias(self, name: str, alias: str) -> AliasRecord:
        """The alias of an existing function; Lambda's message when there is none."""
        record = self._aliases.get(name, {}).get(alias)
        if record is None:
            raise ResourceNotFoundException(f"Cannot find alias arn: {self._alias_arn(name, alias)}")
        return record

    def _target_version(self, name: str, version: str) -> None:
        """An alias may point only to $LATEST or to a published version that exists."""
        if version != LATEST and version not in self._records.get(name, {}):
            raise not_found(self.region, self.account, name, version)

    def _remember_alias(self, record: AliasRecord) -> None:
        self._aliases.setdefault(record.name, {})[record.alias] = record

    def _store_alias(self, record: AliasRecord, expected_revision: str) -> None:
        if not self.alias_repo.replace(record, expected_revision):
            raise PreconditionFailedException(ALIAS_REVISION_MISMATCH)
        self._remember_alias(record)

    def _aliases_of_version(self, name: str, version: str) -> list[str]:
        return sorted(
            a.alias
            for a in self._aliases.get(name, {}).values()
            if version == a.function_version or version in a.weights
        )

    def _through_alias(self, name: str, alias: str, per_tenant: bool, tenant_id: str | None) -> str | None:
        """The version a call through `alias` runs (None: no such alias). See silo.control.aliases."""
        record = self._aliases.get(name, {}).get(alias)
        if record is None:
            return None
        if not record.weights:
            return record.function_version
        if per_tenant and tenant_id is not None:
            return aliases.pick(record, aliases.tenant_point(name, alias, tenant_id))
        return aliases.pick(record, random.random())

    # -- operations -------------------------------------------------------------------------------

    def create_alias(self, function_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """CreateAlias."""
        request = aliases.alias_request(body, creating=True)
        name = str(body["Name"])
        assert request.function_version is not None  # alias_request requires it on create
        with self._write_lock:
            latest = self._unqualified(function_name)
            self._target_version(latest.name, request.function_version)
            weights = request.weights or {}
            aliases.check_routing(request.function_version, weights)
            for version in weights:
                self._target_version(latest.name, version)
            record = AliasRecord(
                name=latest.name,
                alias=name,
                function_version=request.function_version,
                description=request.description or "",
                weights=weights,
                revision_id=str(uuid.uuid4()),
            )
            if name in self._aliases.get(latest.name, {}) or not self.alias_repo.insert(record):
                raise ResourceConflictException(f"Alias already exists: {self._alias_arn(latest.name, name)}")
            self._remember_alias(record)
        return aliases.render(record, self.region, self.account)

    def get_alias(self, function_name: str, alias: str) -> dict[str, Any]:
        """GetAlias."""
        self._check_alias_name(alias)
        latest = self._unqualified(function_name)
        return aliases.render(self._alias(latest.name, alias), self.region, self.account)

    def update_alias(self, function_name: str, alias: str, body: dict[str, Any]) -> dict[str, Any]:
        """UpdateAlias: members given replace the current ones; RoutingConfig {} sends every call to the version."""
        self._check_alias_name(alias)
        request = aliases.alias_request(body, creating=False)
        with self._write_lock:
            latest = self._unqualified(function_name)
            current = self._aliases.get(latest.name, {}).get(alias)
            if current is None:
                raise ResourceNotFoundException(f"Alias not found: {self._alias_arn(latest.name, alias)}")
            if request.revision_id is not None and request.revision_id != current.revision_id:
                raise PreconditionFailedException(ALIAS_REVISION_MISMATCH)
            version = request.function_version or current.function_version
            weights = current.weights if request.weights is None else request.weights
            self._target_version(latest.name, version)
            aliases.check_routing(version, weights)
            for extra in weights:
                self._target_version(latest.name, extra)
            record = replace(
                current,
                function_version=version,
                description=current.description if request.description is None else request.description,
                weights=weights,
                revision_id=str(uuid.uuid4()),
            )
            self._store_alias(record, current.revision_id)
        return aliases.render(record, self.region, self.account)

    def delete_alias(self, function_name: str, alias: str) -> None:
        """DeleteAlias: an alias that is not there is no error, as on Lambda."""
        self._check_alias_name(alias)
        with self._write_lock:
            latest = self._unqualified(function_name)
            self.alias_repo.delete(latest.name, alias)
            self._aliases.get(latest.name, {}).pop(alias, None)
            self._forget_url(latest.name, alias)  # the repository deleted the alias's URL with it

    def list_aliases(
        self, function_name: str, function_version: str | None, marker: str | None, max_items: int | None
    ) -> dict[str, Any]:
        """ListAliases: by name, only those that send calls to `function_version` when given; pages of 50."""
        if max_items is not None and not 1 <= max_items <= 10000:
            v = Violations()
            bound = "greater than or equal to 1" if max_items < 1 else "less than or equal to 10000"
            v.add(max_items, "maxItems", f"Member must have value {bound}")
            v.raise_if_any()
        latest = self._unqualified(function_name)
        found = sorted(self._aliases.get(latest.name, {}).values(), key=lambda a: a.alias)
        if function_version is not None:
            found = [a for a in found if function_version == a.function_version or function_version in a.weights]
        if marker is not None:
            found = [a for a in found if a.alias > marker]
        limit = min(max_items or aliases.LIST_PAGE_MAX, aliases.LIST_PAGE_MAX)
        out: dict[str, Any] = {"Aliases": [aliases.render(a, self.region, self.account) for a in found[:limit]]}
        if len(found) > limit:
            out["NextMarker"] = found[limit - 1].alias
        return out

    @staticmethod
    def _check_alias_name(alias: str) -> None:
        v = Violations()
        aliases.check_name(alias, v)
        v.raise_if_any()
