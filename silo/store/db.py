"""The embedded database: one SQLite file in WAL mode, with a versioned schema.

Migrations are an append-only list of DDL scripts; `schema_version` remembers how many have run, so
opening an existing database applies only the new ones and opening it twice changes nothing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Append new scripts; never edit one that has shipped, a database out there has already run it.
MIGRATIONS: tuple[str, ...] = (
    # 1: functions and their versions. `$LATEST` is a row of `function_versions` like any published
    # version will be, so versions and aliases can come later without reshaping the data.
    """
    CREATE TABLE functions (
        name        TEXT PRIMARY KEY,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE function_versions (
        name          TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        version       TEXT NOT NULL,
        config        TEXT NOT NULL,
        code_sha256   TEXT NOT NULL,
        code_size     INTEGER NOT NULL,
        revision_id   TEXT NOT NULL,
        last_modified TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE INDEX function_versions_code ON function_versions(code_sha256);
    """,
)


class Database:
    """One connection to the silo database.

    The connection is shared by the event loop and the worker threads that apply writes, so every
    use goes through `lock`; statements are short, and unpacking code happens outside it.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = threading.RLock()
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in `transaction`), so a
        # read never silently opens one that would pin the WAL.
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable across application crashes in WAL mode; only a power cut may lose the
        # last commits, which a re-sent CreateFunction repairs.
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")
        try:
            self._migrate()
        except BaseException:
            self.conn.close()
            raise

    @property
    def schema_version(self) -> int:
        with self.lock:
            row = self.conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        with self.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                current = 0
            else:
                current = int(row[0])
            if current > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path} has schema version {current}, newer than this silo "
                    f"({len(MIGRATIONS)}); upgrade silo or use another data directory"
                )
            for script in MIGRATIONS[current:]:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Run the block in one write transaction: committed on success, rolled back on error."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Use the connection for reads, one thread at a time."""
        with self.lock:
            yield self.conn

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def open_database(path: Path) -> Database:
    """Open (creating and migrating when needed) the database at `path`."""
    return Database(path)


# The name the server wiring uses.
open_db = open_database
