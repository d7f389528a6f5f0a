"""Test issuers for the gateway: signing keys made in the test (RSA, EC P-256, Ed25519), their JWKs, tokens
signed with them, and a JWKS served over HTTP on loopback whose keys can be rotated."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

ISSUER = "https://idp.example"
AUDIENCE = "my-api"


@dataclass
class SigningKey:
    """A private key, its public JWK (with `kid` and `alg`) and the algorithm it signs with."""

    alg: str
    private: Any
    kid: str

    @property
    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        out: dict[str, Any] = json.loads(_to_jwk(self.alg, public))
        out.update(kid=self.kid, alg=self.alg, use="sig")
        return out

    @property
    def private_jwk(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(_to_jwk(self.alg, self.private))
        out.update(kid=self.kid)
        return out

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header})


def _to_jwk(alg: str, key: Any) -> str:
    if alg[:2] in ("RS", "PS"):
        return RSAAlgorithm.to_jwk(key)
    if alg[:2] == "ES":
        return ECAlgorithm.to_jwk(key)
    return OKPAlgorithm.to_jwk(key)


def rsa_key(kid: str = "rsa-1", bits: int = 2048) -> SigningKey:
    return SigningKey("RS256", rsa.generate_private_key(public_exponent=65537, key_size=bits), kid)


def ec_key(kid: str = "ec-1") -> SigningKey:
    return SigningKey("ES256", ec.generate_private_key(ec.SECP256R1()), kid)


def ed_key(kid: str = "ed-1") -> SigningKey:
    return SigningKey("EdDSA", ed25519.Ed25519PrivateKey.generate(), kid)


def claims(
    tenant: Any = "tenant-a", *, issuer: str | None = ISSUER, audience: Any = AUDIENCE, **more: Any
) -> dict[str, Any]:
    """A token's claims, valid for the next five minutes; `None` values are left out."""
    now = int(time.time())
    out = {"iss": issuer, "aud": audience, "sub": "user-1", "iat": now, "exp": now + 300, "tenant_id": tenant}
    out.update(more)
    return {k: v for k, v in out.items() if v is not None}


def gateway_setting(*issuers: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "Issuers": list(issuers),
        "Audience": AUDIENCE,
        "Algorithms": ["RS256", "ES256", "EdDSA"],
        "TenantClaim": "tenant_id",
        **more,
    }


def inline_issuer(*keys: SigningKey, issuer: str = ISSUER) -> dict[str, Any]:
    return {"Issuer": issuer, "Jwks": {"keys": [k.jwk for k in keys]}}


class JwksServer:
    """A key set served at http://127.0.0.1:<port>/jwks.json; `keys` may be replaced (a rotation), and
    `requests` counts the fetches."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps({"keys": [k.jwk for k in owner.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join()
