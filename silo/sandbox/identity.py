"""Unix identities of environments: each live environment runs as a uid/gid no other one has."""

from __future__ import annotations

import hashlib
from collections import deque
from pathlib import Path

# Far above the ids a distribution hands out to people and services, below the 2^31 edge. Each daemon
# (one per data directory) and each backend takes a range of its own, so no two live environments on
# the host share a uid even when several daemons run on it.
UID_BASE = 1_000_000
UID_COUNT = 100_000
INSTANCE_SLOTS = 1024


def instance_of(data_path: Path) -> str:
    """Four hex digits that name one daemon on this host, from where its data lives."""
    return hashlib.sha256(str(data_path.resolve()).encode()).hexdigest()[:4]


def uid_base(instance: str, backend: int = 0) -> int:
    """The first uid of a daemon's range for one backend (0: jail, 1: gvisor)."""
    slot = int(instance, 16) % INSTANCE_SLOTS
    return UID_BASE + (backend * INSTANCE_SLOTS + slot) * UID_COUNT


class UidPool:
    """Hands out uids; one comes back only when everything that ran as it is gone."""

    def __init__(self, base: int = UID_BASE, count: int = UID_COUNT) -> None:
        self._free: deque[int] = deque(range(base, base + count))
        self._taken: set[int] = set()

    def take(self) -> int:
        if not self._free:
            raise OSError(f"all {len(self._taken)} environment uids are in use")
        uid = self._free.popleft()
        self._taken.add(uid)
        return uid

    def give_back(self, uid: int) -> None:
        if uid in self._taken:
            self._taken.remove(uid)
            # To the back of the queue: a uid is reused as late as possible.
            self._free.append(uid)

    def in_use(self) -> int:
        return len(self._taken)
