"""Function URLs: Create/Get/Update/Delete/ListFunctionUrlConfigs, and the URLs the HTTP door serves.

A mixin of FunctionService: it shares the service's lock and in-memory maps, and keeps the URLs in
memory too (by id, for the door; by function and qualifier, for the operations), so a call through a URL
touches no database. A URL belongs to a function's `$LATEST` (no qualifier) or to one of its aliases, as
on Lambda (a version number, or `$LATEST` named, is refused by the model's pattern); it goes with its
function, and with its alias. Lambda does not serve function URLs for tenant isolation, so a PER_TENANT
function is refused one. Codes and messages are Lambda's, as recorded against AWS (LocalStack's
snapshots of TestLambdaUrl); the URL itself is silo's own address, `<base>/url/<url-id>/`.
"""

from __future__ import annotations

import re
import secrets
import string
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from silo.control.configuration import lambda_timestamp
from silo.control.fields import bool_member, dict_member, int_member, list_member, str_member
from silo.control.names import LATEST, FunctionRef, function_arn, merge_qualifier, parse_function_name
from silo.control.violations import Violations, enum_constraint, show
from silo.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from silo.store.aliases import AliasRecord
from silo.store.function_urls import FunctionUrlRecord, FunctionUrlRepository
from silo.store.functions import FunctionRecord

URL_PATH = "/url/"
AUTH_TYPES = ("NONE", "AWS_IAM")
INVOKE_MODES = ("BUFFERED", "RESPONSE_STREAM")
QUALIFIER_PATTERN = r"((?!^\d+$)^[0-9a-zA-Z-_]+$)"
_QUALIFIER = re.compile(r"(?!\d+$)[0-9a-zA-Z_-]+", re.ASCII)
MAX_AGE = 86400
LIST_PAGE_MAX = 50
URL_ID_LENGTH = 32
_URL_ID_ALPHABET = string.ascii_lowercase + string.digits
# (member, name in messages, most items, longest item, shortest item), as the model bounds them.
CORS_LISTS = (
    ("AllowHeaders", "cors.allowHeaders", 100, 1024, 0),
    ("AllowMethods", "cors.allowMethods", 6, 6, 0),
    ("AllowOrigins", "cors.allowOrigins", 100, 253, 1),
    ("ExposeHeaders", "cors.exposeHeaders", 100, 1024, 0),
)
__all__ = ["FunctionUrlOperations", "FunctionUrlRecord", "render", "url_request"]

NO_FUNCTION = "Function does not exist"
NO_RESOURCE = "The resource you requested does not exist."
PER_TENANT = (
    "Function URLs are not supported for functions with tenant isolation mode: a URL's callers name no tenant. "
    "Put an API Gateway REST API (silo's gateway, /gateway/...) in front of the function instead."
)
STREAMING = (
    "silo does not implement response streaming: InvokeMode RESPONSE_STREAM is not supported. Use BUFFERED "
    "(the default), which returns the function's whole answer at once."
)


@dataclass(frozen=True, slots=True)
class UrlRequest:
    """The members of a Create or Update body that were given (None: not given)."""

    auth_type: str | None
    cors: dict[str, Any] | None  # {} when given empty: no CORS settings
    invoke_mode: str | None


def url_request(body: dict[str, Any], *, creating: bool) -> UrlRequest:
    """Check a body against the model, reporting every violation at once, as Lambda's validator does."""
    v = Violations()
    auth_type = str_member(body, "AuthType")
    if auth_type is None and creating:
        v.add("null", "authType", "Member must not be null")
    elif auth_type is not None and auth_type not in AUTH_TYPES:
        v.add(auth_type, "authType", enum_constraint(AUTH_TYPES))
    invoke_mode = str_member(body, "InvokeMode")
    if invoke_mode is not None and invoke_mode not in INVOKE_MODES:
        v.add(invoke_mode, "invokeMode", enum_constraint(INVOKE_MODES))
    cors = _cors(dict_member(body, "Cors"), v)
    v.raise_if_any()
    if invoke_mode == "RESPONSE_STREAM":
        raise InvalidParameterValueException(STREAMING)
    return UrlRequest(auth_type, cors, invoke_mode)


