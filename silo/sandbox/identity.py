"""Unix identities of environments: each live environment runs as a uid/gid no other one has."""

from __future__ import annotations

from collections import deque

# Far above the ids a distribution hands out to people and services, below the 2^31 edge.
UID_BASE = 200_000
UID_COUNT = 100_000


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
