"""Spare cgroups: made ahead per MemorySize, taken by launches, given back by environments that are gone,
removed on close. They run on the host's hierarchy, v1 here and v2 in the cgroup-v2 VM (tests/cgroup2)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from silo.jail import cgroups
from silo.jail.cgroups import Group, Hierarchy
from silo.sandbox.spares import SpareGroups

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or cgroups.version() is None, reason="cgroups need root; CI runs these as root"
)
V2 = cgroups.version() == 2


def memory_dir(groups: Group) -> Path:
    paths = groups.join_paths()
    return Path(paths.get("memory") or paths["unified"])


def memory_file(groups: Group, v1: str, v2: str) -> Path:
    return memory_dir(groups) / (v2 if V2 else v1)


def limit_mb(groups: Group) -> int:
    return int(memory_file(groups, "memory.limit_in_bytes", "memory.max").read_text()) // (1024 * 1024)


def exists(groups: Group) -> bool:
    return any(Path(p).exists() for p in groups.join_paths().values())


async def settle(spares: SpareGroups, count: int) -> None:
    for _ in range(200):
        if spares.spare_count() == count:
            return
        await asyncio.sleep(0.01)


def test_spares_are_made_ahead_taken_with_their_limits_and_removed() -> None:
    async def scenario(hierarchy: Hierarchy) -> None:
        spares = SpareGroups(hierarchy, per_size=2, sizes=2)
        first = spares.take(256, "env-1")  # none ready: made at once
        assert limit_mb(first) == 256 and first.name == "env-1"
        await settle(spares, 2)
        assert spares.spare_count() == 2, "two made ahead in the background"
        second = spares.take(256, "env-2")  # a spare, renamed for its environment (v2 cannot rename)
        assert limit_mb(second) == 256 and {Path(p).name for p in second.join_paths().values()} == {second.name}
        assert second.name.startswith("spare-") if V2 else second.name == "env-2"
        assert spares.spare_count() == 1 and all(Path(p).is_dir() for p in second.join_paths().values())
        # A third size: the spares of the size taken longest ago go.
        taken = [first, second, spares.take(512, "env-3"), spares.take(1024, "env-4")]
        await settle(spares, 4)
        assert spares.spare_count() == 4
        made = hierarchy.leftovers()
        await spares.close()
        for groups in taken:
            groups.remove()
        await asyncio.sleep(0.05)
        assert len(made) >= 6 and hierarchy.leftovers() == [], "close removes every spare"
        late = spares.take(128, "env-5")  # still usable after close, without spares
        assert limit_mb(late) == 128 and spares.spare_count() == 0
        late.remove()

    under_new_parent(scenario)


def run_inside(groups: Group, code: str) -> int:
    """Run `code` in a Python process that joins `groups` before it starts; its exit status."""

    def join() -> None:
        for path in groups.join_paths().values():
            (Path(path) / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.run([sys.executable, "-S", "-c", code], preexec_fn=join, check=False).returncode


def counter(groups: Group, v1: str, v2: str) -> int:
    return int(memory_file(groups, v1, v2).read_text())


def inode(groups: Group) -> int:
    return memory_dir(groups).stat().st_ino


def groups_under(hierarchy: Hierarchy) -> list[int]:
    return sorted(inode(g) for g in hierarchy.leftovers())


def under_new_parent(scenario: Callable[[Hierarchy], Awaitable[None]]) -> None:
    """Run `scenario` with a parent group of its own, removed afterwards with whatever it left."""
    hierarchy = cgroups.open_hierarchy(f"{cgroups.PARENT}/test-{uuid.uuid4().hex[:8]}")
    try:
        asyncio.run(scenario(hierarchy))
    finally:
        for group in hierarchy.leftovers():
            group.remove(timeout_s=2)
        hierarchy.close()


def test_groups_given_back_are_reset_and_kept_as_spares() -> None:
    """Where the hierarchy can start a group's peak again (v1; v2 from kernel 6.12); elsewhere they are removed,
    since the next environment would report this one's peak as its own."""

    async def scenario(hierarchy: Hierarchy) -> None:
        spares = SpareGroups(hierarchy, per_size=1)
        groups = spares.take(256, "env-1")
        first = inode(groups)  # a renamed group keeps its inode
        assert run_inside(groups, "x = bytearray(48 << 20)") == 0
        peak = groups.peak_gauge()
        assert (peak.mib() or 0) > 48, "the first environment's peak"
        peak.close()
        await settle(spares, 1)
        assert await spares.give_back(256, groups)
        if V2:
            # A v2 group cannot be renamed: kept as a spare (under the name it had), or removed.
            assert exists(groups) == hierarchy.reuses
        else:
            assert not exists(groups), "no group keeps a gone environment's name"
        if not hierarchy.reuses:
            assert spares.spare_count() == 1 and first not in groups_under(hierarchy), "removed, not reused"
            await spares.close()
            return
        assert spares.spare_count() == 2, "kept as a spare of its size"
        ready = set(groups_under(hierarchy))
        assert len(ready) == 2 and first in ready
        again = [spares.take(256, f"env-{i}") for i in (2, 3)]
        assert {inode(g) for g in again} == ready, "both spares taken, none made"
        for taken in again:
            assert limit_mb(taken) == 256
            peak = taken.peak_gauge()
            assert (peak.mib() or 0) * (1 << 20) < cgroups.REUSE_MAX_LEFT_BYTES, "peak starts again"
            peak.close()
            if not V2:
                assert counter(taken, "memory.failcnt", "") == 0
            assert taken.pids() == []
        await spares.close()
        for taken in again:
            taken.remove()

    under_new_parent(scenario)


