"""Verifying end users' tokens: each key type accepted, and every bad token refused with its status."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from silo import errors
from silo.api.front import ServiceUnavailable
from silo.api.gateway_errors import UnauthorizedException
from silo.api.gateway_tokens import GatewayPolicy, Verified, bearer_token
from silo.api.jwks import KeySets, RemoteKeySet
from silo.control.gateway_settings import validate
from tests.gateway_support import ISSUER, SigningKey, claims, ec_key, ed_key, gateway_setting, inline_issuer, rsa_key
from tests.support import function_spec

RSA, EC, ED = rsa_key(), ec_key(), ed_key()
SPEC = function_spec()


def policy(setting: dict[str, Any] | None = None, key_sets: KeySets | None = None) -> GatewayPolicy:
    stored = validate(setting or gateway_setting(inline_issuer(RSA, EC, ED)), per_tenant=True)
    assert stored is not None
    return GatewayPolicy(stored, key_sets or KeySets())


def verify(token: str, gateway: GatewayPolicy | None = None) -> Verified:
    return asyncio.run((gateway or policy()).verify(token, SPEC))


def unauthorized(token: str, gateway: GatewayPolicy | None = None) -> str:
    with pytest.raises(UnauthorizedException) as caught:
        verify(token, gateway)
    assert caught.value.status == 401
    return caught.value.message


def forbidden(token: str, gateway: GatewayPolicy | None = None) -> str:
    with pytest.raises(errors.AccessDeniedException) as caught:
        verify(token, gateway)
    assert caught.value.status == 403
    return caught.value.message


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], sign: Any = None) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=lambda k: k.alg)
def test_a_token_of_each_key_type_verifies_and_names_its_tenant(key: SigningKey) -> None:
    verified = verify(key.sign(claims("tenant-a", email="a@example.com")))
    assert verified.tenant_id == "tenant-a"
    assert verified.claims["email"] == "a@example.com" and verified.claims["iss"] == ISSUER


def test_the_bearer_token_is_read_from_the_authorization_header() -> None:
    assert bearer_token("Bearer abc.def.ghi") == "abc.def.ghi"
    assert bearer_token("bearer   abc ") == "abc"
    for header in (None, "", "Basic dXNlcjpwYXNz", "Bearer", "AWS4-HMAC-SHA256 Credential=x"):
        with pytest.raises(UnauthorizedException) as caught:
            bearer_token(header)
        assert 'Bearer realm="silo gateway"' in caught.value.headers()["WWW-Authenticate"]


def test_what_is_no_jwt_is_refused() -> None:
    for token in ("not-a-token", "a.b.c", "x" * 20_000):
        unauthorized(token)


def test_an_unsigned_token_is_refused() -> None:
    token = hand_made({"alg": "none", "typ": "JWT"}, claims())
    assert "'none'" in unauthorized(token)


def test_an_hmac_token_keyed_with_the_public_key_is_refused() -> None:
    """The classic confusion: HS256 with the issuer's public key (which anyone has) as the secret."""
    pem = RSA.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = hand_made(
        {"alg": "HS256", "kid": RSA.kid}, claims(), lambda data: hmac.new(pem, data, hashlib.sha256).digest()
    )
    assert "'HS256'" in unauthorized(token)
    # Even with HS256 named among the algorithms, the setting itself would be refused (test_gateway_settings).


def test_a_token_whose_alg_differs_from_its_keys_is_refused() -> None:
    """A token claiming RS256 under the kid of the EC key is never checked with that key."""
    token = RSA.sign(claims(), kid=EC.kid)
    assert "no key with kid" in unauthorized(token)


def test_a_tampered_token_is_refused() -> None:
    header, _, signature = RSA.sign(claims("tenant-a")).split(".")
    forged = b64(json.dumps(claims("tenant-b")).encode())
    assert "signature" in unauthorized(f"{header}.{forged}.{signature}")


def test_a_token_signed_by_another_key_under_a_known_kid_is_refused() -> None:
    impostor = rsa_key(RSA.kid)
    assert "signature" in unauthorized(impostor.sign(claims()))
    impostor_ec = ec_key(EC.kid)
    assert "signature" in unauthorized(impostor_ec.sign(claims()))


def test_an_unknown_kid_is_refused() -> None:
    assert "no key with kid 'other'" in unauthorized(rsa_key("other").sign(claims()))


def test_without_a_kid_the_keys_of_the_algorithm_are_tried() -> None:
    token = jwt.encode(claims(), RSA.private, algorithm="RS256")
    assert verify(token).tenant_id == "tenant-a"
    stranger = jwt.encode(claims(), rsa_key().private, algorithm="RS256")
    assert "signature" in unauthorized(stranger)


def test_time_claims_are_checked_with_a_small_leeway() -> None:
    now = int(time.time())
    assert "expired" in unauthorized(RSA.sign(claims(exp=now - 120)))
    assert verify(RSA.sign(claims(exp=now - 30))).tenant_id == "tenant-a"
    assert "not valid yet" in unauthorized(RSA.sign(claims(nbf=now + 300)))
    assert verify(RSA.sign(claims(nbf=now + 30))).tenant_id == "tenant-a"
    assert "no exp claim" in unauthorized(RSA.sign(claims(exp=None)))


