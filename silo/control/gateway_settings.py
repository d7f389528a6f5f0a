"""The `Gateway` silo setting: which end users' tokens `/gateway/{function}/...` accepts, and which of their
claims names the tenant.

    {"Issuers": [{"Issuer": "https://idp.example", "Jwks": {"keys": [...]}},
                 {"Issuer": "https://other.example", "JwksUri": "https://other.example/.well-known/jwks.json"}],
     "Audience": "my-api",
     "Algorithms": ["RS256", "ES256", "EdDSA"],
     "TenantClaim": "tenant_id"}

Checked here, when the setting is given, so that a gateway never starts with keys it cannot use: each inline
key is parsed by PyJWT as the public key of an asymmetric algorithm; a private or symmetric key is refused
(the settings are readable through the API, and a shared secret would let whoever reads them mint tokens);
`none` and the HMAC algorithms cannot be named, so a token can never have its signature checked with a
public key used as an HMAC secret. What is stored is the normalised setting, defaults filled in.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from silo.control.fields import tenant_setting
from silo.errors import InvalidParameterValueException

# The asymmetric algorithms of RFC 7518 (and EdDSA of RFC 8037) that PyJWT verifies with `cryptography`.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_ALGORITHMS = ["RS256"]  # what most identity providers sign with unless told otherwise
DEFAULT_TENANT_CLAIM = "tenant_id"
KEY_TYPES = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}
# Members of a JWK that only a private (or symmetric) key has (RFC 7518 6.2.2, 6.3.2, 6.4; RFC 8037 2).
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
MIN_RSA_BITS = 2048
MAX_ISSUERS = 10
MAX_KEYS = 100
MAX_AUDIENCES = 10
MAX_TEXT = 2048
LOOPBACK_NAMES = ("localhost",)
MEMBERS = ("Issuers", "Audience", "Algorithms", "TenantClaim")


def _refuse(message: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(f"Gateway: {message}")


def validate(value: Any, *, per_tenant: bool) -> dict[str, Any] | None:
    """The normalised Gateway setting for `value` (None removes it), or InvalidParameterValueException."""
    value = tenant_setting(
        "Gateway",
        value,
        MEMBERS,
        per_tenant=per_tenant,
        why_per_tenant="the gateway maps a token's claim to the tenant id, so it serves",
    )
    if value is None:
        return None
    algorithms = _algorithms(value.get("Algorithms", DEFAULT_ALGORITHMS))
    return {
        "Issuers": _issuers(value.get("Issuers"), algorithms),
        "Audience": _audience(value.get("Audience")),
        "Algorithms": algorithms,
        "TenantClaim": _text(value.get("TenantClaim", DEFAULT_TENANT_CLAIM), "TenantClaim"),
    }


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise _refuse(f"{where} must be a string of 1 to {MAX_TEXT} characters; got {value!r}.")
    return value


def _algorithms(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise _refuse(f'Algorithms must be a non-empty list, e.g. ["RS256"]; got {value!r}.')
    out: list[str] = []
    for name in value:
        if name not in ALGORITHMS:
            why = (
                "tokens signed with it carry no signature"
                if isinstance(name, str) and name.lower() == "none"
                else "HMAC needs a secret shared with the issuer, which silo would have to keep, and its "
                "name lets a forged token be checked with a public key taken for the secret"
                if isinstance(name, str) and name.upper().startswith("HS")
                else "it is not an asymmetric JWS algorithm silo verifies"
            )
            raise _refuse(f"algorithm {name!r} is not accepted: {why}. Choose among {', '.join(ALGORITHMS)}.")
        if name not in out:
            out.append(name)
    return out


def _audience(value: Any) -> str | list[str]:
    if isinstance(value, list):
        if not 1 <= len(value) <= MAX_AUDIENCES:
            raise _refuse(f"Audience must name 1 to {MAX_AUDIENCES} audiences; got {len(value)}.")
        return [_text(item, "each Audience") for item in value]
    if value is None:
        raise _refuse("Audience is required: the `aud` a token must carry to be meant for this function.")
    return _text(value, "Audience")


def _issuers(value: Any, algorithms: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_ISSUERS:
        raise _refuse(
            f"Issuers must be a list of 1 to {MAX_ISSUERS} issuers, each "
            '{"Issuer": "https://idp.example", "Jwks": {"keys": [...]}} or {"Issuer": ..., "JwksUri": "https://..."}.'
        )
    out: list[dict[str, Any]] = []
    for item in value:
        if not isinstance(item, dict):
            raise _refuse(f"each of Issuers must be an object; got {item!r}.")
        unknown = sorted(set(item) - {"Issuer", "Jwks", "JwksUri"})
        if unknown:
            raise _refuse(f"unknown member(s) {', '.join(unknown)} in an issuer; known: Issuer, Jwks, JwksUri.")
        issuer = _text(item.get("Issuer"), "Issuer")
        if any(seen["Issuer"] == issuer for seen in out):
            raise _refuse(f"issuer {issuer!r} is listed twice.")
        if ("Jwks" in item) == ("JwksUri" in item):
            raise _refuse(
                f"issuer {issuer!r} needs exactly one of Jwks (its key set, inline) and JwksUri (where to fetch it)."
            )
        if "Jwks" in item:
            out.append({"Issuer": issuer, "Jwks": validate_jwks(item["Jwks"], algorithms, f"issuer {issuer!r}")})
        else:
            out.append({"Issuer": issuer, "JwksUri": validate_jwks_uri(item["JwksUri"])})
    return out


def validate_jwks_uri(value: Any) -> str:
    """An https URL (http only to a loopback host, for a key server on the same machine)."""
    uri = _text(value, "JwksUri")
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return uri
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return uri
    raise _refuse(
        f"JwksUri {uri!r} must be an https URL (http is accepted only for a loopback host): keys fetched in "
        "the clear could be replaced on the way, and then anyone could sign tokens."
    )


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_jwks(value: Any, algorithms: list[str], where: str) -> dict[str, Any]:
    """A JWK Set of public signing keys, each parsed by PyJWT; one at least must serve one of `algorithms`."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise _refuse(f'the Jwks of {where} must be a JWK Set, {{"keys": [...]}}, with one key at least.')
    keys = value["keys"]
    if len(keys) > MAX_KEYS:
        raise _refuse(f"the Jwks of {where} has {len(keys)} keys; at most {MAX_KEYS} are accepted.")
    kids: set[str] = set()
    usable = False
    for index, jwk in enumerate(keys):
        label = f"key {index} of {where}"
        problem = key_problem(jwk)
        if problem:
            raise _refuse(f"{label}: {problem}")
        kid = jwk.get("kid")
        if kid is not None:
            if kid in kids:
                raise _refuse(f"{label}: kid {kid!r} is used by another key of the set; each kid must be unique.")
            kids.add(kid)
        usable = usable or any(key_serves(jwk, alg) for alg in algorithms)
    if not usable:
        raise _refuse(
            f"no key of {where} can verify tokens signed with {', '.join(algorithms)}: add a key of that type, "
            "or name its algorithm in Algorithms."
        )
    return {"keys": [dict(jwk) for jwk in keys]}


