from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from silo.store.db import Database, open_database
from silo.store.functions import LATEST, FunctionRecord, FunctionRepository


def record(name: str, sha: str = "aa", revision: str = "r1", size: int = 10) -> FunctionRecord:
    return FunctionRecord(
        name=name,
        version=LATEST,
        config={"Runtime": "python3.11", "Environment": {"Variables": {"K": "v"}}},
        code_sha256=sha,
        code_size=size,
        revision_id=revision,
        last_modified="2024-01-01T00:00:00.000+0000",
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "silo.db")
    yield database
    database.close()


def test_insert_then_get_round_trips(db: Database) -> None:
    repo = FunctionRepository(db)
    assert repo.insert(record("f"), created_at="t")
    assert repo.get("f") == record("f")
    assert repo.get("g") is None


def test_insert_of_a_taken_name_fails(db: Database) -> None:
    repo = FunctionRepository(db)
    assert repo.insert(record("f"), created_at="t")
    assert not repo.insert(record("f", sha="bb"), created_at="t")
    assert repo.get("f") == record("f")


def test_replace_is_compare_and_set_on_the_revision(db: Database) -> None:
    repo = FunctionRepository(db)
    repo.insert(record("f"), created_at="t")
    newer = replace(record("f", sha="bb", revision="r2"), config={"Runtime": "python3.12"})
    assert not repo.replace(newer, expected_revision="stale")
    assert repo.get("f") == record("f")
    assert repo.replace(newer, expected_revision="r1")
    assert repo.get("f") == newer


def test_delete_removes_the_function_and_its_versions(db: Database) -> None:
    repo = FunctionRepository(db)
    repo.insert(record("f"), created_at="t")
    assert repo.delete("f")
    assert not repo.delete("f")
    assert repo.get("f") is None
    assert repo.code_in_use() == set()
    with db.reading() as conn:
        assert conn.execute("SELECT COUNT(*) FROM function_versions").fetchone()[0] == 0


def test_list_page_is_ordered_by_name_after_the_marker(db: Database) -> None:
    repo = FunctionRepository(db)
    for name in ["c", "a", "e", "b", "d"]:
        repo.insert(record(name), created_at="t")
    assert [r.name for r in repo.list_page(None, 2)] == ["a", "b"]
    assert [r.name for r in repo.list_page("b", 2)] == ["c", "d"]
    assert [r.name for r in repo.list_page("d", 2)] == ["e"]
    assert repo.list_page("e", 2) == []


def test_code_references_and_usage(db: Database) -> None:
    repo = FunctionRepository(db)
    repo.insert(record("f", sha="aa", size=10), created_at="t")
    repo.insert(record("g", sha="aa", size=10), created_at="t")
    repo.insert(record("h", sha="bb", size=5), created_at="t")
    assert repo.code_in_use() == {"aa", "bb"}
    assert repo.is_code_used("aa")
    assert not repo.is_code_used("cc")
    assert repo.usage() == (3, 25)


def test_data_survives_reopening(tmp_path: Path) -> None:
    db = open_database(tmp_path / "silo.db")
    FunctionRepository(db).insert(record("f"), created_at="t")
    db.close()
    db = open_database(tmp_path / "silo.db")
    assert FunctionRepository(db).all_versions() == [record("f")]
    db.close()


def test_publish_is_one_compare_and_set_of_number_and_revision(db: Database) -> None:
    repo = FunctionRepository(db)
    assert repo.insert(record("f"), created_at="t")
    v1 = replace(record("f", revision="v1"), version="1")
    assert not repo.publish(replace(v1, version="2"), record("f", revision="r2"), "r1"), "a number skipped"
    assert not repo.publish(v1, record("f", revision="r2"), "stale"), "$LATEST moved on"
    assert (repo.last_version("f"), repo.get("f", "1"), repo.get("f")) == (0, None, record("f"))
    assert repo.publish(v1, record("f", revision="r2"), "r1")
    assert (repo.last_version("f"), repo.get("f", "1"), repo.get("f")) == (1, v1, record("f", revision="r2"))
    assert not repo.publish(v1, record("f", revision="r3"), "r2"), "a number given twice"
    # A deleted version's number stays taken.
    assert repo.delete_version("f", "1")
    assert not repo.delete_version("f", "1")
    assert repo.last_version("f") == 1
    assert repo.versions("f", 0, 10) == []


def test_versions_are_listed_by_number(db: Database) -> None:
    repo = FunctionRepository(db)
    assert repo.insert(record("f"), created_at="t")
    latest = record("f")
    for n in range(1, 12):
        renewed = record("f", revision=f"r{n + 1}")
        assert repo.publish(replace(record("f", revision=f"v{n}"), version=str(n)), renewed, latest.revision_id)
        latest = renewed
    assert [r.version for r in repo.versions("f", 0, 20)] == [str(n) for n in range(1, 12)]
    assert [r.version for r in repo.versions("f", 9, 20)] == ["10", "11"]
    assert [r.version for r in repo.all_versions(None)] == ["$LATEST", *[str(n) for n in range(1, 12)]]
    every = repo.every_version_page(("f", 0), 3)
    assert [r.version for r in every] == ["1", "2", "3"]