def _cors(given: dict[str, Any] | None, v: Violations) -> dict[str, Any] | None:
    if given is None:
        return None
    out: dict[str, Any] = {}
    credentials = bool_member(given, "AllowCredentials", "Cors.AllowCredentials")
    if credentials is not None:
        out["AllowCredentials"] = credentials
    for key, member, most, longest, shortest in CORS_LISTS:
        items = list_member(given, key, f"Cors.{key}")
        if items is None:
            continue
        if not all(isinstance(item, str) for item in items):
            raise InvalidRequestContentException(f"Could not parse request body into json: Cors.{key} must be strings")
        if len(items) > most:
            v.add(items, member, f"Member must have length less than or equal to {most}")
        bad = [item for item in items if not shortest <= len(item) <= longest]
        if bad:
            v.add(
                items,
                member,
                f"Member must satisfy constraint: [Member must have length less than or equal to {longest}, "
                f"Member must have length greater than or equal to {shortest}]",
            )
        out[key] = list(items)
    max_age = int_member(given, "MaxAge", "Cors.MaxAge")
    if max_age is not None:
        if not 0 <= max_age <= MAX_AGE:
            bound = "greater than or equal to 0" if max_age < 0 else f"less than or equal to {MAX_AGE}"
            v.add(max_age, "cors.maxAge", f"Member must have value {bound}")
        out["MaxAge"] = max_age
    return out


def render(
    record: FunctionUrlRecord,
    region: str,
    account: str,
    base: str,
    *,
    last_modified: bool = True,
    invoke_mode: bool = True,
) -> dict[str, Any]:
    """A FunctionUrlConfig. Create answers without LastModifiedTime, Create and Update without InvokeMode
    unless it was given (AWS-recorded)."""
    out: dict[str, Any] = {
        "FunctionUrl": f"{base.rstrip('/')}{URL_PATH}{record.url_id}/",
        "FunctionArn": function_arn(
            region, account, record.name, None if record.qualifier == LATEST else record.qualifier
        ),
        "AuthType": record.auth_type,
    }
    if record.cors:
        out["Cors"] = dict(record.cors)
    out["CreationTime"] = record.created
    if last_modified:
        out["LastModifiedTime"] = record.last_modified
    if invoke_mode:
        out["InvokeMode"] = record.invoke_mode
    return out


