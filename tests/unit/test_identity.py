"""The host-wide slot registry: one slot per daemon's directory, kept across restarts, never shared."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from silo.sandbox import identity
from silo.sandbox.identity import IdentityUnavailable


@pytest.fixture(autouse=True)
def forget_held() -> Iterator[None]:
    """Each test starts as a process that holds no slot, and gives back what it took."""
    before = dict(identity._held)
    identity._held.clear()
    yield
    for held in list(identity._held.values()):
        identity.release(held)
    identity._held.update(before)


def other_process_holds(registry: Path, owner: Path) -> subprocess.Popen[str]:
    """Another daemon: a process that claims `owner`'s slot and keeps it until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from silo.sandbox import identity
        print(identity.claim(Path({str(owner)!r}), Path({str(registry)!r})).slot, flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


def end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    proc.wait(timeout=10)
    proc.stdout.close()


def test_daemons_get_distinct_slots_uids_and_names(tmp_path: Path) -> None:
    registry = tmp_path / "run"
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    first, second = identity.claim(a, registry), identity.claim(b, registry)
    assert (first.slot, second.slot) == (0, 1)
    assert first.instance != second.instance and len(first.instance) == 4
    ranges = [range(i.uid_base, i.uid_base + identity.UID_COUNT) for i in (first, second)]
    assert set(ranges[0]).isdisjoint(ranges[1])
    assert ranges[-1][-1] < 2**31
    assert identity.claim(a, registry) is first, "asked again in one process, the same slot"
    assert identity.instance_of(b, registry) == second.instance


def test_a_restarted_daemon_gets_its_slot_back_and_a_gone_one_is_reused(tmp_path: Path) -> None:
    registry = tmp_path / "run"
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    slots = {d: identity.claim(d, registry).slot for d in (a, b)}
    for held in list(identity._held.values()):
        identity.release(held)  # both daemons stop
    assert identity.claim(b, registry).slot == slots[b], "restarted on its directory, the same slot"
    b_dir_gone = identity.claim(c, registry).slot
    assert b_dir_gone not in slots.values(), "a's directory still exists: its slot stays a's"
    a.rmdir()
    d = tmp_path / "d"
    d.mkdir()
    assert identity.claim(d, registry).slot == slots[a], "a's directory is gone and nobody holds it: reused"


def test_a_slot_held_by_a_live_daemon_is_never_given_away(tmp_path: Path) -> None:
    registry = tmp_path / "run"
    owner = tmp_path / "a"
    owner.mkdir()
    proc = other_process_holds(registry, owner)
    try:
        with pytest.raises(IdentityUnavailable, match="another silo daemon is running on"):
            identity.claim(owner, registry)
        owner.rmdir()  # its directory deleted under it: the live daemon still holds the slot
        (registry / identity.REGISTRY_FILE).write_text("{ corrupt")  # and the registry lost
        fresh = tmp_path / "b"
        fresh.mkdir()
        assert identity.claim(fresh, registry).slot == 1
    finally:
        end(proc)


def test_a_corrupt_or_missing_registry_is_written_anew(tmp_path: Path) -> None:
    registry = tmp_path / "run"
    owner = tmp_path / "a"
    owner.mkdir()
    registry.mkdir()
    (registry / identity.REGISTRY_FILE).write_text('{"slots": {"x": "not a number"}}')
    held = identity.claim(owner, registry)
    assert json.loads((registry / identity.REGISTRY_FILE).read_text()) == {"slots": {str(owner): held.slot}}


def test_an_unwritable_registry_refuses_the_daemon(tmp_path: Path) -> None:
    registry = tmp_path / "run"
    registry.mkdir()
    # The registry cannot be written (root writes anywhere, so a directory stands where its new copy goes):
    # no slot is handed out that is not on record.
    (registry / identity.REGISTRY_FILE).with_suffix(".part").mkdir()
    with pytest.raises(IdentityUnavailable, match="cannot record"):
        identity.claim(tmp_path, registry)
    assert identity._held == {}
    assert identity._is_free(registry, 0), "the slot's lock was let go"


def test_when_every_slot_is_taken_the_daemon_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "run"
    owners = [tmp_path / str(n) for n in range(3)]
    for d in owners:
        d.mkdir()
    for d in owners[:2]:
        identity.claim(d, registry, slots=2)
    with pytest.raises(IdentityUnavailable, match="all 2 slots"):
        identity.claim(owners[2], registry, slots=2)
