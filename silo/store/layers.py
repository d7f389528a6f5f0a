"""The layer repository: each layer version's metadata, code reference and permission statements.

Layer versions are immutable once published, but for their policy. The repository neither validates nor
decides anything; `silo.control.layers` does.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from silo.store.db import Database


@dataclass(frozen=True, slots=True)
class LayerVersionRecord:
    """One stored layer version, as the control plane wrote it."""

    name: str
    version: int
    config: dict[str, Any]  # Description, CompatibleRuntimes, CompatibleArchitectures, LicenseInfo
    code_sha256: str  # hex digest of the zip
    code_size: int  # bytes of the zip
    unzipped_size: int  # bytes of its files once unpacked, counted towards a function's 250 MB
    created_date: str  # Lambda's `2018-11-27T15:10:45.123+0000` form
    policy: list[dict[str, Any]]
    revision_id: str


_COLUMNS = "name, version, config, code_sha256, code_size, unzipped_size, created_date, policy, revision_id"


def _record(row: sqlite3.Row) -> LayerVersionRecord:
    return LayerVersionRecord(
        name=row["name"],
        version=int(row["version"]),
        config=json.loads(row["config"]),
        code_sha256=row["code_sha256"],
        code_size=int(row["code_size"]),
        unzipped_size=int(row["unzipped_size"]),
        created_date=row["created_date"],
        policy=json.loads(row["policy"]),
        revision_id=row["revision_id"],
    )


class LayerRepository:
    """CRUD over `layers` / `layer_versions`. Every method is one short statement or transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def publish(self, record: LayerVersionRecord) -> LayerVersionRecord:
        """Store a new version of a layer (creating the layer), numbered one after the layer's last."""
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO layers (name, last_version) VALUES (?, 0)", (record.name,))
            row = conn.execute("SELECT last_version FROM layers WHERE name = ?", (record.name,)).fetchone()
            number = int(row[0]) + 1
            conn.execute("UPDATE layers SET last_version = ? WHERE name = ?", (number, record.name))
            stored = replace(record, version=number)
            conn.execute(
                f"INSERT INTO layer_versions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    stored.name,
                    stored.version,
                    json.dumps(stored.config),
                    stored.code_sha256,
                    stored.code_size,
                    stored.unzipped_size,
                    stored.created_date,
                    json.dumps(stored.policy),
                    stored.revision_id,
                ),
            )
        return stored

    def get(self, name: str, version: int) -> LayerVersionRecord | None:
        with self.db.reading() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM layer_versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        return None if row is None else _record(row)

    def versions(self, name: str) -> list[LayerVersionRecord]:
        """Every version of a layer, newest first (as ListLayerVersions orders them)."""
        with self.db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM layer_versions WHERE name = ? ORDER BY version DESC", (name,)
            ).fetchall()
        return [_record(r) for r in rows]

    def all_versions(self) -> list[LayerVersionRecord]:
        """Every version of every layer, by layer name and then newest first."""
        with self.db.reading() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM layer_versions ORDER BY name, version DESC").fetchall()
        return [_record(r) for r in rows]

    def set_policy(self, record: LayerVersionRecord, expected_revision: str) -> bool:
        """Replace a version's statements only if its revision is still `expected_revision`."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE layer_versions SET policy = ?, revision_id = ? WHERE name = ? AND version = ? "
                "AND revision_id = ?",
                (json.dumps(record.policy), record.revision_id, record.name, record.version, expected_revision),
            )
            return cur.rowcount == 1

    def delete(self, name: str, version: int) -> bool:
        """Delete one version; the layer keeps its last number. False when there was none."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM layer_versions WHERE name = ? AND version = ?", (name, version))
            return cur.rowcount == 1

    def code_in_use(self) -> set[str]:
        with self.db.reading() as conn:
            rows = conn.execute("SELECT DISTINCT code_sha256 FROM layer_versions").fetchall()
        return {r[0] for r in rows}

    def total_code_size(self) -> int:
        """Bytes of every stored layer version's zip (they count towards the account's code storage)."""
        with self.db.reading() as conn:
            return int(conn.execute("SELECT COALESCE(SUM(code_size), 0) FROM layer_versions").fetchone()[0])
