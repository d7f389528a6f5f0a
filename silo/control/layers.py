"""LayerService: Lambda's layers, and the only writer of their state.

A layer version is a zip, unpacked once into a content-addressed, read-only tree (a CodeStore of its own,
so collecting function code never considers a layer's), plus its metadata and permission statements.
Functions name layer versions in their configuration (`Layers`, silo.control.functions); what their
environments see at /opt is the merge of those trees in order (silo.store.opt), built when the function's
layers are set. Deleting a layer version keeps its code for as long as a function version uses it, as
on Lambda ("a copy of the version remains until no functions refer to it").
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from silo.control import permissions
from silo.control.configuration import code_sha256_b64, lambda_timestamp
from silo.control.fields import dict_member, list_member, str_member
from silo.control.resources import POLICY_REVISION_MISMATCH
from silo.control.validation import ARCHITECTURES, code_package
from silo.control.violations import Violations, enum_constraint
from silo.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceNotFoundException,
)
from silo.runtimes import catalog
from silo.store.code import CodeStore
from silo.store.db import Database
from silo.store.layers import LayerRepository, LayerVersionRecord
from silo.store.opt import OptStore, digest_of

LAYER_NAME_PATTERN = r"[a-zA-Z0-9-_]{1,140}"
_ARN_HEAD = r"arn:(?:aws[a-zA-Z-]*)?:lambda:([a-z0-9-]+):(\d{12}):layer:"
LAYER_ARN = re.compile(_ARN_HEAD + r"([a-zA-Z0-9-_]{1,140})", re.ASCII)
LAYER_VERSION_ARN = re.compile(_ARN_HEAD + r"([a-zA-Z0-9-_]+):([0-9]+)", re.ASCII)
# The model's patterns, as the validator quotes them.
LAYER_NAME_OR_ARN_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:layer:"
    r"[a-zA-Z0-9-_]{1,140}|[a-zA-Z0-9-_]{1,140})"
)
LAYER_VERSION_ARN_PATTERN = (
    r"((arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:layer:"
    r"[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+))"
)
LAYER_ACTION = "lambda:GetLayerVersion"
LAYER_PRINCIPAL = re.compile(r"\d{12}|\*|arn:(aws[a-zA-Z-]*):iam::\d{12}:root", re.ASCII)
ORGANIZATION_PATTERN = r"o-[a-z0-9]{10,32}"
LIST_PAGE_MAX = 50
PATTERN_CONSTRAINT = "Member must satisfy regular expression pattern: "
MAX_COMPATIBLE_RUNTIMES = 15
MAX_COMPATIBLE_ARCHITECTURES = 2
# Lambda's own words for a layer version that is not there (GetLayerVersion and friends).
NO_RESOURCE = "The resource you requested does not exist."
S3_REFUSED = (
    "silo cannot fetch layer content from S3 yet (Content.S3Bucket, S3Key, S3ObjectVersion); send the zip "
    "itself in Content.ZipFile (the AWS CLI: --zip-file fileb://layer.zip)."
)


@dataclass(frozen=True, slots=True)
class UsedLayer:
    """A layer version as a function's configuration keeps it: what GetFunctionConfiguration reports and
    the code it runs, which outlives a deletion of the layer version."""

    arn: str
    code_size: int
    code_sha256: str
    unzipped_size: int

    def stored(self) -> dict[str, Any]:
        return {
            "Arn": self.arn,
            "CodeSize": self.code_size,
            "CodeSha256": self.code_sha256,
            "UnzippedSize": self.unzipped_size,
        }


def used_layers(config: dict[str, Any]) -> list[UsedLayer]:
    """The layers a stored function configuration names, in order."""
    return [
        UsedLayer(item["Arn"], int(item["CodeSize"]), item["CodeSha256"], int(item["UnzippedSize"]))
        for item in config.get("Layers", [])
    ]


MAX_VERSION = 2**63 - 1  # the model's `long`, and SQLite's INTEGER


def _version_number(raw: str | int) -> int:
    v = Violations()
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isascii() and raw.isdigit()):
        number = int(raw)
        if number <= MAX_VERSION:
            return number
        v.add(raw, "versionNumber", f"Member must have value less than or equal to {MAX_VERSION}")
    else:
        v.add(raw, "versionNumber", "Member must be a number")
    raise v.error()


def _parse_max_items(max_items: int | None) -> int:
    if max_items is not None and not 1 <= max_items <= LIST_PAGE_MAX:
        v = Violations()
        bound = "greater than or equal to 1" if max_items < 1 else f"less than or equal to {LIST_PAGE_MAX}"
        v.add(max_items, "maxItems", f"Member must have value {bound}")
        v.raise_if_any()
    return max_items or LIST_PAGE_MAX


def _check_filters(runtime: str | None, architecture: str | None) -> None:
    v = Violations()
    if runtime is not None and runtime not in catalog.LAMBDA_RUNTIMES:
        v.add(runtime, "compatibleRuntime", enum_constraint(list(catalog.LAMBDA_RUNTIMES)))
    if architecture is not None and architecture not in ARCHITECTURES:
        v.add(architecture, "compatibleArchitecture", enum_constraint(ARCHITECTURES))
    v.raise_if_any()


def _matches(record: LayerVersionRecord, runtime: str | None, architecture: str | None) -> bool:
    c = record.config
    if runtime is not None and runtime not in c.get("CompatibleRuntimes", []):
        return False
    return architecture is None or architecture in c.get("CompatibleArchitectures", [])


def _publish_config(body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """Validate a PublishLayerVersion body: the version's metadata and its zip."""
    v = Violations()
    content = dict_member(body, "Content")
    if content is None:
        v.add("null", "content", "Member must not be null")
    description = str_member(body, "Description")
    if description is not None and len(description) > 256:
        v.add(description, "description", "Member must have length less than or equal to 256")
    license_info = str_member(body, "LicenseInfo")
    if license_info is not None and len(license_info) > 512:
        v.add(license_info, "licenseInfo", "Member must have length less than or equal to 512")
    runtimes = list_member(body, "CompatibleRuntimes")
    if runtimes is not None:
        if len(runtimes) > MAX_COMPATIBLE_RUNTIMES:
            v.add(
                runtimes,
                "compatibleRuntimes",
                f"Member must have length less than or equal to {MAX_COMPATIBLE_RUNTIMES}",
            )
        if any(r not in catalog.LAMBDA_RUNTIMES for r in runtimes):
            constraint = enum_constraint(list(catalog.LAMBDA_RUNTIMES))
            v.add(runtimes, "compatibleRuntimes", f"Member must satisfy constraint: [{constraint}]")
    archs = list_member(body, "CompatibleArchitectures")
    if archs is not None:
        if len(archs) > MAX_COMPATIBLE_ARCHITECTURES:
            v.add(
                archs,
                "compatibleArchitectures",
                f"Member must have length less than or equal to {MAX_COMPATIBLE_ARCHITECTURES}",
            )
        if any(a not in ARCHITECTURES for a in archs):
            v.add(
                archs, "compatibleArchitectures", f"Member must satisfy constraint: [{enum_constraint(ARCHITECTURES)}]"
            )
    if v or content is None:
        raise v.error()
    if any(key in content for key in ("S3Bucket", "S3Key", "S3ObjectVersion")):
        raise InvalidParameterValueException(S3_REFUSED)
    if "ZipFile" not in content:
        raise InvalidParameterValueException("Missing Content: give the layer's zip in Content.ZipFile.")
    config: dict[str, Any] = {"Description": description or ""}
    if runtimes:
        config["CompatibleRuntimes"] = list(runtimes)
    if archs:
        config["CompatibleArchitectures"] = list(archs)
    if license_info is not None:
        config["LicenseInfo"] = license_info
    package = code_package(content, "Content.ZipFile")
    if not isinstance(package, bytes):
        raise InvalidParameterValueException(S3_REFUSED)
    return config, package