class FunctionUrlOperations:
    """The URL operations, and the URL the door looks up by id."""

    region: str
    account: str
    url_repo: FunctionUrlRepository
    _write_lock: threading.RLock
    _records: dict[str, dict[str, FunctionRecord]]
    _aliases: dict[str, dict[str, AliasRecord]]
    _urls: dict[str, dict[str, FunctionUrlRecord]]  # by function name, then qualifier
    _urls_by_id: dict[str, FunctionUrlRecord]

    if TYPE_CHECKING:

        def _check_home(self, ref: FunctionRef) -> None: ...

    # -- memory -----------------------------------------------------------------------------------

    def _remember_url(self, record: FunctionUrlRecord) -> None:
        self._urls.setdefault(record.name, {})[record.qualifier] = record
        self._urls_by_id[record.url_id] = record

    def _forget_url(self, name: str, qualifier: str | None = None) -> None:
        """Drop a function's URLs (`qualifier` None: all of them) from memory."""
        kept = self._urls.get(name, {})
        for q in [q for q in kept if qualifier is None or q == qualifier]:
            self._urls_by_id.pop(kept.pop(q).url_id, None)
        if not kept:
            self._urls.pop(name, None)

    def function_url(self, url_id: str) -> FunctionUrlRecord | None:
        """The URL served at `/url/<url_id>/` (None: none), from memory: the door asks on every call."""
        return self._urls_by_id.get(url_id)

    def function_url_auth_type(self, url_id: str) -> str | None:
        """AuthType of the URL of that id, for the authentication layer (None: no such URL)."""
        record = self._urls_by_id.get(url_id)
        return None if record is None else record.auth_type

    # -- helpers ----------------------------------------------------------------------------------

    def _url_address(self, function_name: str, qualifier: str | None) -> tuple[str, str]:
        """The function name and qualifier (`$LATEST` when none) a request addresses, checked as Lambda
        checks them: the qualifier against the model first, then the function's home."""
        ref = parse_function_name(function_name, namespaced=False)
        wanted = merge_qualifier(ref, qualifier)
        if wanted is not None and not _QUALIFIER.fullmatch(wanted):
            v = Violations()
            v.add(show(wanted), "qualifier", f"Member must satisfy regular expression pattern: {QUALIFIER_PATTERN}")
            raise v.error()
        self._check_home(ref)
        return ref.name, wanted or LATEST

    def _url_target_exists(self, name: str, qualifier: str) -> bool:
        if LATEST not in self._records.get(name, {}):
            return False
        return qualifier == LATEST or qualifier in self._aliases.get(name, {})

    def _new_url_id(self) -> str:
        while True:
            url_id = "".join(secrets.choice(_URL_ID_ALPHABET) for _ in range(URL_ID_LENGTH))
            if url_id not in self._urls_by_id:
                return url_id

    def _render_url(self, record: FunctionUrlRecord, base: str, **shown: bool) -> dict[str, Any]:
        return render(record, self.region, self.account, base, **shown)

    # -- operations -------------------------------------------------------------------------------

    def create_function_url_config(
        self, function_name: str, qualifier: str | None, body: dict[str, Any], base: str
    ) -> dict[str, Any]:
        """CreateFunctionUrlConfig. `base` is this server's address as the caller reached it."""
        name, q = self._url_address(function_name, qualifier)
        request = url_request(body, creating=True)
        assert request.auth_type is not None  # url_request requires it on create
        with self._write_lock:
            if not self._url_target_exists(name, q):
                raise ResourceNotFoundException(NO_FUNCTION)
            if "TenancyConfig" in self._records[name][LATEST].config:
                raise InvalidParameterValueException(PER_TENANT)
            now = lambda_timestamp()
            record = FunctionUrlRecord(
                name=name,
                qualifier=q,
                url_id=self._new_url_id(),
                auth_type=request.auth_type,
                cors=request.cors or None,
                invoke_mode=request.invoke_mode or "BUFFERED",
                created=now,
                last_modified=now,
            )
            if q in self._urls.get(name, {}) or not self.url_repo.insert(record):
                arn = function_arn(self.region, self.account, name, None if q == LATEST else q)
                raise ResourceConflictException(
                    f"Failed to create function url config for [functionArn = {arn}]. Error message:  "
                    "FunctionUrlConfig exists for this Lambda function"
                )
            self._remember_url(record)
        return self._render_url(record, base, last_modified=False, invoke_mode=request.invoke_mode is not None)

    def get_function_url_config(self, function_name: str, qualifier: str | None, base: str) -> dict[str, Any]:
        """GetFunctionUrlConfig."""
        name, q = self._url_address(function_name, qualifier)
        record = self._urls.get(name, {}).get(q)
        if record is None or not self._url_target_exists(name, q):
            raise ResourceNotFoundException(NO_RESOURCE)
        return self._render_url(record, base)

    def update_function_url_config(
        self, function_name: str, qualifier: str | None, body: dict[str, Any], base: str
    ) -> dict[str, Any]:
        """UpdateFunctionUrlConfig: the members given replace the current ones; `Cors: {}` removes CORS."""
        name, q = self._url_address(function_name, qualifier)
        request = url_request(body, creating=False)
        with self._write_lock:
            if not self._url_target_exists(name, q):
                raise ResourceNotFoundException(NO_FUNCTION)
            current = self._urls.get(name, {}).get(q)
            if current is None:
                raise ResourceNotFoundException(NO_RESOURCE)
            record = replace(
                current,
                auth_type=request.auth_type or current.auth_type,
                cors=current.cors if request.cors is None else (request.cors or None),
                invoke_mode=request.invoke_mode or current.invoke_mode,
                last_modified=lambda_timestamp(),
            )
            if not self.url_repo.replace(record):
                raise ResourceNotFoundException(NO_RESOURCE)
            self._remember_url(record)
        return self._render_url(record, base, invoke_mode=request.invoke_mode is not None)

    def delete_function_url_config(self, function_name: str, qualifier: str | None) -> None:
        """DeleteFunctionUrlConfig: the URL stops answering at once."""
        name, q = self._url_address(function_name, qualifier)
        with self._write_lock:
            if q not in self._urls.get(name, {}) or not self._url_target_exists(name, q):
                raise ResourceNotFoundException(NO_RESOURCE)
            self.url_repo.delete(name, q)
            self._forget_url(name, q)

    def list_function_url_configs(
        self, function_name: str, marker: str | None, max_items: int | None, base: str
    ) -> dict[str, Any]:
        """ListFunctionUrlConfigs: `$LATEST`'s first, then the aliases' by name; pages of at most 50."""
        if max_items is not None and not 1 <= max_items <= LIST_PAGE_MAX:
            v = Violations()
            bound = "greater than or equal to 1" if max_items < 1 else f"less than or equal to {LIST_PAGE_MAX}"
            v.add(max_items, "maxItems", f"Member must have value {bound}")
            v.raise_if_any()
        ref = parse_function_name(function_name, namespaced=False)
        self._check_home(ref)
        if LATEST not in self._records.get(ref.name, {}):
            raise ResourceNotFoundException(NO_FUNCTION)
        found = sorted(self._urls.get(ref.name, {}).values(), key=lambda r: (r.qualifier != LATEST, r.qualifier))
        if marker is not None:
            key = (marker != LATEST, marker)
            found = [r for r in found if (r.qualifier != LATEST, r.qualifier) > key]
        limit = max_items or LIST_PAGE_MAX
        out: dict[str, Any] = {"FunctionUrlConfigs": [self._render_url(r, base) for r in found[:limit]]}
        if len(found) > limit:
            out["NextMarker"] = found[limit - 1].qualifier
        return out
