"""The `token` provider: a short-lived JWT signed by silo that says which tenant an environment serves.

The user's own services take it as a bearer token and check it with silo's public keys, published at
`GET /.well-known/jwks.json`, to know which tenant calls them. Its claims:

    iss             silo's URL (`silo serve --token-issuer`, default http://HOST:PORT)
    aud             the Token setting's Audience (default "silo")
    sub, tenant     the tenant id
    function_arn    the function whose environment holds it (unqualified)
    environment_id  the environment (one process, one tenant, for life)
    iat, nbf, exp   when it was made, and when it ends (the setting's DurationSeconds later)
    jti             a random id

Signed with Ed25519 (JWS `EdDSA`): short signatures, fast to make and check, no parameters to get wrong.
The key is 32 random bytes in `<data-dir>/tenant-tokens.key` (0600, kept as the sealing key is); its `kid`
is its RFC 7638 thumbprint. Keep the file: replacing it makes every token signed before unverifiable.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from silo.store.sealing import load_or_create_key

FILE_NAME = "tenant-tokens.key"
ALGORITHM = "EdDSA"
DEFAULT_AUDIENCE = "silo"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenSigner:
    """Makes tenant tokens, and publishes the key that checks them."""

    def __init__(self, private_bytes: bytes, issuer: str) -> None:
        self._key = Ed25519PrivateKey.from_private_bytes(private_bytes)
        self.issuer = issuer
        public = self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        # RFC 7638: the SHA-256 of the required members, in lexical order, without spaces.
        members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64(public)}, separators=(",", ":"))
        self.kid = _b64(hashlib.sha256(members.encode()).digest())
        self._jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64(public), "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    @classmethod
    def in_directory(cls, data_dir: Path, issuer: str) -> TokenSigner:
        """The signer of a data directory, its key made (0600) on first use."""
        key = load_or_create_key(
            data_dir / FILE_NAME,
            what="the tenant tokens' signing key",
            guards="whoever reads it can sign tokens for any tenant",
            lost="every tenant token signed with it stops verifying",
        )
        return cls(key, issuer)

    def jwks(self) -> dict[str, Any]:
        """The JWK Set that verifies the tokens (public keys only)."""
        return {"keys": [dict(self._jwk)]}

    def sign(
        self, *, tenant_id: str, function_arn: str, environment_id: str, audience: str, issued_at: int, lifetime_s: int
    ) -> str:
        claims = {
            "iss": self.issuer,
            "aud": audience,
            "sub": tenant_id,
            "tenant": tenant_id,
            "function_arn": function_arn,
            "environment_id": environment_id,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + lifetime_s,
            "jti": secrets.token_hex(16),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.kid})