def test_audience_and_issuer_are_checked() -> None:
    assert "audience" in unauthorized(RSA.sign(claims(audience="another-api")))
    assert verify(RSA.sign(claims(audience=["another-api", "my-api"]))).tenant_id == "tenant-a"
    assert "no aud claim" in unauthorized(RSA.sign(claims(audience=None)))
    assert "issuer" in unauthorized(RSA.sign(claims(issuer="https://evil.example")))
    assert "issuer" in unauthorized(RSA.sign(claims(issuer=None)))


def test_an_issuers_keys_do_not_verify_another_issuers_tokens() -> None:
    other = rsa_key("other-issuer-key")
    gateway = policy(gateway_setting(inline_issuer(RSA), inline_issuer(other, issuer="https://other.example")))
    assert verify(other.sign(claims(issuer="https://other.example")), gateway).tenant_id == "tenant-a"
    assert "no key with kid" in unauthorized(other.sign(claims(issuer=ISSUER)), gateway)


def test_an_algorithm_left_out_of_the_setting_is_refused() -> None:
    gateway = policy(gateway_setting(inline_issuer(RSA, EC), Algorithms=["RS256"]))
    assert "'ES256'" in unauthorized(EC.sign(claims()), gateway)


@pytest.mark.parametrize(
    ("tenant", "why"),
    [
        (None, "has no 'tenant_id' claim"),
        (42, "is a int"),
        (["a"], "is a list"),
        ("", "length between 1 and 256"),
        ("x" * 257, "length between 1 and 256"),
        ("tenant#1", "regular expression"),
        (" padded", "begins or ends with a space"),
    ],
)
def test_a_verified_token_without_a_usable_tenant_is_forbidden(tenant: Any, why: str) -> None:
    assert why in forbidden(RSA.sign(claims(tenant)))


def test_the_tenant_claim_is_the_one_the_setting_names() -> None:
    gateway = policy(gateway_setting(inline_issuer(RSA), TenantClaim="https://saas.example/tenant"))
    token = RSA.sign(claims(None, **{"https://saas.example/tenant": "acme/eu"}))
    assert verify(token, gateway).tenant_id == "acme/eu"
    assert "https://saas.example/tenant" in forbidden(RSA.sign(claims("acme")), gateway)


def test_an_issuer_whose_keys_cannot_be_fetched_is_unavailable() -> None:
    def down(uri: str) -> bytes:
        raise OSError("connection refused")

    sets = KeySets(lambda uri: RemoteKeySet(uri, fetch=down))
    gateway = policy(gateway_setting({"Issuer": ISSUER, "JwksUri": "https://idp.example/k"}), sets)
    with pytest.raises(ServiceUnavailable) as caught:
        verify(RSA.sign(claims()), gateway)
    assert caught.value.status == 503


class CountingKeys:
    """An issuer's inline keys that count how often a verification asked for them."""

    def __init__(self, *keys: SigningKey) -> None:
        self.keys_given = [k.jwk for k in keys]
        self.asked = 0

    async def keys(self, kid: str | None) -> list[dict[str, Any]]:
        self.asked += 1
        return [k for k in self.keys_given if kid is None or k["kid"] == kid]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def counted_policy(counting: CountingKeys, clock: Clock) -> GatewayPolicy:
    stored = validate(gateway_setting(inline_issuer(RSA)), per_tenant=True)
    assert stored is not None
    gateway = GatewayPolicy(stored, KeySets(), clock=clock)
    gateway.issuers[ISSUER] = counting
    return gateway


def test_a_token_that_verified_is_taken_again_for_a_while_and_then_checked_anew() -> None:
    counting, clock = CountingKeys(RSA), Clock()
    gateway = counted_policy(counting, clock)
    token = RSA.sign(claims("tenant-a"))
    for _ in range(3):
        assert asyncio.run(gateway.verify(token, SPEC)).tenant_id == "tenant-a"
    assert counting.asked == 1
    clock.now += 61
    asyncio.run(gateway.verify(token, SPEC))
    assert counting.asked == 2


def test_a_token_is_taken_again_no_longer_than_its_expiry_and_only_byte_for_byte() -> None:
    counting, clock = CountingKeys(RSA), Clock()
    gateway = counted_policy(counting, clock)
    now = int(clock.now)
    nearly = RSA.sign(claims("tenant-a", exp=now - 30))  # expired, but within the leeway
    asyncio.run(gateway.verify(nearly, SPEC))
    clock.now = now + 31  # past exp + leeway: the cached verification is not used
    asyncio.run(gateway.verify(nearly, SPEC))
    assert counting.asked == 2
    header, payload, signature = RSA.sign(claims("tenant-a")).split(".")
    asyncio.run(gateway.verify(f"{header}.{payload}.{signature}", SPEC))
    forged = b64(json.dumps(claims("tenant-b")).encode())
    with pytest.raises(UnauthorizedException):
        asyncio.run(gateway.verify(f"{header}.{forged}.{signature}", SPEC))
