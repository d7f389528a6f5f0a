"""Spare cgroups: made ahead per MemorySize, taken by launches, removed on close."""

from __future__ import annotations

import asyncio
import os
import uuid
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
    parent = f"{cgroups.PARENT}/test-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
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

    try:
        asyncio.run(scenario())
    finally:
        for ctrl in cgroups.CONTROLLERS:
            top = cgroups.ROOT / ctrl / parent
            if top.is_dir():
                for group in top.iterdir():
                    if group.is_dir():
                        group.rmdir()
                top.rmdir()
