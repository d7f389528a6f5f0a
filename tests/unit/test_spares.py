"""Spare cgroups: made ahead per MemorySize, taken by launches, given back by environments that are gone,
removed on close."""

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
from silo.sandbox.spares import SpareGroups

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not cgroups.available(), reason="cgroups need root; CI runs these as root"
)


def limit_mb(groups: dict[str, Path]) -> int:
    return int((groups["memory"] / "memory.limit_in_bytes").read_text()) // (1024 * 1024)


async def settle(spares: SpareGroups, count: int) -> None:
    for _ in range(200):
        if spares.spare_count() == count:
            return
        await asyncio.sleep(0.01)


def test_spares_are_made_ahead_taken_with_their_limits_and_removed() -> None:
    async def scenario(parent: str) -> None:
        spares = SpareGroups(parent, per_size=2, sizes=2)
        first = spares.take(256, "env-1")  # none ready: made at once
        assert limit_mb(first) == 256 and first["memory"].name == "env-1"
        await settle(spares, 2)
        assert spares.spare_count() == 2, "two made ahead in the background"
        second = spares.take(256, "env-2")  # a spare, renamed for its environment
        assert limit_mb(second) == 256 and {p.name for p in second.values()} == {"env-2"}
        assert spares.spare_count() == 1 and all(p.is_dir() for p in second.values())
        # A third size: the spares of the size taken longest ago go.
        taken = [first, second, spares.take(512, "env-3"), spares.take(1024, "env-4")]
        await settle(spares, 4)
        assert spares.spare_count() == 4
        made = [g for g in (cgroups.ROOT / "memory" / parent).iterdir() if g.is_dir()]
        await spares.close()
        for groups in taken:
            cgroups.remove(groups)
        await asyncio.sleep(0.05)
        left = [g for g in (cgroups.ROOT / "memory" / parent).iterdir() if g.is_dir()]
        assert len(made) >= 6 and left == [], "close removes every spare"
        late = spares.take(128, "env-5")  # still usable after close, without spares
        assert limit_mb(late) == 128 and spares.spare_count() == 0
        cgroups.remove(late)

    under_new_parent(scenario)


def run_inside(groups: dict[str, Path], code: str) -> int:
    """Run `code` in a Python process that joins `groups` before it starts; its exit status."""

    def join() -> None:
        for path in groups.values():
            (path / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.run([sys.executable, "-c", code], preexec_fn=join, check=False).returncode


def counter(groups: dict[str, Path], name: str) -> int:
    return int((groups["memory"] / name).read_text())


def groups_under(parent: str) -> list[Path]:
    top = cgroups.ROOT / "memory" / parent
    return sorted(g for g in top.iterdir() if g.is_dir()) if top.is_dir() else []


def under_new_parent(scenario: Callable[[str], Awaitable[None]]) -> None:
    """Run `scenario` with a parent group of its own, removed afterwards with whatever it left."""
    parent = f"{cgroups.PARENT}/test-{uuid.uuid4().hex[:8]}"
    try:
        asyncio.run(scenario(parent))
    finally:
        for ctrl in cgroups.CONTROLLERS:
            top = cgroups.ROOT / ctrl / parent
            if top.is_dir():
                for group in top.iterdir():
                    if group.is_dir():
                        cgroups.remove({ctrl: group}, timeout_s=2)
                top.rmdir()


def test_groups_given_back_are_reset_and_kept_as_spares() -> None:
    async def scenario(parent: str) -> None:
        spares = SpareGroups(parent, per_size=1)
        groups = spares.take(256, "env-1")
        first = groups["memory"].stat().st_ino  # a renamed group keeps its inode
        assert run_inside(groups, "x = bytearray(48 << 20)") == 0
        assert counter(groups, "memory.max_usage_in_bytes") > 48 << 20, "the first environment's peak"
        await settle(spares, 1)
        assert await spares.give_back(256, groups)
        assert spares.spare_count() == 2, "kept as a spare of its size"
        assert not any(p.exists() for p in groups.values()), "renamed: no group keeps a gone environment's name"
        ready = {g.stat().st_ino for g in groups_under(parent)}
        assert len(ready) == 2 and first in ready
        again = [spares.take(256, f"env-{i}") for i in (2, 3)]
        assert {g["memory"].stat().st_ino for g in again} == ready, "both spares taken, none made"
        for taken in again:
            assert limit_mb(taken) == 256
            assert counter(taken, "memory.max_usage_in_bytes") < cgroups.REUSE_MAX_LEFT_BYTES, "peak starts again"
            assert counter(taken, "memory.failcnt") == 0
            assert cgroups.pids_of(taken) == []
        await spares.close()
        for taken in again:
            cgroups.remove(taken)

    under_new_parent(scenario)


def test_groups_of_an_environment_killed_for_memory_are_removed_not_reused() -> None:
    """The OOM-kill counter cannot be reset: a group that had one would report it for its next environment."""

    async def scenario(parent: str) -> None:
        spares = SpareGroups(parent, per_size=1)
        groups = spares.take(32, "env-oom")
        assert run_inside(groups, "x = bytearray(96 << 20)") != 0
        assert cgroups.oom_killed(groups)
        await settle(spares, 1)
        assert await spares.give_back(32, groups), "emptied"
        assert not any(p.exists() for p in groups.values()), "removed"
        assert spares.spare_count() == 1, "only the spare made ahead"
        await spares.close()

    under_new_parent(scenario)


async def keeping_two_with_taken(parent: str, count: int) -> tuple[SpareGroups, list[dict[str, Path]]]:
    """Spares that keep up to two of a size, and `count` groups of 128 MB taken from them, once settled."""
    spares = SpareGroups(parent, per_size=1)
    taken = [spares.take(128, f"env-{i}") for i in range(count)]
    await settle(spares, 1)
    return spares, taken


def test_groups_given_back_beyond_what_a_size_keeps_are_removed() -> None:
    async def scenario(parent: str) -> None:
        spares, taken = await keeping_two_with_taken(parent, 4)
        for groups in taken:
            assert await spares.give_back(128, groups)
        assert spares.spare_count() == 2
        assert len(groups_under(parent)) == 2, "the rest removed"
        await spares.close()
        assert groups_under(parent) == []

    under_new_parent(scenario)


def test_many_groups_given_back_at_once_leave_only_what_a_size_keeps() -> None:
    async def scenario(parent: str) -> None:
        spares, taken = await keeping_two_with_taken(parent, 12)
        assert all(await asyncio.gather(*(spares.give_back(128, groups) for groups in taken)))
        left = groups_under(parent)
        assert spares.spare_count() <= 2
        assert len(left) == spares.spare_count(), "none renamed as a spare only to be removed later"
        await spares.close()

    under_new_parent(scenario)