class LayerService:
    """Publish, read, list and delete layer versions and their permissions; resolve a function's layers.

    `functions_in_use()` gives the layer code and merged trees that function versions still use, so a
    deleted layer version's code is kept while it runs somewhere.
    """

    def __init__(self, region: str, account: str, db: Database, code: CodeStore, opt: OptStore) -> None:
        self.region = region
        self.account = account
        self.repo = LayerRepository(db)
        self.code = code
        self.opt = opt
        self.functions_in_use: Callable[[], tuple[set[str], set[str]]] = lambda: (set(), set())
        # Held by a function's write while it resolves its layers and records them, so that no deletion of a
        # layer version collects code a function is about to use.
        self.lock = threading.RLock()

    # -- names --------------------------------------------------------------------------------------

    def layer_arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:layer:{name}"

    def version_arn(self, name: str, version: int) -> str:
        return f"{self.layer_arn(name)}:{version}"

    def _layer_name(self, value: str) -> str:
        """The name a LayerName path member gives (a name or a layer ARN of this region and account)."""
        match = LAYER_ARN.fullmatch(value)
        if match is not None:
            if (match[1], match[2]) != (self.region, self.account):
                raise ResourceNotFoundException(NO_RESOURCE)
            return match[3]
        if re.fullmatch(LAYER_NAME_PATTERN, value, re.ASCII) is None:
            v = Violations()
            v.add(value, "layerName", f"Member must satisfy regular expression pattern: {LAYER_NAME_OR_ARN_PATTERN}")
            raise v.error()
        return value

    def _version(self, layer_name: str, version_number: str | int) -> LayerVersionRecord:
        record = self.repo.get(self._layer_name(layer_name), _version_number(version_number))
        if record is None:
            raise ResourceNotFoundException(NO_RESOURCE)
        return record

    def _by_arn(self, arn: str) -> LayerVersionRecord | None:
        match = LAYER_VERSION_ARN.fullmatch(arn)
        if match is None or (match[1], match[2]) != (self.region, self.account) or int(match[4]) > MAX_VERSION:
            return None
        return self.repo.get(match[3], int(match[4]))

    # -- answers --------------------------------------------------------------------------------------

    def _listed(self, record: LayerVersionRecord) -> dict[str, Any]:
        """A LayerVersionsListItem."""
        out: dict[str, Any] = {
            "LayerVersionArn": self.version_arn(record.name, record.version),
            "Version": record.version,
            "Description": record.config.get("Description", ""),
            "CreatedDate": record.created_date,
        }
        for key in ("CompatibleRuntimes", "LicenseInfo", "CompatibleArchitectures"):
            if key in record.config:
                out[key] = record.config[key]
        return out

    def _answer(self, record: LayerVersionRecord, location: Callable[[str, int], str]) -> dict[str, Any]:
        """GetLayerVersion's (and PublishLayerVersion's) answer."""
        listed = self._listed(record)
        return {
            "Content": {
                "Location": location(record.name, record.version),
                "CodeSha256": code_sha256_b64(record.code_sha256),
                "CodeSize": record.code_size,
            },
            "LayerArn": self.layer_arn(record.name),
            **listed,
        }

    # -- commands -------------------------------------------------------------------------------------

    def publish_layer_version(
        self, layer_name: str, body: dict[str, Any], location: Callable[[str, int], str]
    ) -> dict[str, Any]:
        """PublishLayerVersion: store and unpack the zip, and record the next version of the layer."""
        name = self._layer_name(layer_name)
        config, zip_bytes = _publish_config(body)
        with self.lock, self.code.add(zip_bytes) as stored:
            record = self.repo.publish(
                LayerVersionRecord(
                    name=name,
                    version=0,
                    config=config,
                    code_sha256=stored.sha256_hex,
                    code_size=stored.size,
                    unzipped_size=tree_size(stored.directory),
                    created_date=lambda_timestamp(),
                    policy=[],
                    revision_id=str(uuid.uuid4()),
                )
            )
        return self._answer(record, location)

    def get_layer_version(
        self, layer_name: str, version_number: str | int, location: Callable[[str, int], str]
    ) -> dict[str, Any]:
        return self._answer(self._version(layer_name, version_number), location)

    def get_layer_version_by_arn(self, arn: str | None, location: Callable[[str, int], str]) -> dict[str, Any]:
        if arn is None:
            v = Violations()
            v.add("null", "arn", "Member must not be null")
            raise v.error()
        if LAYER_VERSION_ARN.fullmatch(arn) is None:
            v = Violations()
            v.add(arn, "arn", f"Member must satisfy regular expression pattern: {LAYER_VERSION_ARN_PATTERN}")
            raise v.error()
        record = self._by_arn(arn)
        if record is None:
            raise ResourceNotFoundException(NO_RESOURCE)
        return self._answer(record, location)

    def layer_zip(self, layer_name: str, version_number: str | int) -> bytes:
        """A layer version's zip as uploaded (GetLayerVersion's Content.Location serves it)."""
        return self.code.read_blob(self._version(layer_name, version_number).code_sha256)

    def list_layers(
        self, runtime: str | None, architecture: str | None, marker: str | None, max_items: int | None
    ) -> dict[str, Any]:
        """ListLayers: each layer with its newest version matching the filters, by name; pages of 50."""
        limit = _parse_max_items(max_items)
        _check_filters(runtime, architecture)
        newest: dict[str, LayerVersionRecord] = {}
        for record in self.repo.all_versions():  # by name, newest first
            if record.name not in newest and _matches(record, runtime, architecture):
                newest[record.name] = record
        names = sorted(n for n in newest if marker is None or n > marker)
        out: dict[str, Any] = {
            "Layers": [
                {
                    "LayerName": n,
                    "LayerArn": self.layer_arn(n),
                    "LatestMatchingVersion": self._listed(newest[n]),
                }
                for n in names[:limit]
            ]
        }
        if len(names) > limit:
            out["NextMarker"] = names[limit - 1]
        return out

    def list_layer_versions(
        self,
        layer_name: str,
        runtime: str | None,
        architecture: str | None,
        marker: str | None,
        max_items: int | None,
    ) -> dict[str, Any]:
        """ListLayerVersions: newest first; NextMarker is the last version number given. A layer that has
        no version (never had, or all deleted) lists none, as on Lambda."""
        name = self._layer_name(layer_name)
        limit = _parse_max_items(max_items)
        _check_filters(runtime, architecture)
        before = int(marker) if marker is not None and marker.isascii() and marker.isdigit() else None
        page = [
            r
            for r in self.repo.versions(name)
            if _matches(r, runtime, architecture) and (before is None or r.version < before)
        ]
        out: dict[str, Any] = {"LayerVersions": [self._listed(r) for r in page[:limit]]}
        if len(page) > limit:
            out["NextMarker"] = str(page[limit - 1].version)
        return out

    def delete_layer_version(self, layer_name: str, version_number: str | int) -> None:
        """DeleteLayerVersion. Deleting a version that is not there succeeds, as on Lambda; functions
        that use a deleted version keep its code and go on running it."""
        name = self._layer_name(layer_name)
        number = _version_number(version_number)
        with self.lock:
            record = self.repo.get(name, number)
            if record is None or not self.repo.delete(name, number):
                return
            self.collect([record.code_sha256])

    # -- permissions ------------------------------------------------------------------------------------

    def add_permission(
        self, layer_name: str, version_number: str | int, body: dict[str, Any], revision_id: str | None
    ) -> dict[str, str]:
        """AddLayerVersionPermission: let an account, an organization's accounts or everyone use it."""
        sid = str_member(body, "StatementId")
        action = str_member(body, "Action")
        principal = str_member(body, "Principal")
        organization = str_member(body, "OrganizationId")
        v = Violations()
        for value, member in ((sid, "statementId"), (action, "action"), (principal, "principal")):
            if value is None:
                v.add("null", member, "Member must not be null")
        if sid is not None and not re.fullmatch(permissions.STATEMENT_ID_PATTERN, sid):
            v.add(
                sid,
                "statementId",
                f"Member must satisfy regular expression pattern: {permissions.STATEMENT_ID_PATTERN}",
            )
        if action is not None and action != LAYER_ACTION:
            v.add(action, "action", f"Member must satisfy regular expression pattern: {LAYER_ACTION}")
        if principal is not None and LAYER_PRINCIPAL.fullmatch(principal) is None:
            v.add(principal, "principal", f"Member must satisfy regular expression pattern: {LAYER_PRINCIPAL.pattern}")
        if organization is not None and not re.fullmatch(ORGANIZATION_PATTERN, organization):
            v.add(
                organization,
                "organizationId",
                f"Member must satisfy regular expression pattern: {ORGANIZATION_PATTERN}",
            )
        if v or sid is None or principal is None:
            raise v.error()
        if organization is not None and principal != "*":
            raise InvalidParameterValueException(
                "OrganizationId can be given only with the Principal '*' (every account of the organization)."
            )
        with self.lock:
            record = self._version(layer_name, version_number)
            if revision_id is not None and revision_id != record.revision_id:
                raise PreconditionFailedException(POLICY_REVISION_MISMATCH)
            statement: dict[str, Any] = {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": principal if principal == "*" else {"AWS": _account_root(principal)},
                "Action": LAYER_ACTION,
                "Resource": self.version_arn(record.name, record.version),
            }
            if organization is not None:
                statement["Condition"] = {"StringEquals": {"aws:PrincipalOrgID": organization}}
            changed = replace(record, policy=permissions.added(record.policy, statement), revision_id=str(uuid.uuid4()))
            if not self.repo.set_policy(changed, record.revision_id):
                raise PreconditionFailedException(POLICY_REVISION_MISMATCH)
        return {"Statement": json.dumps(statement, separators=(",", ":")), "RevisionId": changed.revision_id}

    def get_policy(self, layer_name: str, version_number: str | int) -> dict[str, str]:
        """GetLayerVersionPolicy."""
        record = self._version(layer_name, version_number)
        if not record.policy:
            raise ResourceNotFoundException(permissions.NO_POLICY)
        return {"Policy": permissions.document(record.policy), "RevisionId": record.revision_id}

    def remove_permission(self, layer_name: str, version_number: str | int, sid: str, revision_id: str | None) -> None:
        """RemoveLayerVersionPermission."""
        with self.lock:
            record = self._version(layer_name, version_number)
            if revision_id is not None and revision_id != record.revision_id:
                raise PreconditionFailedException(POLICY_REVISION_MISMATCH)
            changed = replace(record, policy=permissions.removed(record.policy, sid), revision_id=str(uuid.uuid4()))
            if not self.repo.set_policy(changed, record.revision_id):
                raise PreconditionFailedException(POLICY_REVISION_MISMATCH)

    # -- for functions ----------------------------------------------------------------------------------

    def resolve(self, arns: Iterable[str]) -> list[UsedLayer]:
        """The layer versions a function names, in order; one that does not exist is refused as on Lambda."""
        used = []
        for arn in arns:
            record = self._by_arn(arn)
            if record is None:
                raise InvalidParameterValueException(f"Layer version {arn} does not exist.")
            used.append(UsedLayer(arn, record.code_size, record.code_sha256, record.unzipped_size))
        return used

    def opt_dir(self, layers: list[UsedLayer]) -> Path | None:
        """The merged tree a function with these layers sees at /opt (built now if missing); None for none.
        A layer's unpacked tree that is gone is unpacked again from its zip; a layer whose zip is gone too
        fails the merge loudly rather than serve a partial /opt."""
        if not layers:
            return None
        shas = [layer.code_sha256 for layer in layers]
        merged = self.opt.directory(digest_of(shas))
        if merged.is_dir():
            return merged
        for layer in layers:
            if not self.code.directory(layer.code_sha256).is_dir() and self.code.blob_path(layer.code_sha256).is_file():
                with self.code.add(self.code.read_blob(layer.code_sha256)):
                    pass
        trees = [self.code.directory(sha) for sha in shas]
        missing = [layer.arn for layer, tree in zip(layers, trees, strict=True) if not tree.is_dir()]
        if missing:
            raise FileNotFoundError(f"the code of layer version(s) {', '.join(missing)} is missing from the store")
        return self.opt.build(shas, trees)

    def collect(self, candidates: Collection[str] | None = None) -> None:
        """Remove layer code and merged trees that neither a layer version nor a function version uses."""
        function_code, function_trees = self.functions_in_use()
        self.code.collect(self.repo.code_in_use() | function_code, candidates=candidates)
        self.opt.collect(function_trees)


def tree_digest(layers: list[UsedLayer]) -> str:
    return digest_of([layer.code_sha256 for layer in layers])


def tree_size(root: Path) -> int:
    """Bytes of the regular files of an unpacked tree (what Lambda's unzipped-size limit counts)."""
    total = 0
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    return total


def _account_root(principal: str) -> str:
    return principal if principal.startswith("arn:") else f"arn:aws:iam::{principal}:root"
