"""Issuers' key sets (JWKS) for the gateway: given inline in the setting, or fetched from a `JwksUri`.

A fetched set is kept for `ttl_s` and fetched again when a token names a `kid` it does not hold (the
issuer rotated its keys). Every fetch spends one token of a small bucket per URI (`burst`, refilled one
per `refill_s`), so a flood of tokens with made-up kids makes silo fetch a few times and then at most
once a `refill_s`, never once per request; concurrent requests share one fetch. A fetch that fails
keeps the keys already held (an identity provider's outage does not turn away tokens signed with them)
and is logged. The fetch is urllib's, in a worker thread, with a deadline on the whole of it and a cap
on the size; redirects are not followed, and the URI is https (or http to a loopback host), as
silo.control.gateway_settings checked.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from silo.control.gateway_settings import key_problem

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 512 * 1024
TTL_S = 15 * 60.0
BURST = 3
REFILL_S = 60.0

Fetch = Callable[[str], bytes]


class JwksUnavailable(Exception):
    """No key set is held for an issuer and none could be fetched now."""


class KeySet(Protocol):
    """The keys of one issuer: `keys(kid)` are those a token with that `kid` (or none) may be checked with."""

    async def keys(self, kid: str | None) -> list[dict[str, Any]]: ...


def select(keys: list[dict[str, Any]], kid: str | None) -> list[dict[str, Any]]:
    """The keys a token may be checked with: the one of its `kid`, or every key when it names none."""
    if kid is None:
        return keys
    return [jwk for jwk in keys if jwk.get("kid") == kid]


class InlineKeySet:
    """A key set given in the setting itself."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys: list[dict[str, Any]] = list(jwks["keys"])

    async def keys(self, kid: str | None) -> list[dict[str, Any]]:
        return select(self._keys, kid)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(
            req.full_url, code, f"redirects to {newurl}; set JwksUri to that address", headers, fp
        )


_OPENER = urllib.request.build_opener(_NoRedirect)


def fetch_url(uri: str, timeout_s: float = FETCH_TIMEOUT_S, limit: int = MAX_JWKS_BYTES) -> bytes:
    """GET `uri`'s body: a 200 within `timeout_s` in all (not per read), of at most `limit` bytes."""
    deadline = time.monotonic() + timeout_s
    request = urllib.request.Request(uri, headers={"Accept": "application/json", "User-Agent": "silo-gateway"})
    with _OPENER.open(request, timeout=timeout_s) as response:
        if response.status != 200:
            raise OSError(f"answered HTTP {response.status}")
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"took more than {timeout_s:g} s")
            chunk = response.read(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise OSError(f"sent more than {limit} bytes")
            chunks.append(chunk)


def parse_jwks(raw: bytes) -> list[dict[str, Any]]:
    """The usable signing keys of a fetched JWK Set. Keys silo cannot use (encryption keys, symmetric or
    private ones, types it does not know) are left out, as an issuer may publish such keys beside its own."""
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('is not a JWK Set ({"keys": [...]})')
    return [jwk for jwk in document["keys"] if key_problem(jwk) is None]


class RemoteKeySet:
    """The key set at a JwksUri, cached, fetched again on an unknown kid within the bucket's allowance."""

    def __init__(
        self,
        uri: str,
        *,
        fetch: Fetch = fetch_url,
        clock: Callable[[], float] = time.monotonic,
        ttl_s: float = TTL_S,
        burst: int = BURST,
        refill_s: float = REFILL_S,
    ) -> None:
        self.uri = uri
        self._fetch = fetch
        self._clock = clock
        self._ttl_s = ttl_s
        self._burst = burst
        self._refill_s = refill_s
        self._tokens = float(burst)
        self._refilled_at = clock()
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at = 0.0
        self._inflight: asyncio.Future[None] | None = None
        self.fetches = 0  # attempts made, for tests and logs

    def _may_fetch(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self._burst), self._tokens + (now - self._refilled_at) / self._refill_s)
        self._refilled_at = now
        return self._tokens >= 1

    async def keys(self, kid: str | None) -> list[dict[str, Any]]:
        stale = self._keys is None or self._clock() - self._fetched_at > self._ttl_s
        if stale or (kid is not None and not select(self._keys or [], kid)):
            await self._refresh()
        if self._keys is None:
            raise JwksUnavailable(f"the key set at {self.uri} could not be fetched; silo tries again shortly")
        return select(self._keys, kid)

    async def _refresh(self) -> None:
        if self._inflight is not None:  # another request is fetching: wait for its answer
            await asyncio.shield(self._inflight)
            return
        if not self._may_fetch():
            return
        self._tokens -= 1
        self._inflight = asyncio.get_running_loop().create_future()
        try:
            await self._fetch_once()
        finally:
            self._inflight.set_result(None)
            self._inflight = None

    async def _fetch_once(self) -> None:
        self.fetches += 1
        try:
            raw = await asyncio.to_thread(self._fetch, self.uri)
            keys = parse_jwks(raw)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            held = "keeps the keys it had" if self._keys is not None else "holds no key of it yet"
            log.warning("gateway: fetching the key set at %s failed (%s); silo %s", self.uri, exc, held)
            return
        if self._keys is None or keys != self._keys:
            log.info("gateway: the key set at %s holds %d signing key(s)", self.uri, len(keys))
        self._keys = keys
        self._fetched_at = self._clock()


class KeySets:
    """One RemoteKeySet per URI for the server's life, shared by every function that names it, so that
    changing a function's settings neither forgets keys nor resets a bucket."""

    def __init__(self, factory: Callable[[str], RemoteKeySet] = RemoteKeySet) -> None:
        self._factory = factory
        self._remote: dict[str, RemoteKeySet] = {}

    def for_issuer(self, issuer: dict[str, Any]) -> KeySet:
        if "Jwks" in issuer:
            return InlineKeySet(issuer["Jwks"])
        uri: str = issuer["JwksUri"]
        remote = self._remote.get(uri)
        if remote is None:
            remote = self._remote[uri] = self._factory(uri)
        return remote
