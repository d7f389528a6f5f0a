"""The caller keys: access key ids, their sealed secrets, and what each key may do (silo.control.keys decides).

A key is never deleted: revoking it stamps `revoked_at`, so records that name a key id (an event's
sender, a log line) keep meaning something.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass

from silo.store.db import Database
from silo.store.sealing import Sealer, Unsealable

log = logging.getLogger(__name__)

ADMIN = "admin"
TENANT = "tenant"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    secret: str
    admin: bool
    tenant_id: str | None
    functions: tuple[str, ...]
    description: str
    created_at: float
    created_by: str | None
    expires_at: float | None = None
    revoked_at: float | None = None
    revoked_by: str | None = None


class KeyRepository:
    """The caller_keys table; secrets go in sealed and come out open."""

    def __init__(self, db: Database, sealer: Sealer) -> None:
        self.db = db
        self.sealer = sealer

    def insert(self, key: KeyRecord) -> None:
        sealed = self.sealer.seal(key.secret.encode(), key.key_id.encode())
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO caller_keys (key_id, secret, kind, tenant_id, functions, description, created_at, "
                "created_by, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.key_id,
                    sealed,
                    ADMIN if key.admin else TENANT,
                    key.tenant_id,
                    json.dumps(list(key.functions)),
                    key.description,
                    key.created_at,
                    key.created_by,
                    key.expires_at,
                ),
            )

    def all(self) -> list[KeyRecord]:
        """Every key, oldest first. A key whose secret does not open (the sealing key file was replaced) is
        left out, with an error in the log: it can authenticate nobody."""
        with self.db.reading() as conn:
            rows = conn.execute("SELECT * FROM caller_keys ORDER BY created_at, key_id").fetchall()
        out = []
        for row in rows:
            try:
                out.append(self._record(row))
            except Unsealable:
                log.error(
                    "caller key %s cannot be opened with this data directory's sealing key (was secrets.key "
                    "replaced?); it is refused until that file is restored",
                    row["key_id"],
                )
        return out

    def revoke(self, key_id: str, at: float, by: str | None) -> bool:
        """Mark a key revoked; False when no such key exists. Revoking twice keeps the first time."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE caller_keys SET revoked_at = COALESCE(revoked_at, ?), revoked_by = COALESCE(revoked_by, ?) "
                "WHERE key_id = ?",
                (at, by, key_id),
            )
            return cur.rowcount > 0

    def _record(self, row: sqlite3.Row) -> KeyRecord:
        secret = self.sealer.unseal(bytes(row["secret"]), row["key_id"].encode()).decode()
        return KeyRecord(
            key_id=row["key_id"],
            secret=secret,
            admin=row["kind"] == ADMIN,
            tenant_id=row["tenant_id"],
            functions=tuple(json.loads(row["functions"])),
            description=row["description"],
            created_at=float(row["created_at"]),
            created_by=row["created_by"],
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            revoked_by=row["revoked_by"],
        )
