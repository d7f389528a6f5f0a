"""Verifying an end user's bearer token for the gateway, with PyJWT (over `cryptography`), and reading the
tenant from its claim.

In order, each refusal a 401 but the last:
1. the token is a compact JWS whose header names one of the setting's `Algorithms` (never `none`, never an
   HMAC algorithm: the setting cannot name them);
2. its `iss` is one of the setting's issuers (read before the signature is checked, only to choose the
   issuer's keys: nothing else of an unverified token is used);
3. a key of that issuer verifies it: the key of its `kid`, or, without a kid, any key of the issuer's
   set that fits the algorithm; a key whose own `alg` differs from the token's is never tried, and an EC
   key only for its curve's algorithm;
4. PyJWT checks `iss`, `aud` (one of the setting's audiences), `exp` (required) and `nbf`/`iat` when
   present, with LEEWAY_S of clock skew either way;
5. the `TenantClaim` is a string that Lambda accepts as a tenant id; if not, 403.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidSignatureError,
    MissingRequiredClaimError,
    PyJWTError,
)

from silo import errors
from silo.api.front import ServiceUnavailable
from silo.api.gateway_errors import UnauthorizedException
from silo.api.invoke import check_tenant
from silo.api.jwks import JwksUnavailable, KeySet, KeySets
from silo.control.gateway_settings import usable_key
from silo.types import FunctionSpec

LEEWAY_S = 60
MAX_TOKEN_BYTES = 16 * 1024
# More keys than this without a kid to tell them apart are not tried one by one.
MAX_KEYS_TRIED = 8
# An end user sends the same token with every request until it expires: a token that verified is taken
# again, byte for byte, without PyJWT (whose parse of a token is most of the 200 us a verification
# costs here), until its `exp` (with the leeway) or for VERIFIED_FOR_S, whichever comes first.
VERIFIED_FOR_S = 60.0
MAX_VERIFIED = 4096


@dataclass(frozen=True)
class Verified:
    """A token that verified: its claims, and the tenant its claim names."""

    claims: dict[str, Any]
    tenant_id: str


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header (RFC 6750 2.1), or 401."""
    if not authorization:
        raise UnauthorizedException(
            "No token: send the end user's JWT as `Authorization: Bearer <token>`.", token_given=False
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedException(
            f"The Authorization header uses the {scheme!r} scheme; the gateway takes `Bearer <token>`.",
            token_given=False,
        )
    return token.strip()


class GatewayPolicy:
    """One function's Gateway setting, ready to verify tokens with."""

    def __init__(self, setting: dict[str, Any], key_sets: KeySets, clock: Callable[[], float] = time.time) -> None:
        self.algorithms: list[str] = list(setting["Algorithms"])
        audience = setting["Audience"]
        self.audience: list[str] = [audience] if isinstance(audience, str) else list(audience)
        self.tenant_claim: str = setting["TenantClaim"]
        self.issuers: dict[str, KeySet] = {i["Issuer"]: key_sets.for_issuer(i) for i in setting["Issuers"]}
        self._clock = clock
        self._verified: OrderedDict[str, tuple[float, Verified]] = OrderedDict()

    async def verify(self, token: str, spec: FunctionSpec) -> Verified:
        """The claims and tenant of `token`, or UnauthorizedException (401), AccessDeniedException (403),
        ServiceUnavailable (503: the issuer's keys cannot be had now)."""
        now = self._clock()
        known = self._verified.get(token)
        if known is not None:
            if now < known[0]:
                self._verified.move_to_end(token)
                return known[1]
            del self._verified[token]
        verified = await self._verify(token, spec)
        exp = verified.claims["exp"]  # required, and a number: PyJWT checked both
        self._verified[token] = (min(float(exp) + LEEWAY_S, now + VERIFIED_FOR_S), verified)
        if len(self._verified) > MAX_VERIFIED:
            self._verified.popitem(last=False)
        return verified

    async def _verify(self, token: str, spec: FunctionSpec) -> Verified:
        if len(token) > MAX_TOKEN_BYTES:
            raise UnauthorizedException(f"The token is longer than {MAX_TOKEN_BYTES} bytes.")
        try:
            # Read unverified only to choose the issuer, its key and the algorithm; checked below.
            parts = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
            header: dict[str, Any] = parts["header"]
            unverified: dict[str, Any] = parts["payload"]
        except PyJWTError:
            raise UnauthorizedException("The bearer token is not a JWT (a signed JWS in compact form).") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise UnauthorizedException(
                f"The token is signed with {alg!r}; this gateway accepts {', '.join(self.algorithms)}."
            )
        issuer = unverified.get("iss")
        key_set = self.issuers.get(issuer) if isinstance(issuer, str) else None
        if key_set is None or not isinstance(issuer, str):
            shown = repr(issuer)[:200]
            raise UnauthorizedException(f"The token's issuer (iss) {shown} is not one this gateway accepts.")
        kid = header.get("kid")
        try:
            candidates = [k for k in await key_set.keys(kid) if k.get("alg", alg) == alg]
        except JwksUnavailable as exc:
            raise ServiceUnavailable(
                f"The keys of issuer {issuer} cannot be fetched now, so its tokens cannot be checked: {exc}."
            ) from None
        if not candidates:
            which = f"with kid {repr(kid)[:200]}" if kid is not None else f"for {alg}"
            raise UnauthorizedException(f"Issuer {issuer} has no key {which}: the token cannot be verified.")
        claims = self._decode(token, alg, issuer, candidates[:MAX_KEYS_TRIED])
        return Verified(claims, self._tenant(claims, spec))

    def _decode(self, token: str, alg: str, issuer: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
        failure = "The token's signature does not verify with the issuer's keys."
        for jwk in candidates:
            try:
                key = usable_key(jwk, alg)
            except PyJWTError:
                continue
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self.audience,
                    issuer=issuer,
                    leeway=LEEWAY_S,
                    options={"require": ["exp", "iss", "aud"], "enforce_minimum_key_length": True},
                )
                return claims
            except InvalidSignatureError:
                continue
            except ExpiredSignatureError:
                raise UnauthorizedException("The token has expired (exp).") from None
            except ImmatureSignatureError:
                raise UnauthorizedException("The token is not valid yet (nbf or iat is in the future).") from None
            except InvalidAudienceError:
                raise UnauthorizedException(
                    f"The token's audience (aud) is not {' or '.join(self.audience)}: it is meant for another API."
                ) from None
            except InvalidIssuerError:
                raise UnauthorizedException("The token's issuer (iss) is not accepted.") from None
            except MissingRequiredClaimError as exc:
                raise UnauthorizedException(
                    f"The token has no {exc.claim} claim, which the gateway requires."
                ) from None
            except PyJWTError as exc:
                failure = f"The token does not verify: {exc}."
        raise UnauthorizedException(failure)

    def _tenant(self, claims: dict[str, Any], spec: FunctionSpec) -> str:
        tenant = claims.get(self.tenant_claim)
        if tenant is None:
            raise errors.AccessDeniedException(
                f"The token verified, but has no {self.tenant_claim!r} claim to name the tenant it may act for."
            )
        if not isinstance(tenant, str):
            raise errors.AccessDeniedException(
                f"The token's {self.tenant_claim!r} claim is a {type(tenant).__name__}; a tenant id is a string."
            )
        try:
            check_tenant(spec, tenant)
        except errors.InvalidParameterValueException as exc:
            raise errors.AccessDeniedException(
                f"The token's {self.tenant_claim!r} claim is no tenant id Lambda accepts: {exc.message}"
            ) from None
        return tenant