def test_groups_of_an_environment_killed_for_memory_are_removed_not_reused() -> None:
    """The OOM-kill counter cannot be reset: a group that had one would report it for its next environment."""

    async def scenario(hierarchy: Hierarchy) -> None:
        spares = SpareGroups(hierarchy, per_size=1)
        groups = spares.take(32, "env-oom")
        assert run_inside(groups, "x = bytearray(96 << 20)") != 0
        assert groups.oom_killed()
        await settle(spares, 1)
        assert await spares.give_back(32, groups), "emptied"
        assert not exists(groups), "removed"
        assert spares.spare_count() == 1, "only the spare made ahead"
        await spares.close()

    under_new_parent(scenario)


async def keeping_two_with_taken(hierarchy: Hierarchy, count: int) -> tuple[SpareGroups, list[Group]]:
    """Spares that keep up to two of a size, and `count` groups of 128 MB taken from them, once settled."""
    spares = SpareGroups(hierarchy, per_size=1)
    taken = [spares.take(128, f"env-{i}") for i in range(count)]
    await settle(spares, 1)
    return spares, taken


def test_groups_given_back_beyond_what_a_size_keeps_are_removed() -> None:
    async def scenario(hierarchy: Hierarchy) -> None:
        spares, taken = await keeping_two_with_taken(hierarchy, 4)
        for groups in taken:
            assert await spares.give_back(128, groups)
        kept = 2 if hierarchy.reuses else 1
        assert spares.spare_count() == kept
        assert len(groups_under(hierarchy)) == kept, "the rest removed"
        await spares.close()
        assert groups_under(hierarchy) == []

    under_new_parent(scenario)


def test_many_groups_given_back_at_once_leave_only_what_a_size_keeps() -> None:
    async def scenario(hierarchy: Hierarchy) -> None:
        spares, taken = await keeping_two_with_taken(hierarchy, 12)
        assert all(await asyncio.gather(*(spares.give_back(128, groups) for groups in taken)))
        left = groups_under(hierarchy)
        assert spares.spare_count() <= 2
        assert len(left) == spares.spare_count(), "none renamed as a spare only to be removed later"
        await spares.close()

    under_new_parent(scenario)
