"""Cgroups made ahead of the environments that will use them: a launch takes a ready set, and the next set
is made in a worker thread, off every request's path.

A set is made with the limits of one MemorySize (memory, swap and CPU shares all follow from it), so
spares are kept per size, for the sizes launched most recently. They are named `spare-…` until taken,
then renamed for their environment where the hierarchy allows renaming a group in place (v1), so what the
host shows is the environments' groups and a few spares; on v2 a group keeps its spare's name. Spares
are removed when the backend closes; a daemon that died leaves them to the sweep of its next start, as it
does every group. On v2 a group is reused only where its peak can be reset (`Hierarchy.reuses`).

An environment's groups, once it is gone, become a spare of its size again when they are fit for it
(`Group.reset_for_reuse`) and that size has room for one; only then are they not removed. Removing a
memory group costs the kernel more the more environments the host holds, and when tenants outnumber
the environments memory allows, every call ends one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter, OrderedDict

from silo.jail.cgroups import Group, Hierarchy, Limits

log = logging.getLogger(__name__)

PREFIX = "spare-"


class SpareGroups:
    def __init__(self, hierarchy: Hierarchy, per_size: int = 4, sizes: int = 4) -> None:
        self._hierarchy = hierarchy
        self._per_size = per_size
        # Groups given back are kept up to twice what is made ahead: a launch and an environment's end
        # often come together, and a spare made ahead a moment before should not crowd out a reused one.
        self._keep = 2 * per_size
        self._sizes = sizes
        self._ready: OrderedDict[int, list[Group]] = OrderedDict()
        self._refilling: set[int] = set()
        self._incoming: Counter[int] = Counter()  # groups given back being reset, by size
        self._closed = False

    def take(self, memory_mb: int, name: str) -> Group:
        """Groups named `name` with the limits of `memory_mb`: a spare renamed when one is ready, else made now."""
        ready = self._ready.get(memory_mb)
        groups = _renamed(ready.pop(), name) if ready else None
        if groups is None:
            groups = self._hierarchy.create(name, Limits(memory_mb))
        self._ready.setdefault(memory_mb, [])
        self._ready.move_to_end(memory_mb)
        while len(self._ready) > self._sizes:
            _, dropped = self._ready.popitem(last=False)
            self._remove_later(dropped)
        self._refill(memory_mb)
        return groups

    async def give_back(self, memory_mb: int, groups: Group) -> bool:
        """The groups of an environment that is gone: kept as a spare of `memory_mb` when fit and wanted,
        else removed. True once nothing runs in them any more (kept or removed), False if they could not
        be emptied."""
        loop = asyncio.get_running_loop()
        if not self._has_room(memory_mb):
            return await loop.run_in_executor(None, groups.remove)
        # Room is booked before the reset: when hundreds of environments end at once, only as many as a
        # size keeps are reset and renamed, and the rest removed, not renamed to spares and dropped later.
        self._incoming[memory_mb] += 1
        try:
            emptied, spare = await loop.run_in_executor(None, _reuse_or_remove, groups)
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
        return (
            self._hierarchy.reuses
            and not self._closed
            and ready is not None
            and len(ready) + self._incoming[memory_mb] < self._keep
        )

    def spare_count(self) -> int:
        return sum(len(ready) for ready in self._ready.values())

    def _make(self, memory_mb: int) -> Group:
        return self._hierarchy.create(PREFIX + uuid.uuid4().hex[:16], Limits(memory_mb))

    def _make_many(self, memory_mb: int, count: int) -> list[Group]:
        return [self._make(memory_mb) for _ in range(count)]

    def _refill(self, memory_mb: int) -> None:
        missing = self._per_size - len(self._ready.get(memory_mb, []))
        if self._closed or missing <= 0 or memory_mb in self._refilling:
            return
        self._refilling.add(memory_mb)
        made = asyncio.get_running_loop().run_in_executor(None, self._make_many, memory_mb, missing)
        made.add_done_callback(lambda future: self._refilled(memory_mb, future))

    def _refilled(self, memory_mb: int, future: asyncio.Future[list[Group]]) -> None:
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

    def _remove_later(self, spares: list[Group]) -> None:
        if spares:
            asyncio.get_running_loop().run_in_executor(None, _remove_all, spares)

    async def close(self) -> None:
        """Remove every spare; none is made after this."""
        self._closed = True
        spares = [groups for ready in self._ready.values() for groups in ready]
        self._ready.clear()
        await asyncio.get_running_loop().run_in_executor(None, _remove_all, spares)


def _renamed(spare: Group, name: str) -> Group | None:
    """The spare's groups under their environment's name; None (and the spare removed) if that fails."""
    try:
        return spare.renamed(name)
    except OSError as exc:
        log.warning("a spare cgroup could not be renamed (a new one is made): %s", exc)
        spare.remove(timeout_s=1)
        return None


def _reuse_or_remove(groups: Group) -> tuple[bool, Group | None]:
    """(whether the groups are empty now, the groups renamed as a spare when they are fit to be one)."""
    if groups.reset_for_reuse():
        return True, _renamed(groups, PREFIX + uuid.uuid4().hex[:16])
    return groups.remove(), None


def _remove_all(spares: list[Group]) -> None:
    for groups in spares:
        groups.remove(timeout_s=1)
