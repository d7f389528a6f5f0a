"""The function repository: each function version's configuration, code reference and revision.

The configuration is stored as the JSON the control plane validated, so a new optional member needs
no migration. The repository neither validates nor decides anything; `silo.control` does.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from silo.store.db import Database

LATEST = "$LATEST"


@dataclass(frozen=True, slots=True)
class FunctionRecord:
    """One stored function version, as the control plane wrote it."""

    name: str
    version: str
    config: dict[str, Any]
    code_sha256: str  # hex digest of the deployment package
    code_size: int  # bytes of the zip
    revision_id: str
    last_modified: str  # already in Lambda's `2023-06-12T10:45:00.000+0000` form


def _record(row: sqlite3.Row) -> FunctionRecord:
    return FunctionRecord(
        name=row["name"],
        version=row["version"],
        config=json.loads(row["config"]),
        code_sha256=row["code_sha256"],
        code_size=int(row["code_size"]),
        revision_id=row["revision_id"],
        last_modified=row["last_modified"],
    )


class _Stale(Exception):
    """A compare-and-set found the row changed: the transaction is rolled back."""


_COLUMNS = "name, version, config, code_sha256, code_size, revision_id, last_modified"


class FunctionRepository:
    """CRUD over `functions` / `function_versions`. Every method is one short statement or transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, record: FunctionRecord, created_at: str) -> bool:
        """Store a new function with its first version; False when the name is already taken."""
        try:
            with self.db.transaction() as conn:
                conn.execute("INSERT INTO functions (name, created_at) VALUES (?, ?)", (record.name, created_at))
                self._insert_version(conn, record)
        except sqlite3.IntegrityError:
            return False
        return True

    def replace(self, record: FunctionRecord, expected_revision: str) -> bool:
        """Overwrite a version only if its revision is still `expected_revision` (compare and set)."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE function_versions SET config = ?, code_sha256 = ?, code_size = ?, "
                "revision_id = ?, last_modified = ? WHERE name = ? AND version = ? AND revision_id = ?",
                (
                    json.dumps(record.config),
                    record.code_sha256,
                    record.code_size,
                    record.revision_id,
                    record.last_modified,
                    record.name,
                    record.version,
                    expected_revision,
                ),
            )
            return cur.rowcount == 1

    def get(self, name: str, version: str = LATEST) -> FunctionRecord | None:
        with self.db.reading() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM function_versions WHERE name = ? AND version = ?",
                (name, version),
            ).fetchone()
        return None if row is None else _record(row)

    def publish(self, version: FunctionRecord, latest: FunctionRecord, expected_revision: str) -> bool:
        """Store a new published version and $LATEST's new revision in one transaction, only if $LATEST is
        still at `expected_revision` and the version's number is the one after the function's last."""
        try:
            with self.db.transaction() as conn:
                cur = conn.execute(
                    "UPDATE functions SET last_version = ? WHERE name = ? AND last_version = ?",
                    (int(version.version), version.name, int(version.version) - 1),
                )
                if cur.rowcount != 1:
                    raise _Stale
                cur = conn.execute(
                    "UPDATE function_versions SET revision_id = ? WHERE name = ? AND version = ? AND revision_id = ?",
                    (latest.revision_id, latest.name, LATEST, expected_revision),
                )
                if cur.rowcount != 1:
                    raise _Stale  # rolls the first update back
                self._insert_version(conn, version)
        except _Stale:
            return False
        return True

    def last_version(self, name: str) -> int:
        """The number the function's newest version got (0: none yet); deleted versions count."""
        with self.db.reading() as conn:
            row = conn.execute("SELECT last_version FROM functions WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def versions(self, name: str, after: int, limit: int) -> list[FunctionRecord]:
        """Up to `limit` published versions of a function, by number, strictly after `after`."""
        with self.db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM function_versions WHERE name = ? AND version != ? "
                "AND CAST(version AS INTEGER) > ? ORDER BY CAST(version AS INTEGER) LIMIT ?",
                (name, LATEST, after, limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def delete_version(self, name: str, version: str) -> bool:
        """Delete one published version, and the asynchronous invocation config of it; False when none."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM function_versions WHERE name = ? AND version = ?", (name, version))
            conn.execute("DELETE FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?", (name, version))
            return cur.rowcount == 1

    def delete(self, name: str) -> bool:
        """Delete a function and all its versions; False when there was none."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM functions WHERE name = ?", (name,))
            return cur.rowcount == 1

    def list_page(self, after: str | None, limit: int, version: str = LATEST) -> list[FunctionRecord]:
        """Up to `limit` versions named `version`, ordered by function name, strictly after `after`."""
        with self.db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM function_versions WHERE version = ? AND name > ? ORDER BY name LIMIT ?",
                (version, after or "", limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def every_version_page(self, after: tuple[str, int], limit: int) -> list[FunctionRecord]:
        """Up to `limit` versions of every function, by name and then $LATEST (as 0) and the numbers, strictly
        after `after` = (name, place); a place of -1 starts at that function's $LATEST."""
        order = "CASE WHEN version = '$LATEST' THEN 0 ELSE CAST(version AS INTEGER) END"
        with self.db.reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM function_versions WHERE name > ? OR (name = ? AND {order} > ?) "
                f"ORDER BY name, {order} LIMIT ?",
                (after[0], after[0], after[1], limit),
            ).fetchall()
        return [_record(r) for r in rows]

    def all_versions(self, version: str | None = LATEST) -> list[FunctionRecord]:
        """Every function's `version` (None: every version of every function, each $LATEST first)."""
        with self.db.reading() as conn:
            if version is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM function_versions ORDER BY name, version != ?, CAST(version AS INTEGER)",
                    (LATEST,),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM function_versions WHERE version = ? ORDER BY name", (version,)
                ).fetchall()
        return [_record(r) for r in rows]

    def code_in_use(self) -> set[str]:
        """Every code sha that some version still references."""
        with self.db.reading() as conn:
            rows = conn.execute("SELECT DISTINCT code_sha256 FROM function_versions").fetchall()
        return {r[0] for r in rows}

    def is_code_used(self, sha256_hex: str) -> bool:
        with self.db.reading() as conn:
            row = conn.execute(
                "SELECT 1 FROM function_versions WHERE code_sha256 = ? LIMIT 1", (sha256_hex,)
            ).fetchone()
        return row is not None

    def usage(self) -> tuple[int, int]:
        """(number of functions, total bytes of code over all their versions)."""
        with self.db.reading() as conn:
            count = conn.execute("SELECT COUNT(*) FROM functions").fetchone()[0]
            size = conn.execute("SELECT COALESCE(SUM(code_size), 0) FROM function_versions").fetchone()[0]
        return int(count), int(size)

    @staticmethod
    def _insert_version(conn: sqlite3.Connection, record: FunctionRecord) -> None:
        conn.execute(
            f"INSERT INTO function_versions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.name,
                record.version,
                json.dumps(record.config),
                record.code_sha256,
                record.code_size,
                record.revision_id,
                record.last_modified,
            ),
        )
