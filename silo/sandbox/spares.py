"""Cgroups made ahead of the environments that will use them: a launch takes a ready set, and the next set
is made in a worker thread, off every request's path.

A set is made with the limits of one MemorySize (memory, swap and CPU shares all follow from it), so
spares are kept per size, for the sizes launched most recently. They are named `spare-…` until taken,
then renamed for their environment (cgroup v1 allows renaming a group in place), so what the host shows
is the environments' groups and a few spares. Spares are removed when the backend closes; a daemon that
died leaves them to the sweep of its next start, as it does every group.

An environment's groups, once it is gone, become a spare of its size again when they are fit for it
(`cgroups.reset_for_reuse`) and that size has room for one; only then are they not removed. Removing a
memory group costs the kernel more the more environments the host holds, and when tenants outnumber
the environments memory allows, every call ends one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter, OrderedDict
from pathlib import Path

from silo.jail import cgroups

log = logging.getLogger(__name__)

PREFIX = "spare-"


class SpareGroups:
    def __init__(self, parent: str, per_size: int = 4, sizes: int = 4) -> None:
        self._parent = parent
        self._per_size = per_size
        # Groups given back are kept up to twice what is made ahead: a launch and an environment's end
        # often come together, and a spare made ahead a moment before should not crowd out a reused one.
        self._keep = 2 * per_size
        self._sizes = sizes
        self._ready: OrderedDict[int, list[dict[str, Path]]] = OrderedDict()
        self._refilling: set[int] = set()
        self._incoming: Counter[int] = Counter()  # groups given back being reset, by size
        self._closed = False

    def take(self, memory_mb: int, name: str) -> dict[str, Path]:
        """Groups named `name` with the limits of `memory_mb`: a spare renamed when one is ready, else made now."""
        ready = self._ready.get(memory_mb)
        groups = _renamed(ready.pop(), name) if ready else None
        if groups is None:
            groups = cgroups.create(name, cgroups.Limits(memory_mb), self._parent)
        self._ready.setdefault(memory_mb, [])
        self._ready.move_to_end(memory_mb)
        while len(self._ready) > self._sizes:
            _, dropped = self._ready.popitem(last=False)
            self._remove_later(dropped)
        self._refill(memory_mb)
        return groups

    async def give_back(self, memory_mb: int, groups: dict[str, Path]) -> bool:
        """The groups of an environment that is gone: kept as a spare of `memory_mb` when fit and wanted,
        else removed. True once nothing runs in them any more (kept or removed), False if they could not
        be emptied."""
        loop = asyncio.get_running_loop()
        if not self._has_room(memory_mb):
            return await loop.run_in_executor(None, cgroups.remove, groups)
        # Room is booked before the reset: when hundreds of environments end at once, only as many as a
        # size keeps are reset and renamed, and the rest removed, not renamed to spares and dropped later.
        self._incoming[memory_mb] += 1
        try:
            emptied, spare = await loop.run_in_executor(None, _reuse_or_remove, groups, memory_mb)
        finally:
            self._incoming[memory_mb] -= 1
        if spare is not None:
            ready = self._ready.get(memory_mb)
            if self._closed or ready is None:  # closed, or the size dropped, meanwhile
                self._remove_later([spare])
            else:
                ready.append(spare)
        return emptied

    def _has_room(self, memory_mb: int) -> bool:
        ready = self._ready.get(memory_mb)
        return not self._closed and ready is not None and len(ready) + self._incoming[memory_mb] < self._keep

    def spare_count(self) -> int:
        return sum(len(ready) for ready in self._ready.values())

    def _make(self, memory_mb: int) -> dict[str, Path]:
        return cgroups.create(PREFIX + uuid.uuid4().hex[:16], cgroups.Limits(memory_mb), self._parent)

    def _make_many(self, memory_mb: int, count: int) -> list[dict[str, Path]]:
        return [self._make(memory_mb) for _ in range(count)]

    def _refill(self, memory_mb: int) -> None:
        missing = self._per_size - len(self._ready.get(memory_mb, []))
        if self._closed or missing <= 0 or memory_mb in self._refilling:
            return
        self._refilling.add(memory_mb)
        made = asyncio.get_running_loop().run_in_executor(None, self._make_many, memory_mb, missing)
        made.add_done_callback(lambda future: self._refilled(memory_mb, future))

    def _refilled(self, memory_mb: int, future: asyncio.Future[list[dict[str, Path]]]) -> None:
        self._refilling.discard(memory_mb)
        if future.cancelled():
            return
        if future.exception() is not None:
            log.warning("spare cgroups could not be made ahead (launches make their own): %s", future.exception())
            return
        made = future.result()
        if self._closed or memory_mb not in self._ready:
            self._remove_later(made)
        else:
            self._ready[memory_mb].extend(made)

    def _remove_later(self, spares: list[dict[str, Path]]) -> None:
        if spares:
            asyncio.get_running_loop().run_in_executor(None, _remove_all, spares)

    async def close(self) -> None:
        """Remove every spare; none is made after this."""
        self._closed = True
        spares = [groups for ready in self._ready.values() for groups in ready]
        self._ready.clear()
        await asyncio.get_running_loop().run_in_executor(None, _remove_all, spares)


def _renamed(spare: dict[str, Path], name: str) -> dict[str, Path] | None:
    """The spare's groups under their environment's name; None (and the spare removed) if that fails."""
    renamed: dict[str, Path] = {}
    try:
        for ctrl, path in spare.items():
            target = path.with_name(name)
            path.rename(target)
            renamed[ctrl] = target
    except OSError as exc:
        log.warning("a spare cgroup could not be renamed (a new one is made): %s", exc)
        cgroups.remove({**spare, **renamed}, timeout_s=1)
        return None
    return renamed


def _reuse_or_remove(groups: dict[str, Path], memory_mb: int) -> tuple[bool, dict[str, Path] | None]:
    """(whether the groups are empty now, the groups renamed as a spare when they are fit to be one)."""
    if cgroups.reset_for_reuse(groups, cgroups.Limits(memory_mb)):
        return True, _renamed(groups, PREFIX + uuid.uuid4().hex[:16])
    return cgroups.remove(groups), None


def _remove_all(spares: list[dict[str, Path]]) -> None:
    for groups in spares:
        cgroups.remove(groups, timeout_s=1)
