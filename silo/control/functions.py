"""FunctionService: the control plane of functions, and the only writer of their state.

Commands are validated (silo.control.validation), applied to the store, and mirrored in an in-memory
map of FunctionSpec objects so that `resolve`, on every invocation's path, never touches the database.

Writes are serialised by one lock and may run in worker threads (unpacking a package takes a while);
reads of the map need no lock because each write replaces an entry in one step.
"""

from __future__ import annotations

import logging
import platform
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from silo.config import Settings
from silo.control import silo_settings, validation, versions
from silo.control.aliasing import AliasOperations
from silo.control.code_signing import CodeSigningService
from silo.control.concurrency import ConcurrencyOperations
from silo.control.configuration import function_configuration, function_spec, lambda_timestamp
from silo.control.fields import str_member
from silo.control.function_urls import FunctionUrlOperations
from silo.control.layering import LayeringOperations
from silo.control.layers import LayerService, used_layers
from silo.control.names import (
    LATEST,
    FunctionRef,
    function_arn,
    merge_qualifier,
    not_found,
    parse_function_name,
)
from silo.control.publishing import VersionOperations
from silo.control.resources import REVISION_MISMATCH, PolicyAndTagOperations
from silo.control.s3_code import NoS3, PackageSource
from silo.control.unserved import UnservedOperations
from silo.control.violations import Violations, enum_constraint
from silo.errors import (
    InvalidParameterValueException,
    LambdaError,
    PreconditionFailedException,
    ResourceConflictException,
)
from silo.runtimes import catalog
from silo.store.aliases import AliasRepository
from silo.store.code import MAX_UNZIPPED_BYTES, MAX_ZIPPED_BYTES, CodeStore
from silo.store.db import Database
from silo.store.function_urls import FunctionUrlRepository
from silo.store.functions import FunctionRecord, FunctionRepository
from silo.store.opt import OptStore
from silo.types import FunctionSpec, SdkTrees

log = logging.getLogger(__name__)

LIST_PAGE_MAX = 50
ACCOUNT_CONCURRENCY = 1000
# Lambda's default code storage quota per account and region (75 GB).
TOTAL_CODE_SIZE_LIMIT = 80_530_636_800


def host_architecture() -> str:
    machine = platform.machine().lower()
    return "arm64" if machine in ("aarch64", "arm64") else "x86_64"


