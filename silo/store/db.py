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
    # 2: asynchronous invocations (silo.store.events). An event is a row from before Invoke answers 202
    # until long after it ends, and one row of async_attempts is written before each hand-over to the
    # router, so every run of a handler has a row. Dead letters outlive their function, so async_events
    # has no foreign key to functions. An EventInvokeConfig belongs to its function and goes with it.
    """
    CREATE TABLE async_events (
        request_id       TEXT PRIMARY KEY,
        function_name    TEXT NOT NULL,
        qualifier        TEXT,
        tenant_id        TEXT,
        payload          BLOB NOT NULL,
        state            TEXT NOT NULL,
        runs             INTEGER NOT NULL DEFAULT 0,
        throttles        INTEGER NOT NULL DEFAULT 0,
        enqueued_at      REAL NOT NULL,
        next_attempt_at  REAL NOT NULL,
        boot_id          TEXT,
        condition        TEXT,
        finished_at      REAL,
        function_error   TEXT,
        response         BLOB,
        executed_version TEXT,
        destination_id   TEXT,
        replay_of        TEXT,
        replayed_as      TEXT
    );
    CREATE INDEX async_events_due ON async_events(state, next_attempt_at);
    CREATE INDEX async_events_function ON async_events(function_name, state);
    CREATE TABLE async_attempts (
        id          INTEGER PRIMARY KEY,
        request_id  TEXT NOT NULL REFERENCES async_events(request_id) ON DELETE CASCADE,
        boot_id     TEXT NOT NULL,
        started_at  REAL NOT NULL,
        finished_at REAL,
        outcome     TEXT,
        detail      TEXT
    );
    CREATE INDEX async_attempts_event ON async_attempts(request_id);
    CREATE TABLE event_invoke_configs (
        function_name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier     TEXT NOT NULL,
        config        TEXT NOT NULL,
        last_modified REAL NOT NULL,
        PRIMARY KEY (function_name, qualifier)
    );
    """,
    # 3: log and metering events (silo.store.logs). Logs are kept per function, not per function
    # version or tenant, and outlive their function, as a CloudWatch log group does: no foreign keys.
    # `log_usage` is each function's stored size, so retention needs no scan.
    """
    CREATE TABLE log_events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        function    TEXT NOT NULL,
        stream      TEXT NOT NULL,
        tenant_id   TEXT,
        request_id  TEXT,
        ts_ms       INTEGER NOT NULL,
        message     TEXT NOT NULL,
        size        INTEGER NOT NULL
    );
    CREATE INDEX log_events_function ON log_events(function, id);
    CREATE INDEX log_events_tenant ON log_events(function, tenant_id, id);
    CREATE INDEX log_events_request ON log_events(request_id);
    CREATE INDEX log_events_time ON log_events(function, ts_ms);
    CREATE TABLE log_usage (
        function    TEXT PRIMARY KEY,
        bytes       INTEGER NOT NULL
    );
    CREATE TABLE metering_events (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        function        TEXT NOT NULL,
        version         TEXT NOT NULL,
        tenant_id       TEXT,
        environment_id  TEXT NOT NULL,
        memory_mb       INTEGER NOT NULL,
        ts_ms           INTEGER NOT NULL
    );
    CREATE INDEX metering_events_time ON metering_events(ts_ms);
    CREATE INDEX metering_events_tenant ON metering_events(function, tenant_id, ts_ms);
    """,
    # 4: each tenant's stored log size per function (silo.store.logs), so that retention takes from the
    # tenants that store the most and one tenant's flood cannot trim another's logs. '' stands for the lines
    # of no tenant (a stem's init, a function without tenant isolation).
    """
    CREATE TABLE log_usage_tenants (
        function    TEXT NOT NULL,
        tenant      TEXT NOT NULL,
        bytes       INTEGER NOT NULL,
        PRIMARY KEY (function, tenant)
    );
    INSERT INTO log_usage_tenants (function, tenant, bytes)
        SELECT function, COALESCE(tenant_id, ''), SUM(size) FROM log_events GROUP BY function, COALESCE(tenant_id, '');
    """,
    # 5: caller keys (silo.store.keys). `secret` is sealed with the key of a file of its own beside the
    # database (silo.store.sealing), so a copy of the database alone reveals no secret. A key is never
    # deleted, only revoked, so the record of who did what keeps naming it. An asynchronous event keeps
    # the id of the key that sent it.
    """
    CREATE TABLE caller_keys (
        key_id       TEXT PRIMARY KEY,
        secret       BLOB NOT NULL,
        kind         TEXT NOT NULL,
        tenant_id    TEXT,
        functions    TEXT NOT NULL,
        description  TEXT NOT NULL,
        created_at   REAL NOT NULL,
        created_by   TEXT,
        expires_at   REAL,
        revoked_at   REAL,
        revoked_by   TEXT
    );
    ALTER TABLE async_events ADD COLUMN caller_key TEXT;
    """,
    # 6: published versions (silo.store.functions). A version is a row of `function_versions` like
    # `$LATEST`; `last_version` is the number the newest one got, kept on the function, because Lambda
    # never gives a number twice, not even that of a deleted version.
    """
    ALTER TABLE functions ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;
    """,
    # 7: aliases (silo.store.aliases). An alias names a version of its function and, with `weights`
    # (JSON, {"version": weight}), a second one; it has its own revision and resource policy, and goes
    # with its function.
    """
    CREATE TABLE function_aliases (
        name             TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        alias            TEXT NOT NULL,
        function_version TEXT NOT NULL,
        description      TEXT NOT NULL,
        weights          TEXT NOT NULL,
        policy           TEXT NOT NULL,
        revision_id      TEXT NOT NULL,
        PRIMARY KEY (name, alias)
    );
    """,
    # 8: the id of the caller key that sent an invocation, on its START line (silo.store.logs).
    """
    ALTER TABLE log_events ADD COLUMN caller_key TEXT;
    """,
    # 9: function URLs (silo.store.function_urls). One per function and qualifier (`$LATEST` or an
    # alias); `url_id` is the URL's path segment, unique across functions. It goes with its function (and
    # with its alias: the alias repository deletes it).
    """
    CREATE TABLE function_urls (
        name          TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier     TEXT NOT NULL,
        url_id        TEXT NOT NULL UNIQUE,
        auth_type     TEXT NOT NULL,
        cors          TEXT,
        invoke_mode   TEXT NOT NULL,
        created       TEXT NOT NULL,
        last_modified TEXT NOT NULL,
        PRIMARY KEY (name, qualifier)
    );
    """,
    # 10: layers (silo.store.layers). A layer keeps the number its newest version got, as a function does,
    # because Lambda never gives a number twice, not even that of a deleted version. A version's
    # `config` is the JSON of its Description, CompatibleRuntimes, CompatibleArchitectures and
    # LicenseInfo; `policy` its permission statements (JSON). Functions name the versions they use in
    # their own configuration, so deleting a version leaves them running (its code stays while used).
    """
    CREATE TABLE layers (
        name          TEXT PRIMARY KEY,
        last_version  INTEGER NOT NULL
    );
    CREATE TABLE layer_versions (
        name           TEXT NOT NULL REFERENCES layers(name),
        version        INTEGER NOT NULL,
        config         TEXT NOT NULL,
        code_sha256    TEXT NOT NULL,
        code_size      INTEGER NOT NULL,
        unzipped_size  INTEGER NOT NULL,
        created_date   TEXT NOT NULL,
        policy         TEXT NOT NULL,
        revision_id    TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    """,
    # 11: code signing (silo.store.code_signing). A signing profile is a public key registered with silo;
    # a code signing configuration names the profiles it trusts and what to do with anything else. A
    # function names its configuration in its own configuration (CodeSigningConfigArn).
    """
    CREATE TABLE signing_profiles (
        name        TEXT PRIMARY KEY,
        public_key  TEXT NOT NULL,
        version     TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE code_signing_configs (
        id             TEXT PRIMARY KEY,
        config         TEXT NOT NULL,
        last_modified  TEXT NOT NULL
    );
    """,
)

# SQLite's page cache per connection (its default is 2 MiB). Log lines of many tenants land all over the
# tenant index; a page that fell out of the cache is read again from the file on the next batch.
CACHE_KIB = 64 * 1024


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
        self.conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
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
