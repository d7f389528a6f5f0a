"""The HTTP front's decisions and answers, without a server (tests/security/test_http_front.py attacks one)."""

from __future__ import annotations

import asyncio
import http.client
import io
import json
from dataclasses import replace

import pytest

from silo.api import front
from silo.api.protocol import JoinedWrites
from silo.config import Settings
from tests.unit.test_api_protocol import Recorder

LIMITS = front.FrontLimits(max_connections=10, max_per_address=3)


def test_a_connection_is_refused_past_either_cap_and_the_total_decides_first() -> None:
    assert front.refusal(LIMITS, serving=9, from_address=2, address="a") is None
    per_address = front.refusal(LIMITS, serving=9, from_address=3, address="203.0.113.7")
    assert per_address is not None and per_address.status == 429
    assert per_address.body()["Reason"] == "CallerRateLimitExceeded"
    assert "203.0.113.7" in per_address.message
    total = front.refusal(LIMITS, serving=10, from_address=3, address="a")
    assert total is not None and total.status == 503
    unlimited = replace(LIMITS, max_per_address=0)
    assert front.refusal(unlimited, serving=0, from_address=10_000, address="proxy") is None


def test_addresses_are_counted_by_host_and_ipv6_by_its_64() -> None:
    assert front.address_key(("127.0.0.1", 5)) == front.address_key(("127.0.0.1", 6)) == "127.0.0.1"
    assert front.address_key(("::ffff:192.0.2.1", 5)) == "192.0.2.1"
    assert front.address_key(("2001:db8:1:2::1", 5)) == front.address_key(("2001:db8:1:2:ffff::9", 5))
    assert front.address_key(("2001:db8:1:2::1", 5)) != front.address_key(("2001:db8:1:3::1", 5))
    assert front.address_key(None) == "local socket"


def test_answers_are_lambda_errors_that_close() -> None:
    class Wire(io.BytesIO):
        def makefile(self, mode: str) -> io.BytesIO:
            return self

    raw = front.answer(front.ServiceUnavailable("full"))
    reply = http.client.HTTPResponse(Wire(raw))  # type: ignore[arg-type]
    reply.begin()
    assert reply.status == 503 and reply.getheader("Connection") == "close"
    assert reply.getheader("x-amzn-ErrorType") == "ServiceUnavailableException"
    assert reply.getheader("Retry-After") == "1" and reply.getheader("x-amzn-RequestId")
    assert json.loads(reply.read()) == {"Type": "Service", "Message": "full"}


@pytest.mark.parametrize("name", ["http_max_connections", "http_head_timeout_s", "http_body_timeout_s", "http_idle_s"])
def test_limits_that_make_no_sense_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        front.FrontLimits.from_settings(replace(Settings(), **{name: 0}))
    with pytest.raises(ValueError, match="per_address"):
        front.FrontLimits.from_settings(replace(Settings(), http_max_connections_per_address=-1))
    assert front.FrontLimits.from_settings(Settings()) == front.FrontLimits()


def test_a_close_can_wait_when_the_connection_says_so() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        wait = [True]
        joined = JoinedWrites(recorder, asyncio.get_running_loop(), lambda: wait[0])  # type: ignore[arg-type]
        joined.write(b"answer")
        joined.close()
        assert recorder.writes == [b"answer"] and not recorder.closed, "written, the close left to the connection"
        wait[0] = False
        joined.close()
        assert recorder.closed
        joined.abandon()
        joined.write(b"late")
        await asyncio.sleep(0)
        assert recorder.writes == [b"answer"]

    asyncio.run(scenario())
