"""The gateway against a real `silo serve`: end users' tokens, signed by test issuers whose keys (RSA, EC
P-256, Ed25519) are made here, given inline or served from a loopback JWKS server, invoke a function as
the tenant their claim names; every bad token is refused with its status, and a refused call starts no
environment (counted through /metrics and /silo/v1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives import serialization
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_support import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    SigningKey,
    claims,
    ec_key,
    ed_key,
    gateway_setting,
    inline_issuer,
    rsa_key,
)
from tests.support import SignedBy, SiloServer, api_client, create_python_function

HANDLER = """
import base64, json

def handler(event, context):
    mode = (event.get("queryStringParameters") or {}).get("mode")
    if mode == "raise":
        raise RuntimeError("asked to fail")
    if mode == "malformed":
        return {"hello": "not a proxy response"}
    if mode == "binary":
        return {"statusCode": 200, "headers": {"Content-Type": "image/png"},
                "body": base64.b64encode(b"\\x89PNG\\x00\\xff").decode(), "isBase64Encoded": True}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-Tenant": context.tenant_id},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": json.dumps({"tenant": context.tenant_id, "event": event}),
    }
"""


def settings_path(name: str) -> str:
    return f"/silo/v1/functions/{urllib.parse.quote(name, safe='')}/settings"


def deploy(server: SiloServer, client: Any, name: str, gateway: dict[str, Any] | None) -> None:
    create_python_function(client, name, HANDLER, per_tenant=True)
    if gateway is not None:
        stored = api_client(server.endpoint).json("PUT", settings_path(name), {"Gateway": gateway})
        assert stored["Gateway"]["Audience"] == AUDIENCE


def call(
    server: SiloServer, path: str, token: str | None = None, method: str = "GET", **kwargs: Any
) -> requests.Response:
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(method, server.endpoint + path, headers=headers, timeout=60, **kwargs)


def metric(server: SiloServer, family: str, sample: str, **labels: str) -> float:
    text = requests.get(server.endpoint + "/metrics", timeout=30).text
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        if f.name == family
        for s in f.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def tenants(server: SiloServer, name: str) -> list[str]:
    listing = api_client(server.endpoint).json("GET", f"/silo/v1/functions/{name}/tenants")
    return sorted(t["TenantId"] for t in listing["Tenants"])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_a_verified_token_invokes_the_function_as_its_tenant(
    silo_server: SiloServer, lambda_client: Any, unique_name: str
) -> None:
    keys = {"rsa": rsa_key(), "ec": ec_key(), "ed": ed_key()}
    deploy(silo_server, lambda_client, unique_name, gateway_setting(inline_issuer(*keys.values())))
    for kind, key in keys.items():
        tenant = f"tenant-{kind}"
        reply = call(
            silo_server,
            f"/gateway/{unique_name}/orders/42?x=1&x=2",
            key.sign(claims(tenant, email=f"{kind}@example.com")),
            method="POST",
            data=b'{"item": 1}',
            headers={"Content-Type": "application/json"},
        )
        assert reply.status_code == 200, reply.text
        assert reply.headers["X-Tenant"] == tenant
        assert reply.headers["Content-Type"] == "application/json"
        assert reply.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
        answer = reply.json()
        assert answer["tenant"] == tenant
        event = answer["event"]
        assert event["resource"] == "/{proxy+}" and event["path"] == "/orders/42"
        assert event["httpMethod"] == "POST" and event["body"] == '{"item": 1}'
        assert event["pathParameters"] == {"proxy": "orders/42"}
        assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"]}
        assert event["requestContext"]["authorizer"]["tenantId"] == tenant
        assert event["requestContext"]["authorizer"]["claims"]["email"] == f"{kind}@example.com"
        assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
        assert event["requestContext"]["requestId"] == reply.headers["x-amzn-RequestId"]
    assert tenants(silo_server, unique_name) == ["tenant-ec", "tenant-ed", "tenant-rsa"]
    assert metric(silo_server, "silo_invocations", "silo_invocations_total", function=unique_name) == 3

    root = call(silo_server, f"/gateway/{unique_name}", keys["rsa"].sign(claims("tenant-rsa")))
    assert root.status_code == 200 and root.json()["event"]["resource"] == "/"
    binary = call(silo_server, f"/gateway/{unique_name}/img?mode=binary", keys["ec"].sign(claims("tenant-ec")))
    assert binary.content == b"\x89PNG\x00\xff" and binary.headers["Content-Type"] == "image/png"


def test_a_failing_or_malformed_function_is_a_502(
    silo_server: SiloServer, lambda_client: Any, unique_name: str
) -> None:
    key = rsa_key()
    deploy(silo_server, lambda_client, unique_name, gateway_setting(inline_issuer(key)))
    for mode in ("raise", "malformed"):
        reply = call(silo_server, f"/gateway/{unique_name}/x?mode={mode}", key.sign(claims()))
        assert reply.status_code == 502
        assert reply.json() == {"message": "Internal server error"}
        assert reply.headers["x-amzn-ErrorType"] == "InternalServerErrorException"


def bad_requests(key: SigningKey) -> list[tuple[str, dict[str, str], int]]:
    """(what, headers, status) of requests the gateway must refuse."""
    pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': key.kid}).encode())}.{b64(json.dumps(claims()).encode())}"
    confused = f"{signing_input}.{b64(hmac.new(pem, signing_input.encode(), hashlib.sha256).digest())}"
    unsigned = f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(claims()).encode())}."
    header, _, signature = key.sign(claims("tenant-a")).split(".")
    tampered = f"{header}.{b64(json.dumps(claims('tenant-b')).encode())}.{signature}"
    now = claims()["iat"]

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    return [
        ("no token", {}, 401),
        ("another scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ("not a JWT", bearer("not-a-jwt"), 401),
        ("unsigned", bearer(unsigned), 401),
        ("HS256 keyed with the public key", bearer(confused), 401),
        ("expired", bearer(key.sign(claims(exp=now - 600))), 401),
        ("not valid yet", bearer(key.sign(claims(nbf=now + 600))), 401),
        ("another audience", bearer(key.sign(claims(audience="another-api"))), 401),
        ("another issuer", bearer(key.sign(claims(issuer="https://evil.example"))), 401),
        ("tampered", bearer(tampered), 401),
        ("signed by another key", bearer(rsa_key(key.kid).sign(claims())), 401),
        ("unknown kid", bearer(rsa_key("unknown").sign(claims())), 401),
        ("no tenant claim", bearer(key.sign(claims(None))), 403),
        ("tenant claim no tenant id", bearer(key.sign(claims("tenant#1"))), 403),
        ("tenant claim a number", bearer(key.sign(claims(42))), 403),
    ]


def test_every_bad_token_is_refused_and_starts_no_environment(
    silo_server: SiloServer, lambda_client: Any, unique_name: str
) -> None:
    key = rsa_key()
    deploy(silo_server, lambda_client, unique_name, gateway_setting(inline_issuer(key)))
    for what, headers, status in bad_requests(key):
        for method in ("GET", "POST"):
            reply = call(silo_server, f"/gateway/{unique_name}/x", method=method, headers=headers, data=b"{}")
            assert reply.status_code == status, (what, reply.text)
            body = reply.json()
            assert body.get("message") or body.get("Message"), what
            expected = "UnauthorizedException" if status == 401 else "AccessDeniedException"
            assert reply.headers["x-amzn-ErrorType"] == expected, what
            if status == 401:
                assert reply.headers["WWW-Authenticate"].startswith("Bearer"), what
    # Nothing of it reached an environment: none was made for the function, and no call ran.
    fn = {"function": unique_name}
    assert metric(silo_server, "silo_environments", "silo_environments", **fn) == 0
    assert metric(silo_server, "silo_environments_created", "silo_environments_created_total", **fn) == 0
    assert metric(silo_server, "silo_invocations", "silo_invocations_total", **fn) == 0
    assert tenants(silo_server, unique_name) == []


def test_a_function_without_a_gateway_is_answered_like_no_function(
    silo_server: SiloServer, lambda_client: Any, unique_name: str
) -> None:
    key = rsa_key()
    deploy(silo_server, lambda_client, unique_name, None)
    closed = call(silo_server, f"/gateway/{unique_name}/x", key.sign(claims()))
    missing = call(silo_server, f"/gateway/{unique_name}-nobody/x", key.sign(claims()))
    assert closed.status_code == missing.status_code == 404
    assert closed.headers["x-amzn-ErrorType"] == missing.headers["x-amzn-ErrorType"] == "NotFoundException"
    # Set, then removed: the door closes again.
    client = api_client(silo_server.endpoint)
    client.json("PUT", settings_path(unique_name), {"Gateway": gateway_setting(inline_issuer(key))})
    assert call(silo_server, f"/gateway/{unique_name}/x", key.sign(claims())).status_code == 200
    assert client.json("PUT", settings_path(unique_name), {"Gateway": None})["Gateway"] is None
    assert call(silo_server, f"/gateway/{unique_name}/x", key.sign(claims())).status_code == 404
    assert metric(silo_server, "silo_invocations", "silo_invocations_total", function=unique_name) == 1


def test_a_bad_setting_is_refused_in_lambdas_shape(
    silo_server: SiloServer, lambda_client: Any, unique_name: str
) -> None:
    deploy(silo_server, lambda_client, unique_name, None)
    reply = requests.put(
        silo_server.endpoint + settings_path(unique_name),
        json={"Gateway": gateway_setting(inline_issuer(rsa_key()), Algorithms=["HS256"])},
        auth=SignedBy(silo_server.endpoint),
        timeout=30,
    )
    assert reply.status_code == 400
    assert reply.headers["x-amzn-ErrorType"] == "InvalidParameterValueException"
    assert "HS256" in reply.json()["message"]


def test_keys_are_fetched_from_the_jwks_uri_and_again_after_a_rotation_but_not_for_every_bogus_kid(
    silo_server: SiloServer, lambda_client: Any, unique_name: str
) -> None:
    old, new = rsa_key("2024-old"), ed_key("2025-new")
    with JwksServer([old]).running() as idp:
        setting = gateway_setting({"Issuer": ISSUER, "JwksUri": idp.uri})
        deploy(silo_server, lambda_client, unique_name, setting)
        path = f"/gateway/{unique_name}/x"
        assert call(silo_server, path, old.sign(claims("tenant-a"))).status_code == 200
        assert call(silo_server, path, old.sign(claims("tenant-a"))).status_code == 200
        assert idp.requests == 1, "the key set is fetched once and cached"
        idp.keys = [new]  # the issuer rotates: the new key's kid is unknown to silo
        reply = call(silo_server, path, new.sign(claims("tenant-b")))
        assert reply.status_code == 200, reply.text
        assert reply.json()["tenant"] == "tenant-b"
        assert idp.requests == 2
        bogus = rsa_key("bogus")
        for n in range(30):
            assert call(silo_server, path, bogus.sign(claims(), kid=f"bogus-{n}")).status_code == 401
        assert idp.requests <= 3, f"30 unknown kids made silo fetch the key set {idp.requests} times"
        assert call(silo_server, path, new.sign(claims("tenant-b"))).status_code == 200


def test_a_jwks_uri_in_the_clear_to_another_host_is_refused(
    silo_server: SiloServer, lambda_client: Any, unique_name: str
) -> None:
    deploy(silo_server, lambda_client, unique_name, None)
    reply = requests.put(
        silo_server.endpoint + settings_path(unique_name),
        json={"Gateway": gateway_setting({"Issuer": ISSUER, "JwksUri": "http://idp.example/jwks.json"})},
        auth=SignedBy(silo_server.endpoint),
        timeout=30,
    )
    assert reply.status_code == 400 and "https" in reply.json()["message"]


def silo_cli(server: SiloServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "silo", *args, "--endpoint", server.endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **server.aws_env()},
    )


def test_the_silo_cli_sets_shows_and_removes_a_gateway(
    silo_server: SiloServer, lambda_client: Any, unique_name: str, tmp_path: Path
) -> None:
    key = ec_key()
    deploy(silo_server, lambda_client, unique_name, None)
    setting = tmp_path / "gateway.json"
    setting.write_text(json.dumps(gateway_setting(inline_issuer(key), Algorithms=["ES256"])))
    shown = silo_cli(silo_server, "settings", unique_name, "--gateway", f"@{setting}")
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("Gateway"))
    assert json.loads(line.split(None, 1)[1])["Algorithms"] == ["ES256"]
    assert call(silo_server, f"/gateway/{unique_name}/x", key.sign(claims())).status_code == 200
    refused = silo_cli(silo_server, "settings", unique_name, "--gateway", '{"Issuers": []}')
    assert refused.returncode == 1 and "InvalidParameterValueException" in refused.stderr
    not_json = silo_cli(silo_server, "settings", unique_name, "--gateway", "{nope")
    assert not_json.returncode == 1 and "not JSON" in not_json.stderr
    removed = silo_cli(silo_server, "settings", unique_name, "--gateway", "none")
    assert removed.returncode == 0 and "Gateway                none" in removed.stdout
    assert call(silo_server, f"/gateway/{unique_name}/x", key.sign(claims())).status_code == 404
