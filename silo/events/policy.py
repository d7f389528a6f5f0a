"""When an event runs again, and when it has had its chances: pure decisions over plain numbers.

Lambda retries a function error or timeout about one minute, then two minutes later; silo waits
`base_s`, then `2 * base_s` (`base_s` is a setting, 60 s by default). A throttle is not the function's
fault: it is retried without using a retry attempt, with a backoff that doubles from `base_s / 60`
(1 s by default) up to `5 * base_s` (5 min), as Lambda does, until the event is too old.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Condition(enum.Enum):
    """Why an event ended. The first three are Lambda's (they appear in destination records)."""

    SUCCESS = "Success"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    EVENT_AGE_EXCEEDED = "EventAgeExceeded"
    # silo's own, for the dead-letter list:
    FUNCTION_DELETED = "FunctionDeleted"
    TENANT_MISMATCH = "TenantMismatch"
    DESTINATION_MISSING = "DestinationMissing"


@dataclass(frozen=True, slots=True)
class Step:
    """What to do after an attempt: run again at `retry_at`, or stop with `condition`."""

    retry_at: float | None = None
    condition: Condition | None = None


def retry_delay(runs: int, base_s: float) -> float:
    """Delay before the next run after the `runs`-th run failed (1-based): base, then twice base."""
    return base_s * 2.0 ** (runs - 1)


def deferral_delay(throttles: int, base_s: float) -> float:
    """Delay after the event's `throttles`-th refusal (1-based): doubling from base/60, capped at 5 * base."""
    return min(base_s / 60 * 2.0 ** (throttles - 1), base_s * 5)


def expired(now: float, enqueued_at: float, max_age_s: int) -> bool:
    return now - enqueued_at > max_age_s


def after_run(
    runs: int, failed: bool, now: float, enqueued_at: float, max_retries: int, max_age_s: int, base_s: float
) -> Step:
    """After the `runs`-th run of an event (counting this one) succeeded or failed."""
    if not failed:
        return Step(condition=Condition.SUCCESS)
    if runs > max_retries:
        return Step(condition=Condition.RETRIES_EXHAUSTED)
    retry_at = now + retry_delay(runs, base_s)
    # No point keeping an event until a retry it is too old for.
    if expired(retry_at, enqueued_at, max_age_s):
        return Step(condition=Condition.EVENT_AGE_EXCEEDED)
    return Step(retry_at=retry_at)


def after_deferral(throttles: int, now: float, enqueued_at: float, max_age_s: int, base_s: float) -> Step:
    """After the router refused the event's `throttles`-th hand-over (counting this one)."""
    retry_at = now + deferral_delay(throttles, base_s)
    if expired(retry_at, enqueued_at, max_age_s):
        return Step(condition=Condition.EVENT_AGE_EXCEEDED)
    return Step(retry_at=retry_at)
