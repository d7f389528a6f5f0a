"""The code signing repository: signing profiles (public keys) and code signing configurations."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from silo.store.db import Database


@dataclass(frozen=True, slots=True)
class SigningProfile:
    name: str
    public_key: str  # PEM
    version: str  # what its version ARN ends with: a digest of the key
    created_at: str


@dataclass(frozen=True, slots=True)
class CodeSigningConfigRecord:
    id: str
    config: dict[str, Any]  # Description, AllowedPublishers, CodeSigningPolicies
    last_modified: str


class CodeSigningRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_profile(self, profile: SigningProfile) -> bool:
        """Register a profile; False when the name is taken."""
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO signing_profiles (name, public_key, version, created_at) VALUES (?, ?, ?, ?)",
                    (profile.name, profile.public_key, profile.version, profile.created_at),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def profile(self, name: str) -> SigningProfile | None:
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT name, public_key, version, created_at FROM signing_profiles WHERE name = ?", (name,)
            ).fetchone()
        return None if row is None else SigningProfile(*row)

    def profiles(self) -> list[SigningProfile]:
        with self.db.reading() as conn:
            rows = conn.execute("SELECT name, public_key, version, created_at FROM signing_profiles ORDER BY name")
            return [SigningProfile(*row) for row in rows.fetchall()]

    def delete_profile(self, name: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM signing_profiles WHERE name = ?", (name,)).rowcount == 1

    def put_config(self, record: CodeSigningConfigRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO code_signing_configs (id, config, last_modified) VALUES (?, ?, ?)",
                (record.id, json.dumps(record.config), record.last_modified),
            )

    def config(self, config_id: str) -> CodeSigningConfigRecord | None:
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT id, config, last_modified FROM code_signing_configs WHERE id = ?", (config_id,)
            ).fetchone()
        return None if row is None else CodeSigningConfigRecord(row[0], json.loads(row[1]), row[2])

    def configs(self, after: str, limit: int) -> list[CodeSigningConfigRecord]:
        with self.db.reading() as conn:
            rows = conn.execute(
                "SELECT id, config, last_modified FROM code_signing_configs WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
        return [CodeSigningConfigRecord(r[0], json.loads(r[1]), r[2]) for r in rows]

    def delete_config(self, config_id: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM code_signing_configs WHERE id = ?", (config_id,)).rowcount == 1
