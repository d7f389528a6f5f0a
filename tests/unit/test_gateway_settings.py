"""The Gateway silo setting, checked when it is given: what it accepts, what it stores, what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from silo.control import silo_settings
from silo.control.gateway_settings import validate
from silo.errors import InvalidParameterValueException
from tests.gateway_support import AUDIENCE, ISSUER, ec_key, ed_key, gateway_setting, inline_issuer, rsa_key

PER_TENANT = {"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}}


def refused(value: Any, *, per_tenant: bool = True) -> str:
    with pytest.raises(InvalidParameterValueException) as caught:
        validate(value, per_tenant=per_tenant)
    return caught.value.message


def test_an_inline_and_a_fetched_issuer_are_stored_with_the_defaults_filled_in() -> None:
    keys = [rsa_key(), ec_key(), ed_key()]
    given = {
        "Issuers": [inline_issuer(*keys), {"Issuer": "https://other.example", "JwksUri": "https://other.example/k"}],
        "Audience": AUDIENCE,
    }
    stored = validate(given, per_tenant=True)
    assert stored == {
        "Issuers": [
            {"Issuer": ISSUER, "Jwks": {"keys": [k.jwk for k in keys]}},
            {"Issuer": "https://other.example", "JwksUri": "https://other.example/k"},
        ],
        "Audience": AUDIENCE,
        "Algorithms": ["RS256"],
        "TenantClaim": "tenant_id",
    }


def test_the_setting_travels_through_silo_settings_and_null_removes_it() -> None:
    setting = gateway_setting(inline_issuer(rsa_key()))
    settings = silo_settings.validate({"Gateway": setting}, PER_TENANT)
    assert settings["Gateway"]["Audience"] == AUDIENCE
    assert settings["Sandbox"] == "default"
    stored = {**PER_TENANT, "Silo": settings}
    assert silo_settings.current(stored)["Gateway"] == settings["Gateway"]
    assert silo_settings.validate({"Network": "outbound"}, stored)["Gateway"] == settings["Gateway"]
    assert silo_settings.validate({"Gateway": None}, stored)["Gateway"] is None
    assert silo_settings.current(PER_TENANT)["Gateway"] is None


def test_only_functions_in_tenant_isolation_mode_have_a_gateway() -> None:
    assert "tenant isolation mode" in refused(gateway_setting(inline_issuer(rsa_key())), per_tenant=False)


@pytest.mark.parametrize(
    ("algorithm", "why"),
    [("none", "carry no signature"), ("HS256", "HMAC"), ("hs512", "HMAC"), ("RS1", "not an asymmetric")],
)
def test_no_algorithm_without_an_asymmetric_signature_may_be_named(algorithm: str, why: str) -> None:
    message = refused(gateway_setting(inline_issuer(rsa_key()), Algorithms=["RS256", algorithm]))
    assert why in message and algorithm in message


def test_private_and_symmetric_keys_are_refused() -> None:
    private = rsa_key().private_jwk
    assert "private key material" in refused(gateway_setting({"Issuer": ISSUER, "Jwks": {"keys": [private]}}))
    secret = {"kty": "oct", "k": "c2VjcmV0", "kid": "s"}
    assert "symmetric" in refused(gateway_setting({"Issuer": ISSUER, "Jwks": {"keys": [secret]}}))


def test_a_short_rsa_key_is_refused() -> None:
    assert "1024 bits" in refused(gateway_setting(inline_issuer(rsa_key(bits=1024))))


def test_a_key_set_with_no_key_for_the_algorithms_is_refused() -> None:
    message = refused(gateway_setting(inline_issuer(ec_key()), Algorithms=["RS256"]))
    assert "no key" in message and "RS256" in message


def test_an_ec_key_serves_only_its_curves_algorithm() -> None:
    p256 = ec_key().jwk
    del p256["alg"]
    validate(gateway_setting({"Issuer": ISSUER, "Jwks": {"keys": [p256]}}, Algorithms=["ES256"]), per_tenant=True)
    assert "no key" in refused(gateway_setting({"Issuer": ISSUER, "Jwks": {"keys": [p256]}}, Algorithms=["ES384"]))


def test_a_key_that_is_not_one_is_refused() -> None:
    broken = {**rsa_key().jwk, "n": "AAAA"}
    assert "key 0 of issuer" in refused(gateway_setting({"Issuer": ISSUER, "Jwks": {"keys": [broken]}}))
    encryption = {**rsa_key().jwk, "use": "enc"}
    assert "signing keys" in refused(gateway_setting({"Issuer": ISSUER, "Jwks": {"keys": [encryption]}}))


def test_kids_are_unique_within_a_set() -> None:
    one, two = rsa_key("same"), rsa_key("same")
    assert "unique" in refused(gateway_setting(inline_issuer(one, two)))


@pytest.mark.parametrize(
    "uri", ["http://idp.example/jwks.json", "ftp://idp.example/k", "https://", "jwks.json", "http://10.0.0.1/k"]
)
def test_a_key_set_is_fetched_over_https_or_from_loopback_only(uri: str) -> None:
    assert "https" in refused(gateway_setting({"Issuer": ISSUER, "JwksUri": uri}))


@pytest.mark.parametrize("uri", ["http://127.0.0.1:8080/jwks.json", "http://localhost/k", "http://[::1]/k"])
def test_a_loopback_key_server_may_be_plain_http(uri: str) -> None:
    validate(gateway_setting({"Issuer": ISSUER, "JwksUri": uri}), per_tenant=True)


@pytest.mark.parametrize(
    ("value", "part"),
    [
        ("yes", "must be an object"),
        ({"Issuers": [], "Audience": "a"}, "Issuers must be a list"),
        ({"Audience": "a"}, "Issuers must be a list"),
        ({"Issuers": [{"Issuer": ISSUER}], "Audience": "a"}, "exactly one of Jwks"),
        ({"Issuers": [{"Issuer": ISSUER, "Jwks": {"keys": []}, "JwksUri": "https://x/k"}]}, "exactly one"),
        ({"Issuers": [{"Issuer": "", "JwksUri": "https://x/k"}], "Audience": "a"}, "Issuer must be a string"),
        ({"Issuers": [{"Issuer": ISSUER, "JwksUri": "https://x/k"}]}, "Audience is required"),
        ({"Issuers": [{"Issuer": ISSUER, "JwksUri": "https://x/k"}], "Audience": []}, "1 to 10 audiences"),
        ({"Issuers": [{"Issuer": ISSUER, "JwksUri": "https://x/k"}], "Audience": "a", "Leeway": 5}, "Leeway"),
        ({"Issuers": [{"Issuer": ISSUER, "JwksUri": "https://x/k", "Kid": "x"}], "Audience": "a"}, "Kid"),
        ({"Issuers": [{"Issuer": ISSUER, "JwksUri": "https://x/k"}], "Audience": "a", "TenantClaim": 1}, "TenantClaim"),
        ({"Issuers": [{"Issuer": ISSUER, "Jwks": {"keys": [{}]}}], "Audience": "a"}, "kty"),
        ({"Issuers": [{"Issuer": ISSUER, "Jwks": [1]}], "Audience": "a"}, "JWK Set"),
    ],
)
def test_malformed_settings_are_refused_saying_what_is_wrong(value: Any, part: str) -> None:
    assert part in refused(value)


def test_an_issuer_listed_twice_is_refused() -> None:
    issuer = {"Issuer": ISSUER, "JwksUri": "https://idp.example/k"}
    assert "twice" in refused(gateway_setting(issuer, issuer))
