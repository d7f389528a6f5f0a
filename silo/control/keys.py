"""Caller keys: who may call silo, and as what. Creates, lists and revokes them, and answers the
authentication layer's one question, fast: which active key has this id.

Every key is held in memory (a few hundred bytes each), so authenticating a request reads a dict and
never the database; a revocation or an expiry takes effect on the next request. The table is written
only through this service, in this process.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from silo import errors
from silo.control.names import NAME_ONLY_MAX
from silo.store.keys import KeyRecord, KeyRepository

__all__ = ["ActiveKey", "KeyRecord", "KeyService", "state"]
from silo.types import TENANT_ID_MAX, TENANT_ID_PATTERN, Principal

log = logging.getLogger(__name__)

KEY_ID_PREFIX = "SILO"
DESCRIPTION_MAX = 256
FUNCTIONS_MAX = 100
EXPIRES_MAX_S = 10 * 365 * 86400
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]+", re.ASCII)
_TENANT = re.compile(TENANT_ID_PATTERN)
_FIELDS = {"Admin", "TenantId", "Functions", "ExpiresInSeconds", "Description"}


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """What authenticating a request needs of a key: its secret, and who it makes the caller."""

    principal: Principal
    secret: str
    expires_at: float | None


def new_key_id() -> str:
    # 20 characters like an AWS access key id: a prefix, then 80 random bits in base32.
    return KEY_ID_PREFIX + base64.b32encode(os.urandom(10)).decode()


def new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters, 240 random bits


def state(record: KeyRecord, now: float) -> str:
    if record.revoked_at is not None:
        return "Revoked"
    if record.expires_at is not None and now >= record.expires_at:
        return "Expired"
    return "Active"


def _active(record: KeyRecord) -> ActiveKey:
    principal = Principal(
        key_id=record.key_id, admin=record.admin, tenant=record.tenant_id, functions=frozenset(record.functions)
    )
    return ActiveKey(principal, record.secret, record.expires_at)


class KeyService:
    def __init__(self, repository: KeyRepository, clock: Callable[[], float] = time.time) -> None:
        self._repository = repository
        self._clock = clock
        self._write = threading.Lock()
        self._records: dict[str, KeyRecord] = {r.key_id: r for r in repository.all()}
        # Replaced whole on every change, never mutated: the event loop reads it without a lock.
        self._active: Mapping[str, ActiveKey] = self._actives()

    def _actives(self) -> dict[str, ActiveKey]:
        return {r.key_id: _active(r) for r in self._records.values() if r.revoked_at is None}

    # -- the authentication layer's question ------------------------------------------------------

    def lookup(self, key_id: str) -> ActiveKey | None:
        """The key of this id, if it exists, is not revoked and has not expired."""
        key = self._active.get(key_id)
        if key is None or (key.expires_at is not None and self._clock() >= key.expires_at):
            return None
        return key

    # -- commands ---------------------------------------------------------------------------------

    def create(self, request: Mapping[str, Any], by: str | None) -> KeyRecord:
        """A new key from a CreateKey request ({"Admin": true} or {"TenantId": ..., "Functions": [...]}, with
        an optional "ExpiresInSeconds" and "Description"). The record returned is the only time its secret
        is told."""
        unknown = sorted(set(request) - _FIELDS)
        if unknown:
            raise errors.InvalidParameterValueException(
                f"Unknown field(s) {', '.join(unknown)}; a key is described by {', '.join(sorted(_FIELDS))}."
            )
        admin = request.get("Admin", False)
        tenant = request.get("TenantId")
        functions = request.get("Functions", [])
        expires_in = request.get("ExpiresInSeconds")
        description = request.get("Description", "")
        if not isinstance(admin, bool):
            raise errors.InvalidParameterValueException("Admin must be true or false.")
        if admin and (tenant is not None or functions):
            raise errors.InvalidParameterValueException(
                "An administrator key may do everything, as any tenant: give Admin, or TenantId with Functions, "
                "not both."
            )
        if not admin:
            _check_tenant(tenant)
            _check_functions(functions)
        if expires_in is not None and (
            not isinstance(expires_in, int) or isinstance(expires_in, bool) or not 1 <= expires_in <= EXPIRES_MAX_S
        ):
            raise errors.InvalidParameterValueException(
                f"ExpiresInSeconds must be a whole number of seconds from 1 to {EXPIRES_MAX_S} (ten years)."
            )
        if not isinstance(description, str) or len(description) > DESCRIPTION_MAX:
            raise errors.InvalidParameterValueException(
                f"Description must be a string of at most {DESCRIPTION_MAX} characters."
            )
        now = self._clock()
        record = KeyRecord(
            key_id=new_key_id(),
            secret=new_secret(),
            admin=admin,
            tenant_id=None if admin else tenant,
            functions=() if admin else tuple(dict.fromkeys(functions)),
            description=description,
            created_at=now,
            created_by=by,
            expires_at=None if expires_in is None else now + expires_in,
        )
        with self._write:
            self._repository.insert(record)
            self._records[record.key_id] = record
            self._active = self._actives()
        log.info(
            "caller key %s created by %s: %s%s",
            record.key_id,
            by or "silo serve",
            "administrator" if admin else f"tenant {tenant!r}, may invoke {', '.join(record.functions)}",
            "" if expires_in is None else f", expires in {expires_in} s",
        )
        return record

    def revoke(self, key_id: str, by: str | None) -> KeyRecord:
        """Revoke a key, effective on the next request. The last active administrator key stays: without
        one, nobody could manage the server."""
        with self._write:
            record = self._records.get(key_id)
            if record is None:
                raise errors.ResourceNotFoundException(f"No caller key {key_id} exists (`silo keys list` lists them).")
            if record.revoked_at is not None:
                return record
            now = self._clock()
            if record.admin and state(record, now) == "Active":
                others = [
                    r for r in self._records.values() if r.admin and r.key_id != key_id and state(r, now) == "Active"
                ]
                if not others:
                    raise errors.ResourceConflictException(
                        f"{key_id} is the last active administrator key; create another (silo keys create --admin) "
                        "before revoking it."
                    )
            self._repository.revoke(key_id, now, by)
            record = replace(record, revoked_at=now, revoked_by=by)
            self._records[key_id] = record
            self._active = self._actives()
        log.info("caller key %s revoked by %s", key_id, by or "silo serve")
        return record

    def keys(self) -> list[KeyRecord]:
        """Every key, revoked and expired ones included, oldest first."""
        return sorted(self._records.values(), key=lambda r: (r.created_at, r.key_id))

    def credentials_key(self, current: tuple[str, str] | None) -> KeyRecord | None:
        """The administrator key the data directory's credentials file should hold: None when `current`
        (the file's key id and secret) is one that works, else a new key, stored."""
        if current is not None:
            key = self.lookup(current[0])
            if key is not None and key.principal.admin and secrets.compare_digest(key.secret, current[1]):
                return None
        return self.create({"Admin": True, "Description": "written to the data directory's credentials file"}, None)


def _check_tenant(tenant: Any) -> None:
    if tenant is None:
        raise errors.InvalidParameterValueException(
            "A key is either an administrator's (Admin: true) or bound to one tenant (TenantId, with the Functions "
            "it may invoke); give one."
        )
    if (
        not isinstance(tenant, str)
        or not 1 <= len(tenant) <= TENANT_ID_MAX
        or not _TENANT.fullmatch(tenant)
        or tenant != tenant.strip(" ")
    ):
        raise errors.InvalidParameterValueException(
            f"TenantId must be a tenant id as Invoke takes it: 1 to {TENANT_ID_MAX} characters of "
            f"{TENANT_ID_PATTERN}, not beginning or ending with a space."
        )


def _check_functions(functions: Any) -> None:
    if not isinstance(functions, list) or not functions:
        raise errors.InvalidParameterValueException(
            "A tenant-bound key names the functions it may invoke: give Functions, a list of function names."
        )
    if len(functions) > FUNCTIONS_MAX:
        raise errors.InvalidParameterValueException(f"A key may name at most {FUNCTIONS_MAX} functions.")
    for name in functions:
        if not isinstance(name, str) or len(name) > NAME_ONLY_MAX or not _FUNCTION_NAME.fullmatch(name):
            raise errors.InvalidParameterValueException(
                f"Functions holds {name!r}, which is no function name: give names (not ARNs) of 1 to "
                f"{NAME_ONLY_MAX} letters, digits, hyphens and underscores."
            )
