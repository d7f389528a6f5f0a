"""What silo's own fuzzers share: bounded, reproducible hypothesis settings, and a measure of what an
object holds.

Each target runs a fixed number of generated examples in the normal test run (a few seconds each),
derandomized and without an example database, so CI sees the same inputs every time and a failure
reproduces from the test alone. HYPOTHESIS_FUZZ_SCALE=20 runs twenty times as many, with fresh
randomness, for a longer hunt on a workstation.
"""

from __future__ import annotations

import os
from collections import deque

from hypothesis import HealthCheck, settings


def fuzz_settings(max_examples: int, *, slow: bool = False) -> settings:
    """`slow`: examples that do real I/O (files, pipes) can trip hypothesis' too_slow health check."""
    scale = max(1, int(os.environ.get("HYPOTHESIS_FUZZ_SCALE", "1")))
    return settings(
        max_examples=max_examples * scale,
        deadline=None,
        derandomize=scale == 1,
        database=None,
        suppress_health_check=[HealthCheck.too_slow] if slow else [],
        print_blob=True,
    )


def retained_bytes(obj: object, skip: set[int]) -> int:
    """Bytes held by `obj` and what it references, once each: buffers and strings, in containers and in the
    attributes of silo's objects. Objects whose id is in `skip` (the test's own fakes) are not followed."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen or id(item) in skip:
            continue
        seen.add(id(item))
        if isinstance(item, bytes | bytearray | str):
            total += len(item)
        elif isinstance(item, memoryview):
            total += item.nbytes
        elif isinstance(item, list | tuple | set | frozenset | deque):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, int | float | bool | type(None)):
            continue
        elif type(item).__module__.startswith(("silo.", "collections")):
            stack.extend(getattr(item, "__dict__", {}).values())
            for name in getattr(type(item), "__slots__", ()):
                if hasattr(item, name):
                    stack.append(getattr(item, name))
    return total
