"""Published versions: PublishVersion (and Publish on CreateFunction and UpdateFunctionCode) and
ListVersionsByFunction. The rules are pure functions in silo.control.versions.

A mixin of FunctionService, like silo.control.aliasing: it shares the service's lock, map and repository,
and the helpers named under TYPE_CHECKING below.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from silo.control import versions
from silo.control.configuration import lambda_timestamp
from silo.control.names import LATEST, FunctionRef, not_found, parse_function_name
from silo.control.resources import REVISION_MISMATCH
from silo.control.violations import Violations
from silo.errors import PreconditionFailedException
from silo.store.functions import FunctionRecord, FunctionRepository


class VersionOperations:
    """Immutable snapshots of $LATEST, numbered as Lambda numbers them."""

    region: str
    account: str
    repo: FunctionRepository
    _write_lock: threading.RLock
    _records: dict[str, dict[str, FunctionRecord]]

    if TYPE_CHECKING:

        def _unqualified(self, function_name: str) -> FunctionRecord: ...

        def _check_revision(self, record: FunctionRecord, revision_id: str | None) -> None: ...

        def _check_home(self, ref: FunctionRef) -> None: ...

        def _configuration(self, record: FunctionRecord, as_addressed: str | None = None) -> dict[str, Any]: ...

        def _remember(self, record: FunctionRecord) -> None: ...

    def publish_version(self, function_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """PublishVersion: an immutable snapshot of $LATEST with the next number; when $LATEST has not
        changed since the last version, that version, as on Lambda."""
        request = versions.publish_request(body)
        with self._write_lock:
            latest = self._unqualified(function_name)
            self._check_revision(latest, request.revision_id)
            versions.check_code_sha256(request.code_sha256, latest)
            return self._configuration(self._publish(latest, request.description))

    def _publish(self, latest: FunctionRecord, description: str | None) -> FunctionRecord:
        """Publish `latest` (held under the write lock). $LATEST gets a new RevisionId, as on Lambda."""
        last = self.repo.last_version(latest.name)
        newest = max(self._published(latest.name), key=lambda r: int(r.version), default=None)
        if newest is not None and versions.unchanged(latest, newest):
            return newest
        record = FunctionRecord(
            name=latest.name,
            version=str(last + 1),
            config=versions.version_config(latest, description),
            code_sha256=latest.code_sha256,
            code_size=latest.code_size,
            revision_id=str(uuid.uuid4()),
            last_modified=lambda_timestamp(),
        )
        renewed = replace(latest, revision_id=str(uuid.uuid4()))
        if not self.repo.publish(record, renewed, latest.revision_id):
            raise PreconditionFailedException(REVISION_MISMATCH)
        self._remember(renewed)
        self._remember(record)
        return record

    def _published(self, name: str) -> list[FunctionRecord]:
        return [r for v, r in self._records.get(name, {}).items() if v != LATEST]

    def list_versions_by_function(
        self, function_name: str, marker: str | None, max_items: int | None
    ) -> dict[str, Any]:
        """ListVersionsByFunction: $LATEST first, then the published versions by number; pages of at most 50."""
        if max_items is not None and not 1 <= max_items <= 10000:
            v = Violations()
            bound = "greater than or equal to 1" if max_items < 1 else "less than or equal to 10000"
            v.add(max_items, "maxItems", f"Member must have value {bound}")
            v.raise_if_any()
        # Every version of the function, whichever one a qualifier in the name names.
        ref = parse_function_name(function_name, namespaced=True)
        self._check_home(ref)
        latest = self.repo.get(ref.name)
        if latest is None:
            raise not_found(self.region, self.account, ref.name)
        limit = min(max_items or versions.LIST_PAGE_MAX, versions.LIST_PAGE_MAX)
        after = versions.after_marker(marker)
        page: list[tuple[FunctionRecord, str | None]] = [] if after >= 0 else [(latest, LATEST)]
        # One more than asked tells whether another page exists.
        page += [(r, None) for r in self.repo.versions(latest.name, max(after, 0), limit + 1 - len(page))]
        out: dict[str, Any] = {"Versions": [self._configuration(r, shown) for r, shown in page[:limit]]}
        if len(page) > limit:
            out["NextMarker"] = page[limit - 1][0].version
        return out