class FunctionService(
    PolicyAndTagOperations,
    AliasOperations,
    FunctionUrlOperations,
    UnservedOperations,
    LayeringOperations,
    VersionOperations,
    ConcurrencyOperations,
):
    """Create, read, update, delete and resolve functions.

    `on_change(function_arn, version)` runs after every change that makes live environments stale:
    `$LATEST`'s after UpdateFunctionCode and UpdateFunctionConfiguration, one version's after it is
    deleted, and every version's (`version` None) after DeleteFunction or a change of silo's settings. A
    published version never changes, so its environments stay warm whatever happens to `$LATEST`.

    `layers` holds the layer versions functions may name (by default a LayerService over the same database,
    keeping layer code beside the functions' code).
    """

    def __init__(
        self,
        settings: Settings,
        db: Database,
        code_store: CodeStore,
        on_change: Callable[[str, str | None], None],
        *,
        available_runtimes: Callable[[], list[str]] = catalog.available_runtimes,
        architecture: str | None = None,
        concurrency_limit: int = ACCOUNT_CONCURRENCY,
        packages: PackageSource | None = None,
        layers: LayerService | None = None,
        code_signing: CodeSigningService | None = None,
        sdk: SdkTrees | None = None,
    ) -> None:
        self.settings = settings
        self.packages = packages or NoS3()
        self.region = settings.region
        self.account = settings.account_id
        self.repo = FunctionRepository(db)
        self.alias_repo = AliasRepository(db)
        self.url_repo = FunctionUrlRepository(db)
        self.code = code_store
        self.on_change = on_change
        self._available_runtimes = available_runtimes
        self._architecture = architecture or host_architecture()
        self.concurrency_limit = concurrency_limit
        self.sdk = sdk  # the boto3 and botocore Python environments see; None: none
        self._write_lock = threading.RLock()
        self._specs: dict[str, FunctionSpec] = {}  # each function's $LATEST, by name
        self._versions: dict[tuple[str, str], FunctionSpec] = {}  # published versions, by (name, number)
        self._records: dict[str, dict[str, FunctionRecord]] = {}  # every stored version, by name and version
        self._aliases = {}
        self._urls = {}
        self._urls_by_id = {}
        self._unzipped: dict[str, int] = {}  # unpacked bytes of each function package, by its sha
        self.layers = layers or LayerService(
            self.region,
            self.account,
            db,
            CodeStore(
                code_store.root / "layers", max_zipped=code_store.max_zipped, max_unzipped=code_store.max_unzipped
            ),
            OptStore(code_store.root / "opt"),
        )
        self.layers.functions_in_use = self._layers_in_use
        self.code_signing = code_signing or CodeSigningService(self.region, self.account, db)
        self.code_signing.functions_using = self._functions_using
        self._load()

    # -- start-up ---------------------------------------------------------------------------------

    def _load(self) -> None:
        """Fill the map from the database; repair unpacked code from its blob; drop orphaned code."""
        self.code.clear_scratch()
        for record in self.repo.all_versions(None):
            if not self.code.directory(record.code_sha256).is_dir():
                self._restore_code(record)
            self._remember(record)
        for alias in self.alias_repo.all():
            self._remember_alias(alias)
        for url in self.url_repo.all():
            self._remember_url(url)
        self.code.collect(self.repo.code_in_use())
        self.layers.code.clear_scratch()
        self.layers.opt.clear_scratch()
        self.layers.collect()

    def _restore_code(self, record: FunctionRecord) -> None:
        blob = self.code.blob_path(record.code_sha256)
        if not blob.is_file():
            log.error("code of function %s (%s) is missing; it cannot run", record.name, record.code_sha256)
            return
        with self.code.add(blob.read_bytes()):
            pass

    # -- helpers ----------------------------------------------------------------------------------

    def _rules(self) -> validation.Rules:
        return validation.Rules(tuple(self._available_runtimes()), self._architecture)

    def _spec(self, record: FunctionRecord, function: FunctionRecord | None = None) -> FunctionSpec:
        code_dir = self.code.directory(record.code_sha256)
        opt_dir = self._opt_dir(record)
        return function_spec(record, code_dir, self.region, self.account, function, opt_dir, self.sdk)

    def _remember(self, record: FunctionRecord) -> None:
        """Mirror a stored version in memory, where `resolve` finds it. A published version follows its
        function's $LATEST for the function's own members (reserved concurrency, silo's settings), so a
        change of $LATEST renews their specs too (each $LATEST is loaded before its versions)."""
        stored = self._records.setdefault(record.name, {})
        stored[record.version] = record
        if record.version != LATEST:
            self._versions[(record.name, record.version)] = self._spec(record, stored[LATEST])
            return
        self._specs[record.name] = self._spec(record)
        for number, published in stored.items():
            if number != LATEST:
                self._versions[(record.name, number)] = self._spec(published, record)

    def _forget(self, name: str, version: str | None = None) -> None:
        """Drop a deleted function (`version` None) or one of its published versions from memory."""
        if version is None:
            self._specs.pop(name, None)
            self._aliases.pop(name, None)
            self._forget_url(name)
            for number in self._records.pop(name, {}):
                self._versions.pop((name, number), None)
            return
        self._records.get(name, {}).pop(version, None)
        self._versions.pop((name, version), None)

    def _configuration(self, record: FunctionRecord, as_addressed: str | None = None) -> dict[str, Any]:
        return function_configuration(record, self.region, self.account, as_addressed)

    def _arn(self, name: str) -> str:
        return function_arn(self.region, self.account, name)

    def _check_home(self, ref: FunctionRef) -> None:
        """An ARN of another region or account names a function that is not here."""
        if (ref.region or self.region) != self.region or (ref.account or self.account) != self.account:
            raise not_found(ref.region or self.region, ref.account or self.account, ref.name, ref.qualifier)

    def _record(self, function_name: str, qualifier: str | None, *, namespaced: bool) -> FunctionRecord:
        return self._addressed(function_name, qualifier, namespaced=namespaced)[0]

    def _addressed(
        self, function_name: str, qualifier: str | None, *, namespaced: bool
    ) -> tuple[FunctionRecord, str | None]:
        """The stored version a request addresses, and the qualifier it was addressed with (None: none)."""
        ref = parse_function_name(function_name, namespaced=namespaced)
        wanted = merge_qualifier(ref, qualifier)
        self._check_home(ref)
        record = self.repo.get(ref.name)
        if record is None:
            raise not_found(self.region, self.account, ref.name)
        if wanted in (None, LATEST):
            return record, wanted
        version = self._version_of(ref.name, wanted)
        published = None if version is None else self.repo.get(ref.name, version)
        if published is None:
            raise not_found(self.region, self.account, ref.name, wanted)
        return published, wanted

    def _version_of(self, name: str, qualifier: str) -> str | None:
        """The version a qualifier other than $LATEST names: a number, or an alias's version (None: none).
        Reads report an alias's own version, not the one a weight may send a call to."""
        if qualifier.isdigit() and qualifier.isascii():
            return qualifier
        alias = self._aliases.get(name, {}).get(qualifier)
        return None if alias is None else alias.function_version

    def _unqualified(self, function_name: str) -> FunctionRecord:
        """The $LATEST record of an update target; updates apply to the unpublished version only."""
        ref = parse_function_name(function_name, namespaced=False)
        if ref.qualifier not in (None, LATEST):
            raise InvalidParameterValueException(
                "This operation is permitted on Lambda functions only. Aliases and versions do not support "
                "this operation. Please specify either a function name or an unqualified function ARN."
            )
        return self._record(function_name, None, namespaced=False)

    @staticmethod
    def _check_revision(record: FunctionRecord, revision_id: str | None) -> None:
        if revision_id is not None and revision_id != record.revision_id:
            raise PreconditionFailedException(REVISION_MISMATCH)

    def _notify(self, name: str, version: str | None = LATEST) -> None:
        try:
            self.on_change(self._arn(name), version)
        except Exception:
            # The change is committed; failing the request now would make the client retry a write
            # that already happened. Stale environments are the router's to clean up.
            log.exception("on_change failed for function %s", name)

    def _package(self, package: validation.Package) -> tuple[bytes, int | None]:
        """A request's zip, fetched from S3 when it gives an S3 location, and the zipped-size limit that
        applies to it (None: the store's, for an upload)."""
        if isinstance(package, bytes):
            return package, None
        return self.packages.fetch(package), MAX_UNZIPPED_BYTES

    def _collect(self, *shas: str) -> None:
        self.code.collect(self.repo.code_in_use(), candidates=shas)

    # -- commands ---------------------------------------------------------------------------------

    def create_function(self, body: dict[str, Any]) -> dict[str, Any]:
        """CreateFunction: validate, store the code, record the function. Returns its configuration."""
        request = validation.create_request(body, self._rules())
        name = request.ref.name
        self._check_home(request.ref)
        if name in self._specs:
            raise ResourceConflictException(f"Function already exist: {name}")
        zip_bytes, max_zipped = self._package(request.package)
        csc = str_member(body, "CodeSigningConfigArn")
        if csc is not None:
            request.config["CodeSigningConfigArn"] = self.code_signing.require(csc)
        with self._write_lock:
            if name in self._specs:
                raise ResourceConflictException(f"Function already exist: {name}")
            now = lambda_timestamp()
            inserted = False
            stored_sha: str | None = None
            try:
                with self.layers.lock, self.code.add(zip_bytes, max_zipped=max_zipped) as stored:
                    stored_sha = stored.sha256_hex
                    record = FunctionRecord(
                        name=name,
                        version=LATEST,
                        config=self._with_layers(request.config, stored.sha256_hex, zip_bytes),
                        code_sha256=stored.sha256_hex,
                        code_size=stored.size,
                        revision_id=str(uuid.uuid4()),
                        last_modified=now,
                    )
                    inserted = self.repo.insert(record, created_at=now)
            finally:
                # Collected only once unpinned; code another function shares is kept (it is in use).
                if not inserted and stored_sha is not None:
                    self._collect(stored_sha)
            if not inserted:
                raise ResourceConflictException(f"Function already exist: {name}")
            self._remember(record)
            if request.publish:
                # Lambda answers with $LATEST's configuration as created, numbered as the version published.
                published = self._publish(record, None)
                return {**self._configuration(record), "Version": published.version}
        return self._configuration(record)

    def get_function(
        self, function_name: str, qualifier: str | None, code_location: Callable[[str], str]
    ) -> dict[str, Any]:
        """GetFunction. `code_location(name)` gives the URL this server serves the package at (`name` may
        carry a qualifier, `name:1`)."""
        record, addressed = self._addressed(function_name, qualifier, namespaced=True)
        whole = self._records.get(record.name, {}).get(LATEST, record).config
        where = record.name if addressed in (None, LATEST) else f"{record.name}:{addressed}"
        out: dict[str, Any] = {
            "Configuration": self._configuration(record, addressed),
            "Code": {"RepositoryType": "S3", "Location": code_location(where)},
        }
        if whole.get("Tags"):
            out["Tags"] = dict(whole["Tags"])
        if "ReservedConcurrentExecutions" in whole:
            out["Concurrency"] = {"ReservedConcurrentExecutions": whole["ReservedConcurrentExecutions"]}
        return out

    def get_function_configuration(self, function_name: str, qualifier: str | None) -> dict[str, Any]:
        """GetFunctionConfiguration."""
        record, addressed = self._addressed(function_name, qualifier, namespaced=True)
        return self._configuration(record, addressed)

    def function_code(self, function_name: str) -> bytes:
        """The deployment package of a function's version (`name:1`; a bare name: $LATEST), as uploaded."""
        record = self._record(function_name, None, namespaced=True)
        return self.code.read_blob(record.code_sha256)

    def list_functions(
        self,
        marker: str | None = None,
        max_items: int | None = None,
        function_version: str | None = None,
        master_region: str | None = None,
    ) -> dict[str, Any]:
        """ListFunctions: pages of at most 50, ordered by name; NextMarker when more remain."""
        v = Violations()
        if max_items is not None and not 1 <= max_items <= 10000:
            bound = "greater than or equal to 1" if max_items < 1 else "less than or equal to 10000"
            v.add(max_items, "maxItems", f"Member must have value {bound}")
        if function_version is not None and function_version != "ALL":
            v.add(function_version, "functionVersion", enum_constraint(["ALL"]))
        v.raise_if_any()
        if master_region is not None:
            # Only Lambda@Edge replicas have a master region, and silo has none.
            return {"Functions": []}
        limit = min(max_items or LIST_PAGE_MAX, LIST_PAGE_MAX)
        if function_version == "ALL":
            return self._list_every_version(marker, limit)
        # One more than asked tells whether another page exists without a second query.
        records = self.repo.list_page(marker, limit + 1)
        out: dict[str, Any] = {"Functions": [self._configuration(r) for r in records[:limit]]}
        if len(records) > limit:
            out["NextMarker"] = records[limit - 1].name
        return out

    def _list_every_version(self, marker: str | None, limit: int) -> dict[str, Any]:
        """ListFunctions with FunctionVersion=ALL: every function's $LATEST (its ARN qualified, as on Lambda)
        and then its published versions. The marker is `name:version` of the last one listed."""
        if marker is None:
            after = ("", -1)
        elif ":" in marker:
            name, version = marker.rsplit(":", 1)
            after = (name, versions.after_marker(version))
        else:  # a function's name: after all of it
            after = (marker, 1 << 62)
        records = self.repo.every_version_page(after, limit + 1)
        out: dict[str, Any] = {
            "Functions": [self._configuration(r, LATEST if r.version == LATEST else None) for r in records[:limit]]
        }
        if len(records) > limit:
            last = records[limit - 1]
            out["NextMarker"] = f"{last.name}:{last.version}"
        return out

    def update_function_code(self, function_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """UpdateFunctionCode (ZipFile, or S3Bucket and S3Key), honouring the RevisionId precondition and DryRun."""
        request = validation.update_code(body, self._rules())
        self._unqualified(function_name)  # a function that is not there is not fetched for
        zip_bytes, max_zipped = self._package(request.package)
        with self._write_lock:
            current = self._unqualified(function_name)
            self._check_revision(current, request.revision_id)
            with self.code.add(zip_bytes, max_zipped=max_zipped) as stored:
                config = dict(current.config)
                if request.architectures is not None:
                    config["Architectures"] = request.architectures
                try:
                    self._check_unzipped(stored.sha256_hex, used_layers(config))
                    self._vet(config, zip_bytes, [])
                except LambdaError:
                    self._collect(stored.sha256_hex)
                    raise
                record = replace(
                    current,
                    config=config,
                    code_sha256=stored.sha256_hex,
                    code_size=stored.size,
                    revision_id=str(uuid.uuid4()),
                    last_modified=lambda_timestamp(),
                )
                if request.dry_run:
                    applied = False
                else:
                    applied = self.repo.replace(record, current.revision_id)
            if not applied:
                self._collect(stored.sha256_hex)
                if request.dry_run:
                    return self._configuration(replace(record, revision_id=current.revision_id))
                raise PreconditionFailedException(REVISION_MISMATCH)
            self._remember(record)
            if current.code_sha256 != record.code_sha256:
                self._collect(current.code_sha256)
            published = self._publish(record, None) if request.publish else None
        self._notify(record.name)
        # With Publish, Lambda answers with the version published (AWS-recorded).
        return self._configuration(published or record)

    def update_function_configuration(self, function_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """UpdateFunctionConfiguration: members present replace the current ones; TenancyConfig never changes."""
        with self._write_lock:
            current = self._unqualified(function_name)
            config = validation.update_configuration(body, current.config, current.name, self._rules())
            self._check_revision(current, str_member(body, "RevisionId"))
            with self.layers.lock:
                config = self._with_layers(config, current.code_sha256)
                record = replace(
                    current, config=config, revision_id=str(uuid.uuid4()), last_modified=lambda_timestamp()
                )
                if not self.repo.replace(record, current.revision_id):
                    raise PreconditionFailedException(REVISION_MISMATCH)
                self._remember(record)
            if used_layers(current.config) != used_layers(record.config):
                self.layers.collect([layer.code_sha256 for layer in used_layers(current.config)])
        self._notify(record.name)
        return self._configuration(record)

    def reserved_total(self) -> int:
        """The sum of every function's reserved concurrency (read on the invocation path: from memory)."""
        return sum(spec.reserved_concurrency or 0 for spec in self._specs.values())

    def _set_function_member(self, current: FunctionRecord, key: str, value: Any) -> None:
        """Set (or, with None, remove) a member of the function as a whole, kept in $LATEST's configuration."""
        config = {k: v for k, v in current.config.items() if k != key}
        if value is not None:
            config[key] = value
        record = replace(current, config=config)
        if not self.repo.replace(record, current.revision_id):
            raise PreconditionFailedException(REVISION_MISMATCH)
        self._remember(record)

    def get_silo_settings(self, function_name: str) -> dict[str, Any]:
        """silo's own settings of a function (sandbox backend, network)."""
        return silo_settings.current(self._unqualified(function_name).config)

    def update_silo_settings(self, function_name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Change silo's own settings; like a configuration update, it retires the function's environments."""
        with self._write_lock:
            current = self._unqualified(function_name)
            settings = silo_settings.validate(body, current.config)
            config = {**current.config, "Silo": settings}
            record = replace(current, config=config, revision_id=str(uuid.uuid4()), last_modified=lambda_timestamp())
            if not self.repo.replace(record, current.revision_id):
                raise PreconditionFailedException(REVISION_MISMATCH)
            self._remember(record)
        # The backend and the network are the function's, so every version's environments go.
        self._notify(record.name, None)
        return settings

    def delete_function(self, function_name: str, qualifier: str | None = None) -> None:
        """DeleteFunction: the whole function, or with a qualifier one published version. Deleting `$LATEST`
        alone is refused, as on Lambda."""
        ref = parse_function_name(function_name, namespaced=True)
        wanted = merge_qualifier(ref, qualifier)
        if wanted == LATEST:
            raise InvalidParameterValueException("$LATEST version cannot be deleted without deleting the function.")
        with self._write_lock:
            if wanted is not None:
                record = self._record(function_name, qualifier, namespaced=True)
                self._check_unaliased(record)
                if not self.repo.delete_version(record.name, record.version):
                    raise not_found(self.region, self.account, record.name, wanted)
                self._forget(record.name, record.version)
                self._collect(record.code_sha256)
                self.layers.collect([layer.code_sha256 for layer in used_layers(record.config)])
            else:
                record = self._record(function_name, None, namespaced=True)
                gone = list(self._records.get(record.name, {}).values())
                shas = {r.code_sha256 for r in gone}
                self.repo.delete(record.name)
                self._forget(record.name)
                self._collect(record.code_sha256, *shas)
                self.layers.collect([layer.code_sha256 for r in gone for layer in used_layers(r.config)])
        self._notify(record.name, record.version if wanted is not None else None)

    def _check_unaliased(self, record: FunctionRecord) -> None:
        """A version an alias sends calls to cannot be deleted."""
        used_by = self._aliases_of_version(record.name, record.version)
        if used_by:
            raise ResourceConflictException(
                f"Version {record.version} of function {self._arn(record.name)} cannot be deleted: the alias(es) "
                f"{', '.join(used_by)} send calls to it. Point them at another version, or delete them, first."
            )

    def get_account_settings(self) -> dict[str, Any]:
        """GetAccountSettings: silo's limits and what this server stores."""
        count, total = self.repo.usage()
        # Lambda's code storage holds layer archives as well as deployment packages.
        total += self.layers.repo.total_code_size()
        return {
            "AccountLimit": {
                "TotalCodeSize": TOTAL_CODE_SIZE_LIMIT,
                "CodeSizeUnzipped": MAX_UNZIPPED_BYTES,
                "CodeSizeZipped": MAX_ZIPPED_BYTES,
                "ConcurrentExecutions": self.concurrency_limit,
                "UnreservedConcurrentExecutions": self.concurrency_limit - self.reserved_total(),
            },
            "AccountUsage": {"TotalCodeSize": total, "FunctionCount": count},
        }

    # -- versions ---------------------------------------------------------------------------------

    # -- the invoke path ----------------------------------------------------------------------------

    def resolve(self, function_name: str, qualifier: str | None, tenant_id: str | None = None) -> FunctionSpec:
        """The FunctionSpec an Invoke addresses, from memory.

        Accepts a name, `name:qualifier`, a partial ARN or a full ARN; the qualifier is `$LATEST`, a
        published version's number or an alias. Through an alias with a weighted second version, the
        version is picked for this call (by `tenant_id` for a PER_TENANT function; silo.control.aliases).
        """
        if qualifier is None or qualifier == LATEST:
            spec = self._specs.get(function_name)
            if spec is not None:  # the common case: a bare name, no parsing
                return spec
        ref = parse_function_name(function_name, namespaced=True)
        wanted = merge_qualifier(ref, qualifier)
        self._check_home(ref)
        spec = self._specs.get(ref.name)
        if spec is None:
            raise not_found(self.region, self.account, ref.name)
        if wanted in (None, LATEST):
            return spec
        if wanted.isdigit() and wanted.isascii():
            version: str | None = wanted
        else:
            version = self._through_alias(ref.name, wanted, spec.per_tenant, tenant_id)
        if version == LATEST:
            return spec
        published = None if version is None else self._versions.get((ref.name, version))
        if published is None:
            raise not_found(self.region, self.account, ref.name, wanted)
        return published

    def functions(self) -> list[FunctionSpec]:
        """Every function's $LATEST and published versions (e.g. for pre-warming at start)."""
        return [*self._specs.values(), *self._versions.values()]
