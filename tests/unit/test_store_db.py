from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from silo.store.db import MIGRATIONS, open_database


def test_new_database_is_wal_with_foreign_keys_and_current_schema(tmp_path: Path) -> None:
    db = open_database(tmp_path / "sub" / "silo.db")
    with db.reading() as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.schema_version == len(MIGRATIONS)
    db.close()


def test_reopening_migrates_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "silo.db"
    db = open_database(path)
    with db.transaction() as conn:
        conn.execute("INSERT INTO functions (name, created_at) VALUES ('f', 'now')")
    db.close()
    db = open_database(path)
    assert db.schema_version == len(MIGRATIONS)
    with db.reading() as conn:
        assert conn.execute("SELECT name FROM functions").fetchall()[0][0] == "f"
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 1
    db.close()


def test_database_from_a_newer_silo_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "silo.db"
    open_database(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS) + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this silo"):
        open_database(path)


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    db = open_database(tmp_path / "silo.db")
    with pytest.raises(ZeroDivisionError), db.transaction() as conn:
        conn.execute("INSERT INTO functions (name, created_at) VALUES ('f', 'now')")
        _ = 1 / 0
    with db.reading() as conn:
        assert conn.execute("SELECT COUNT(*) FROM functions").fetchone()[0] == 0
    db.close()
