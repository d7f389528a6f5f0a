"""A fair queue of waiting calls: tenants take turns, each tenant's calls in arrival order.

When the shared pool of concurrency is full, a freed slot goes to the tenant whose turn it is, not
to whoever queued most calls; a tenant that floods waits behind every other waiting tenant's next call.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Hashable


class FairQueue:
    def __init__(self) -> None:
        self._waiting: OrderedDict[Hashable, deque[asyncio.Future[None]]] = OrderedDict()

    def push(self, tenant: Hashable) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(waiter)
        return waiter

    def pop(self) -> asyncio.Future[None] | None:
        """The next waiter, taking tenants in turn; waiters that gave up are skipped."""
        while self._waiting:
            tenant, waiters = next(iter(self._waiting.items()))
            while waiters and waiters[0].done():
                waiters.popleft()
            if not waiters:
                del self._waiting[tenant]
                continue
            waiter = waiters.popleft()
            # This tenant goes to the back of the line; it keeps its place only if nobody else waits.
            if waiters:
                self._waiting.move_to_end(tenant)
            else:
                del self._waiting[tenant]
            return waiter
        return None

    def __len__(self) -> int:
        return sum(1 for waiters in self._waiting.values() for w in waiters if not w.done())
