"""Published versions: what PublishVersion asks, whether `$LATEST` changed since the last version, and the
pages of ListVersionsByFunction. Pure functions; FunctionService applies them under its write lock.

A version is an immutable snapshot of `$LATEST`'s code and configuration (silo.control.configuration.snapshot)
with a number of its own, never given twice. The wording of errors is Lambda's, as recorded from AWS in
LocalStack's snapshot tests (test_lambda_api.snapshot.json, TestLambdaVersions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from silo.control.configuration import code_sha256_b64, snapshot
from silo.control.fields import str_member
from silo.control.names import LATEST
from silo.control.violations import Violations, enum_constraint
from silo.errors import InvalidParameterValueException
from silo.store.functions import FunctionRecord

# ListVersionsByFunction answers at most this many a page, as Lambda does.
LIST_PAGE_MAX = 50


@dataclass(frozen=True, slots=True)
class PublishRequest:
    code_sha256: str | None
    description: str | None
    revision_id: str | None


def publish_request(body: dict[str, Any]) -> PublishRequest:
    """Validate a PublishVersion body."""
    v = Violations()
    description = str_member(body, "Description")
    if description is not None and len(description) > 256:
        v.add(description, "description", "Member must have length less than or equal to 256")
    publish_to = str_member(body, "PublishTo")
    if publish_to is not None and publish_to != "LATEST_PUBLISHED":
        v.add(publish_to, "publishTo", enum_constraint(["LATEST_PUBLISHED"]))
    v.raise_if_any()
    if publish_to is not None:
        raise InvalidParameterValueException(
            "silo does not support PublishTo (LATEST_PUBLISHED, for capacity providers); publish without it."
        )
    return PublishRequest(str_member(body, "CodeSha256"), description, str_member(body, "RevisionId"))


def check_code_sha256(given: str | None, latest: FunctionRecord) -> None:
    """PublishVersion's CodeSha256 precondition: the code must still be the one the caller saw."""
    current = code_sha256_b64(latest.code_sha256)
    if given is not None and given != current:
        raise InvalidParameterValueException(
            f"CodeSHA256 ({given}) is different from current CodeSHA256 in $LATEST ({current}). "
            "Please try again with the CodeSHA256 in $LATEST."
        )


def _without_description(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "Description"}


def unchanged(latest: FunctionRecord, last: FunctionRecord) -> bool:
    """Whether `$LATEST` is what the last published version snapshot (its description aside, which
    PublishVersion may set anew): then Lambda publishes nothing and answers with that version."""
    return latest.code_sha256 == last.code_sha256 and _without_description(
        snapshot(latest.config)
    ) == _without_description(last.config)


def version_config(latest: FunctionRecord, description: str | None) -> dict[str, Any]:
    """The configuration a new version keeps: `$LATEST`'s snapshot, with PublishVersion's description."""
    config = snapshot(latest.config)
    if description is not None:
        config["Description"] = description
    return config


def after_marker(marker: str | None) -> int:
    """The version number a page of ListVersionsByFunction starts after (-1: the first page, with $LATEST)."""
    if marker is None:
        return -1
    if marker == LATEST:
        return 0
    if marker.isascii() and marker.isdigit():
        return min(int(marker), 1 << 62)  # past every version there can be, and within SQLite's integers
    raise InvalidParameterValueException(
        f"The marker {marker} is not one ListVersionsByFunction gave; start again without a Marker."
    )
