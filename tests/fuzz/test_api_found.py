"""Requests the schema fuzzing found answered with a 500 (or that reading around what it found turned
up), each pinned against a real server: every one must now be refused, or answered, in Lambda's shape."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.support import SignedBy, SiloServer, create_python_function

PAST_64_BITS = str(1 << 64)
SUPERSCRIPT_TWO = "\u00b2"  # str.isdigit() says yes, int() says no
TIMEOUT_S = 30


def get(server: SiloServer, path: str, **params: str) -> requests.Response:
    return requests.get(server.endpoint + path, params=params, timeout=TIMEOUT_S, auth=SignedBy(server.endpoint))


def assert_refused(response: requests.Response, error_type: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["x-amzn-ErrorType"] == error_type, response.text
    body: dict[str, Any] = response.json()
    assert body["message"], body
    return body


@pytest.fixture()
def function(lambda_client: Any, unique_name: str) -> str:
    create_python_function(lambda_client, unique_name, "def handler(event, context):\n    return event\n")
    return unique_name


# Every number a query carries into the store: SQLite integers are 64-bit, a larger one failed the query.
POSITIONS = [
    ("/silo/v1/functions/{}/logs", "cursor"),
    ("/silo/v1/metering", "cursor"),
    ("/silo/v1/functions/{}/events", "Marker"),
    ("/silo/v1/functions/{}/dead-letters", "Marker"),
]


@pytest.mark.parametrize(("path", "param"), POSITIONS)
@pytest.mark.parametrize("value", [PAST_64_BITS, SUPERSCRIPT_TWO])
def test_a_position_the_store_cannot_hold_is_refused(
    silo_server: SiloServer, function: str, path: str, param: str, value: str
) -> None:
    body = assert_refused(get(silo_server, path.format(function), **{param: value}), "InvalidParameterValueException")
    assert value in body["message"]


@pytest.mark.parametrize(("path", "param"), [("/silo/v1/functions/{}/logs", "limit"), ("/silo/v1/metering", "limit")])
def test_a_limit_in_other_digits_than_ascii_is_refused(
    silo_server: SiloServer, function: str, path: str, param: str
) -> None:
    assert_refused(
        get(silo_server, path.format(function), **{param: SUPERSCRIPT_TWO}), "InvalidParameterValueException"
    )


def test_times_past_64_bits_mean_the_edge_of_time(silo_server: SiloServer, lambda_client: Any, function: str) -> None:
    lambda_client.invoke(FunctionName=function, Payload=b'{"hello": 1}')
    logs = f"/silo/v1/functions/{function}/logs"
    everything = get(silo_server, logs, since="0").json()["Events"]
    assert everything, "the call left no log events to compare with"
    long_ago = "99999999999999999999999d"  # before any time the store can hold
    for params, expected in [
        ({"since": long_ago}, everything),
        ({"until": PAST_64_BITS}, everything),
        ({"since": PAST_64_BITS}, []),
        ({"until": long_ago}, []),
    ]:
        page = get(silo_server, logs, **params)
        assert page.status_code == 200, page.text
        assert page.json()["Events"] == expected, params
    for params in ({"from": PAST_64_BITS}, {"to": PAST_64_BITS}, {"from": long_ago}):
        page = get(silo_server, "/silo/v1/metering", **params)
        assert page.status_code == 200, page.text


def test_a_time_in_other_digits_than_ascii_is_refused(silo_server: SiloServer, function: str) -> None:
    body = assert_refused(
        get(silo_server, f"/silo/v1/functions/{function}/logs", since=SUPERSCRIPT_TWO), "InvalidParameterValueException"
    )
    assert "since must be epoch milliseconds" in body["message"]


@pytest.mark.parametrize("path", ["/silo/v1/functions/{}/events", "/silo/v1/functions/{}/dead-letters"])
def test_max_items_of_zero_is_refused_not_taken_for_the_default(
    silo_server: SiloServer, function: str, path: str
) -> None:
    assert_refused(get(silo_server, path.format(function), MaxItems="0"), "InvalidParameterValueException")


NESTED = b"[" * 100_000 + b"]" * 100_000


def test_json_nested_past_the_parser_is_refused_by_every_json_route(
    silo_server: SiloServer, lambda_client: Any, function: str
) -> None:
    """A body nested too deep for Python's parser raised RecursionError: a 500 from every JSON route."""
    base = silo_server.endpoint
    sends = [
        ("POST", "/2015-03-31/functions"),
        ("PUT", f"/2015-03-31/functions/{function}/configuration"),
        ("PUT", f"/2015-03-31/functions/{function}/code"),
        ("PUT", f"/2017-10-31/functions/{function}/concurrency"),
        ("PUT", f"/2019-09-25/functions/{function}/event-invoke-config"),
        ("PUT", f"/silo/v1/functions/{function}/settings"),
        ("POST", f"/2015-03-31/functions/{function}/invocations"),
    ]
    for method, path in sends:
        response = requests.request(method, base + path, data=NESTED, timeout=TIMEOUT_S, auth=SignedBy(base))
        body = assert_refused(response, "InvalidRequestContentException")
        assert "nests arrays or objects deeper" in body["message"], (method, path, body)
    # The same event nested a little is still an event.
    shallow = json.dumps(json.loads(b"[" * 50 + b"]" * 50)).encode()
    answer = lambda_client.invoke(FunctionName=function, Payload=shallow)
    assert json.loads(answer["Payload"].read()) == json.loads(shallow)