def key_problem(jwk: Any) -> str | None:
    """Why `jwk` cannot verify tokens here (None: it can, for one algorithm at least)."""
    if not isinstance(jwk, dict):
        return f"a JWK must be an object; got {type(jwk).__name__}."
    kty = jwk.get("kty")
    if kty == "oct":
        return "symmetric keys (kty oct) are not accepted: whoever can read the settings could sign tokens."
    if kty not in KEY_TYPES:
        return f"kty must be one of {', '.join(KEY_TYPES)}; got {kty!r}."
    private = [m for m in PRIVATE_MEMBERS if m in jwk]
    if private:
        return (
            f"it holds private key material ({', '.join(private)}); give the public key only, "
            "and treat the private one as leaked if it was sent anywhere."
        )
    for member in ("kid", "use", "alg"):
        if member in jwk and not isinstance(jwk[member], str):
            return f"{member} must be a string."
    if jwk.get("use", "sig") != "sig":
        return f"use is {jwk['use']!r}; only signing keys (use sig) verify tokens."
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "key_ops does not include verify."
    if "alg" in jwk and jwk["alg"] not in ALGORITHMS:
        return f"alg {jwk['alg']!r} is not one of {', '.join(ALGORITHMS)}."
    candidates = [jwk["alg"]] if "alg" in jwk else [a for a in ALGORITHMS if a.startswith(KEY_TYPES[kty])]
    errors: list[str] = []
    for alg in candidates:
        try:
            parsed = usable_key(jwk, alg)
        except PyJWTError as exc:
            errors.append(str(exc))
            continue
        size = getattr(parsed.key, "key_size", None)
        if kty == "RSA" and isinstance(size, int) and size < MIN_RSA_BITS:
            return f"an RSA key of {size} bits is too short to trust; use {MIN_RSA_BITS} bits at least."
        return None
    return f"PyJWT cannot read it as a public key: {errors[0] if errors else 'unknown error'}."


def key_serves(jwk: dict[str, Any], alg: str) -> bool:
    """Whether a key that passed `key_problem` verifies signatures of `alg`."""
    if "alg" in jwk:
        return bool(jwk["alg"] == alg)
    if not alg.startswith(KEY_TYPES.get(jwk.get("kty", ""), ())):
        return False
    try:
        usable_key(jwk, alg)  # an EC key verifies only the algorithm of its curve
    except PyJWTError:
        return False
    return True


def usable_key(jwk: dict[str, Any], alg: str) -> PyJWK:
    """`jwk` as PyJWT's key for `alg`, checked as verifying would check it (an EC key's curve is that of
    `alg`); PyJWTError when it is not one."""
    key = PyJWK(jwk, algorithm=alg)
    key.Algorithm.prepare_key(key.key)
    return key
