"""Fetched key sets: cached, fetched again on an unknown kid within a small allowance, shared by concurrent
requests, kept when a fetch fails; and the fetch itself against a loopback server."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from silo.api.jwks import JwksUnavailable, KeySets, RemoteKeySet, fetch_url, parse_jwks
from tests.gateway_support import JwksServer, ec_key, rsa_key

URI = "https://idp.example/jwks.json"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeIdp:
    """A fetch that answers the current key set, or fails while `down`."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        self.down = False

    def __call__(self, uri: str) -> bytes:
        self.fetches += 1
        if self.down:
            raise OSError("connection refused")
        return json.dumps({"keys": self.keys}).encode()


def remote(idp: FakeIdp, clock: FakeClock, **kwargs: Any) -> RemoteKeySet:
    return RemoteKeySet(URI, fetch=idp, clock=clock, **kwargs)


def kids(keys: list[dict[str, Any]]) -> list[str]:
    return [k["kid"] for k in keys]


def test_keys_are_fetched_once_and_kept_for_their_time() -> None:
    one = rsa_key("one")
    idp, clock = FakeIdp([one.jwk]), FakeClock()
    keys = remote(idp, clock, ttl_s=600)

    async def scenario() -> None:
        assert kids(await keys.keys("one")) == ["one"]
        assert kids(await keys.keys("one")) == ["one"]
        assert kids(await keys.keys(None)) == ["one"]
        assert idp.fetches == 1
        clock.now += 601
        await keys.keys("one")
        assert idp.fetches == 2

    asyncio.run(scenario())


def test_an_unknown_kid_fetches_again_and_finds_a_rotated_key() -> None:
    one, two = rsa_key("one"), ec_key("two")
    idp, clock = FakeIdp([one.jwk]), FakeClock()
    keys = remote(idp, clock)

    async def scenario() -> None:
        await keys.keys("one")
        idp.keys = [one.jwk, two.jwk]
        assert kids(await keys.keys("two")) == ["two"]
        assert idp.fetches == 2

    asyncio.run(scenario())


def test_a_flood_of_unknown_kids_fetches_a_few_times_then_once_per_refill() -> None:
    idp, clock = FakeIdp([rsa_key("one").jwk]), FakeClock()
    keys = remote(idp, clock, burst=3, refill_s=60)

    async def scenario() -> None:
        for n in range(200):
            assert await keys.keys(f"bogus-{n}") == []
        assert idp.fetches == 3
        clock.now += 30
        for n in range(200):
            await keys.keys(f"bogus-{n}")
        assert idp.fetches == 3
        clock.now += 31
        for n in range(200):
            await keys.keys(f"bogus-{n}")
        assert idp.fetches == 4
        # Known kids are still served meanwhile, from the cache.
        assert kids(await keys.keys("one")) == ["one"]

    asyncio.run(scenario())


def test_concurrent_requests_share_one_fetch() -> None:
    release = threading.Event()
    idp = FakeIdp([rsa_key("one").jwk])

    def slow(uri: str) -> bytes:
        release.wait(10)
        return idp(uri)

    keys = RemoteKeySet(URI, fetch=slow, clock=FakeClock())

    async def scenario() -> list[list[dict[str, Any]]]:
        waiting = [asyncio.create_task(keys.keys("one")) for _ in range(20)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(*waiting)

    answers = asyncio.run(scenario())
    assert all(kids(a) == ["one"] for a in answers)
    assert idp.fetches == 1


def test_a_failed_fetch_keeps_the_keys_held_and_without_any_says_unavailable() -> None:
    idp, clock = FakeIdp([rsa_key("one").jwk]), FakeClock()
    keys = remote(idp, clock, ttl_s=60, burst=5)

    async def scenario() -> None:
        idp.down = True
        with pytest.raises(JwksUnavailable):
            await keys.keys("one")
        idp.down = False
        assert kids(await keys.keys("one")) == ["one"]
        idp.down = True
        clock.now += 61  # stale: fetched again, fails, the old keys still serve
        assert kids(await keys.keys("one")) == ["one"]
        assert idp.fetches == 3

    asyncio.run(scenario())


def test_failed_fetches_spend_the_allowance_too() -> None:
    idp, clock = FakeIdp([]), FakeClock()
    idp.down = True
    keys = remote(idp, clock, burst=2, refill_s=60)

    async def scenario() -> None:
        for _ in range(50):
            with pytest.raises(JwksUnavailable):
                await keys.keys("one")
        assert idp.fetches == 2

    asyncio.run(scenario())


def test_a_fetched_set_keeps_only_usable_signing_keys() -> None:
    good = rsa_key("good").jwk
    encryption = {**rsa_key("enc").jwk, "use": "enc"}
    secret = {"kty": "oct", "k": "c2VjcmV0", "kid": "s"}
    private = ec_key("private").private_jwk
    raw = json.dumps({"keys": [good, encryption, secret, private, {"kty": "XYZ"}]}).encode()
    assert kids(parse_jwks(raw)) == ["good"]
    with pytest.raises(ValueError):
        parse_jwks(b"<html>")
    with pytest.raises(ValueError):
        parse_jwks(b'{"nokeys": []}')


def test_functions_naming_one_uri_share_its_key_set() -> None:
    sets = KeySets()
    a = sets.for_issuer({"Issuer": "i", "JwksUri": URI})
    b = sets.for_issuer({"Issuer": "j", "JwksUri": URI})
    assert a is b


def test_the_fetch_reads_a_loopback_server_and_refuses_redirects_and_floods() -> None:
    served = JwksServer([rsa_key("one")])
    with served.running():
        assert kids(parse_jwks(fetch_url(served.uri))) == ["one"]

    class Odd(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Length", str(2 * 1024 * 1024))
                self.end_headers()
                self.wfile.write(b" " * (2 * 1024 * 1024))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Odd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(OSError, match="redirects to"):
            fetch_url(base + "/redirect")
        with pytest.raises(OSError, match="more than"):
            fetch_url(base + "/big")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
