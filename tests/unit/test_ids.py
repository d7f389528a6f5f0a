"""Request ids: version 7 UUIDs, unique and ordered by time."""

from __future__ import annotations

import time
import uuid

from silo.ids import request_id


def test_request_ids_are_version_7_uuids_in_lambdas_shape() -> None:
    rid = request_id()
    parsed = uuid.UUID(rid)
    assert str(parsed) == rid
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert abs((parsed.int >> 80) - time.time() * 1000) < 5_000


def test_request_ids_are_unique_and_ordered_by_time() -> None:
    first = [request_id() for _ in range(10_000)]
    assert len(set(first)) == len(first)
    time.sleep(0.002)
    later = request_id()
    assert max(first) < later
