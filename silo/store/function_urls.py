"""The function URL repository: each URL's function and qualifier, its id (the path segment it is served
at), AuthType, CORS settings and times. It neither validates nor decides anything; `silo.control` does."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from silo.store.db import Database


@dataclass(frozen=True, slots=True)
class FunctionUrlRecord:
    """One stored function URL."""

    name: str  # the function's
    qualifier: str  # `$LATEST` or an alias
    url_id: str
    auth_type: str
    cors: dict[str, Any] | None
    invoke_mode: str
    created: str
    last_modified: str


_COLUMNS = "name, qualifier, url_id, auth_type, cors, invoke_mode, created, last_modified"


def _record(row: sqlite3.Row) -> FunctionUrlRecord:
    return FunctionUrlRecord(
        name=row["name"],
        qualifier=row["qualifier"],
        url_id=row["url_id"],
        auth_type=row["auth_type"],
        cors=None if row["cors"] is None else json.loads(row["cors"]),
        invoke_mode=row["invoke_mode"],
        created=row["created"],
        last_modified=row["last_modified"],
    )


class FunctionUrlRepository:
    """CRUD over `function_urls`. Every method is one short statement."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, record: FunctionUrlRecord) -> bool:
        """Store a new URL; False when the function has one for that qualifier already (or is gone)."""
        values = (
            record.name,
            record.qualifier,
            record.url_id,
            record.auth_type,
            None if record.cors is None else json.dumps(record.cors),
            record.invoke_mode,
            record.created,
            record.last_modified,
        )
        try:
            with self.db.transaction() as conn:
                conn.execute(f"INSERT INTO function_urls ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
        except sqlite3.IntegrityError:
            return False
        return True

    def replace(self, record: FunctionUrlRecord) -> bool:
        """Overwrite a URL's settings (its id and creation time never change); False when it is gone."""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "UPDATE function_urls SET auth_type = ?, cors = ?, invoke_mode = ?, last_modified = ? "
                "WHERE name = ? AND qualifier = ?",
                (
                    record.auth_type,
                    None if record.cors is None else json.dumps(record.cors),
                    record.invoke_mode,
                    record.last_modified,
                    record.name,
                    record.qualifier,
                ),
            )
            return cur.rowcount == 1

    def delete(self, name: str, qualifier: str) -> bool:
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM function_urls WHERE name = ? AND qualifier = ?", (name, qualifier))
            return cur.rowcount == 1

    def all(self) -> list[FunctionUrlRecord]:
        with self.db.reading() as conn:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM function_urls ORDER BY name, qualifier").fetchall()
        return [_record(r) for r in rows]
