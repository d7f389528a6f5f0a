"""The merged /opt trees of layers: order, kinds replacing kinds, never leaving the tree, read-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from silo.store.opt import OptStore, digest_of


def tree(root: Path, files: dict[str, str], links: dict[str, str] | None = None) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for name, target in (links or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return root


def test_later_layers_win_and_directories_merge(tmp_path: Path) -> None:
    one = tree(tmp_path / "one", {"shared.txt": "one", "python/a.py": "a", "only-one": "1"})
    two = tree(tmp_path / "two", {"shared.txt": "two", "python/b.py": "b"})
    merged = OptStore(tmp_path / "opt").build(["1", "2"], [one, two])
    assert merged.name == digest_of(["1", "2"])
    assert (merged / "shared.txt").read_text() == "two"
    assert sorted(p.name for p in (merged / "python").iterdir()) == ["a.py", "b.py"]
    assert (merged / "only-one").read_text() == "1"
    # No data copied: the files are the layers' own.
    assert (merged / "python/a.py").stat().st_ino == (one / "python/a.py").stat().st_ino


def test_a_later_entry_replaces_an_earlier_one_of_another_kind(tmp_path: Path) -> None:
    one = tree(tmp_path / "one", {"x/inner": "dir in one", "y": "file in one", "data/keep": "k"}, {"z": "data"})
    two = tree(tmp_path / "two", {"x": "file over a dir", "y/inner": "dir over a file", "z/own": "dir over a link"})
    merged = OptStore(tmp_path / "opt").build(["1", "2"], [one, two])
    assert (merged / "x").read_text() == "file over a dir"
    assert (merged / "y/inner").read_text() == "dir over a file"
    # The directory replaced the symlink; it did not write through it into `data`.
    assert not (merged / "z").is_symlink() and (merged / "z/own").is_file()
    assert sorted(os.listdir(merged / "data")) == ["keep"]
    assert sorted(os.listdir(one / "data")) == ["keep"]


def test_symlinks_are_copied_as_links_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    one = tree(tmp_path / "one", {"python/real.py": "r"}, {"python/alias.py": "real.py", "escape": str(outside)})
    two = tree(tmp_path / "two", {"escape/planted": "must not land outside"})
    merged = OptStore(tmp_path / "opt").build(["1", "2"], [one, two])
    assert os.readlink(merged / "python/alias.py") == "real.py"
    assert list(outside.iterdir()) == []
    assert (merged / "escape").is_dir() and not (merged / "escape").is_symlink()


def test_the_tree_is_read_only_and_built_once(tmp_path: Path) -> None:
    one = tree(tmp_path / "one", {"a/b": "1"})
    store = OptStore(tmp_path / "opt")
    merged = store.build(["1"], [one])
    for directory in (merged, merged / "a"):
        assert directory.stat().st_mode & 0o777 == 0o555
    (one / "a/c").write_text("added later")
    assert store.build(["1"], [one]) == merged
    assert not (merged / "a/c").exists()
    assert list(store.scratch.iterdir()) == []


def test_collect_keeps_only_what_is_in_use(tmp_path: Path) -> None:
    store = OptStore(tmp_path / "opt")
    one = tree(tmp_path / "one", {"f": "1"})
    kept = store.build(["1"], [one])
    gone = store.build(["1", "1b"], [one, one])
    assert store.collect({kept.name}) == [gone.name]
    assert kept.is_dir() and not gone.exists()


def test_a_failed_merge_leaves_nothing(tmp_path: Path) -> None:
    store = OptStore(tmp_path / "opt")
    with pytest.raises(FileNotFoundError):
        store.build(["1"], [tmp_path / "missing"])
    assert not store.directory(digest_of(["1"])).exists()
    assert list(store.scratch.iterdir()) == []
