"""The retry and backoff decisions of asynchronous events."""

from __future__ import annotations

from silo.events.policy import Condition, Step, after_deferral, after_run, deferral_delay, retry_delay


def test_success_ends_the_event() -> None:
    assert after_run(1, False, 100.0, 0.0, 2, 21600, 60.0) == Step(condition=Condition.SUCCESS)


def test_errors_are_retried_a_minute_then_two_minutes_later() -> None:
    assert after_run(1, True, 100.0, 0.0, 2, 21600, 60.0) == Step(retry_at=160.0)
    assert after_run(2, True, 200.0, 0.0, 2, 21600, 60.0) == Step(retry_at=320.0)
    assert after_run(3, True, 300.0, 0.0, 2, 21600, 60.0) == Step(condition=Condition.RETRIES_EXHAUSTED)


def test_no_retries_means_one_run() -> None:
    assert after_run(1, True, 100.0, 0.0, 0, 21600, 60.0) == Step(condition=Condition.RETRIES_EXHAUSTED)


def test_a_retry_the_event_is_too_old_for_ends_it_now() -> None:
    assert after_run(1, True, 30.0, 0.0, 2, 60, 60.0) == Step(condition=Condition.EVENT_AGE_EXCEEDED)


def test_deferrals_double_from_a_second_up_to_five_minutes() -> None:
    assert [deferral_delay(n, 60.0) for n in (1, 2, 3, 9, 20)] == [1.0, 2.0, 4.0, 256.0, 300.0]
    assert retry_delay(1, 0.2) == 0.2 and retry_delay(2, 0.2) == 0.4


def test_deferrals_use_no_retry_attempt_but_end_at_the_maximum_age() -> None:
    assert after_deferral(50, 100.0, 0.0, 21600, 60.0) == Step(retry_at=400.0)
    assert after_deferral(50, 21500.0, 0.0, 21600, 60.0) == Step(condition=Condition.EVENT_AGE_EXCEEDED)
