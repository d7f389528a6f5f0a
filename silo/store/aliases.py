"""The alias repository: each alias's target version, its weighted second version, description, resource
policy and revision. It neither validates nor decides anything; `silo.control` does."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from silo.store.db import Database


@dataclass(frozen=True, slots=True)
class AliasRecord:
    """One stored alias of a function."""

    name: str  # the function's
    alias: str
    function_version: str
    description: str
    weights: dict[str, float]  # at most one other version, and the share of calls it gets
    revision_id: str
    policy: list[dict[str, Any]] = field(default_factory=list)


_COLUMNS = "name, alias, function_version, description, weights, policy, revision_id"


def _record(row: sqlite3.Row) -> AliasRecord:
    return AliasRecord(
        name=row["name"],
        alias=row["alias"],
        function_version=row["function_version"],
        description=row["description"],
        weights={str(k): float(v) for k, v in json.loads(row["weights"]).items()},
        revision_id=row["revision_id"],
        policy=json.loads(row["policy"]),
    )


def _values(record: AliasRecord) -> tuple[str, str, str, str, str, str, str]:
    return (
        record.name,
        record.alias,
        record.function_version,
        record.description,
        json.dumps(record.weights),
        json.dumps(record.policy),
        record.revision_id,
    )


class AliasRepository:
    """CRUD over `function_aliases`. Every method is one short statement."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, record: AliasRecord) -> bool:
        """Store a new alias; False when the function has one of that name already (or is gone)."""
        try:
            with self.db.transaction() as conn:
                conn.execute(f"INSERT INTO function_aliases ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", _values(record))
        except sqlite3.IntegrityError:
            return False
        return True

    def replace(self, record: AliasRecord, expected_revision: str) -> bool:
        """Overwrite an alias only if its revision is still `expected_revision` (compare and set)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE function_aliases SET function_version = ?, description = ?, weights = ?, policy = ?, "
                "revision_id = ? WHERE name = ? AND alias = ? AND revision_id = ?",
                (*_values(record)[2:], record.name, record.alias, expected_revision),
            )
            return cur.rowcount == 1

    def delete(self, name: str, alias: str) -> bool:
        """Delete an alias, and the asynchronous invocation config and function URL of it; False when there was none."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM function_aliases WHERE name = ? AND alias = ?", (name, alias))
            conn.execute("DELETE FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?", (name, alias))
            conn.execute("DELETE FROM function_urls WHERE name = ? AND qualifier = ?", (name, alias))
            return cur.rowcount == 1

    def all(self) -> list[AliasRecord]:
        with self.db.reading() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM function_aliases ORDER BY name, alias").fetchall()
        return [_record(r) for r in rows]
