"""Per-tenant credentials through a real `silo serve` (the jail) and boto3: each tenant's environments get
their own tenant token and their own STS session of the function's role, from their first call on, never
before binding, never another tenant's; a warm environment gets fresh ones without a cold start; and none
of it appears in the server's log, a Tail, the logs, /metrics or the API.

STS is moto's server on a free port. The environment cannot reach it (an environment never reaches the host,
even with outbound network), so the function's own boto3 finds its credentials at the container-credentials
endpoint as any SDK would, and reports them; the test then asks STS who they are.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
import requests

from tests.support import (
    ROLE,
    TIME_SCALE,
    SiloServer,
    api_client,
    free_port,
    make_client,
    payload_of,
    python_runtime,
    zip_files,
)

SITE_PACKAGES = Path(boto3.__file__).resolve().parent.parent
# boto3 and what it imports, from the tests' own environment; of botocore's service models only STS's.
BUNDLED = ("boto3", "botocore", "jmespath", "dateutil", "urllib3", "s3transfer", "six.py")

HANDLER = """
import json, os, urllib.error, urllib.request

ENVIRONMENT = os.urandom(8).hex()


def ask(path_variable, authorization):
    url = os.environ.get(path_variable)
    if url is None:
        return None
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return [answer.status, json.loads(answer.read())]
    except urllib.error.HTTPError as exc:
        return [exc.code, json.loads(exc.read())]


# Init: no tenant yet in a stem. What the endpoint answers now, with the right token.
AT_INIT = {
    "token_variable": os.environ.get("SILO_TENANT_TOKEN"),
    "answer": ask("SILO_TENANT_TOKEN_URI", os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN")),
}


def handler(event, context):
    out = {"env": ENVIRONMENT, "tenant": context.tenant_id, "at_init": AT_INIT,
           "token": os.environ.get("SILO_TENANT_TOKEN"),
           "variables": sorted(k for k in os.environ if k.startswith(("AWS_CONTAINER", "SILO_")))}
    if event.get("probe"):
        right = os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        out["authorization"] = right
        out["no_token"] = ask("SILO_TENANT_TOKEN_URI", None)
        out["wrong_token"] = ask("SILO_TENANT_TOKEN_URI", right[:-1] + ("A" if right[-1] != "A" else "B"))
        out["aws_wrong_token"] = ask("AWS_CONTAINER_CREDENTIALS_FULL_URI", "wrong")
        out["endpoint"] = ask("SILO_TENANT_TOKEN_URI", right)
    if event.get("foreign"):  # another environment's token, shown to this one's endpoint
        out["foreign"] = [ask("SILO_TENANT_TOKEN_URI", event["foreign"]),
                          ask("AWS_CONTAINER_CREDENTIALS_FULL_URI", event["foreign"])]
    if event.get("aws"):
        import boto3  # no credentials of its own: the SDK finds the container credentials
        frozen = boto3.Session().get_credentials().get_frozen_credentials()
        out["aws"] = [frozen.access_key, frozen.secret_key, frozen.token]
    return out
"""


def bundled_code() -> bytes:
    files: dict[str, str | bytes] = {"app.py": HANDLER}
    for name in BUNDLED:
        root = SITE_PACKAGES / name
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in paths:
            rel = path.relative_to(SITE_PACKAGES).as_posix()
            if "__pycache__" in rel:
                continue
            if rel.startswith("botocore/data/") and rel.count("/") > 2 and not rel.startswith("botocore/data/sts/"):
                continue
            files[rel] = path.read_bytes()
    return zip_files(files)


@pytest.fixture(scope="module")
def sts_endpoint() -> Iterator[str]:
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30 * TIME_SCALE
    while True:
        try:
            requests.get(url, timeout=1)
            break
        except requests.ConnectionError:
            assert moto.poll() is None and time.monotonic() < deadline, "moto_server did not start"
            time.sleep(0.1)
    yield url
    moto.terminate()
    moto.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sts_endpoint: str) -> Iterator[SiloServer]:
    server = SiloServer(tmp_path_factory.mktemp("credentials") / "data", "--sts-endpoint", sts_endpoint)
    # silo's own AWS credentials, found by botocore's usual chain (moto takes any).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "silo-own-key")
        env.setenv("AWS_SECRET_ACCESS_KEY", "silo-own-secret")
        server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def code() -> bytes:
    return bundled_code()


def settings_path(name: str) -> str:
    return f"/silo/v1/functions/{urllib.parse.quote(name, safe='')}/settings"


def deploy(server: SiloServer, name: str, code: bytes, credentials: dict[str, Any] | None) -> Any:
    client = make_client(server.endpoint)
    client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": code},
        Timeout=30,
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    if credentials is not None:
        api_client(server.endpoint).json("PUT", settings_path(name), {"Credentials": credentials})
    return client


def invoke(client: Any, name: str, tenant: str, **event: Any) -> tuple[dict[str, Any], str]:
    response = client.invoke(FunctionName=name, TenantId=tenant, LogType="Tail", Payload=json.dumps(event).encode())
    tail = base64.b64decode(response["LogResult"]).decode()
    body = payload_of(response)
    assert "FunctionError" not in response, body
    return body, tail


def claims(server: SiloServer, token: str) -> dict[str, Any]:
    """The token's claims, verified with the server's published keys as a user's service would."""
    keys = requests.get(server.endpoint + "/.well-known/jwks.json", timeout=30)
    assert keys.status_code == 200
    kid = jwt.get_unverified_header(token)["kid"]
    (key,) = [jwt.PyJWK(k) for k in keys.json()["keys"] if k["kid"] == kid]
    decoded: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["EdDSA"], audience="my-services", issuer=server.endpoint
    )
    return decoded


def identity(sts_endpoint: str, aws: list[str]) -> str:
    sts = boto3.client(
        "sts",
        endpoint_url=sts_endpoint,
        region_name="us-east-1",
        aws_access_key_id=aws[0],
        aws_secret_access_key=aws[1],
        aws_session_token=aws[2],
    )
    arn: str = sts.get_caller_identity()["Arn"]
    return arn


def test_the_setting_through_the_api_and_the_cli(server: SiloServer, code: bytes) -> None:
    name = f"creds-cli-{os.urandom(3).hex()}"
    deploy(server, name, code, None)
    client = api_client(server.endpoint)
    assert client.json("GET", settings_path(name))["Credentials"] is None
    env = {**os.environ, **server.aws_env(), "AWS_ENDPOINT_URL_LAMBDA": server.endpoint}
    shown = subprocess.run(
        [sys.executable, "-m", "silo", "settings", name, "--credentials", '{"Token": {"DurationSeconds": 120}}'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert '"DurationSeconds":120' in shown.stdout
    assert client.json("GET", settings_path(name))["Credentials"] == {
        "Token": {"DurationSeconds": 120, "Audience": "silo"}
    }
    refused = subprocess.run(
        [sys.executable, "-m", "silo", "settings", name, "--credentials", '{"Sts": {"DurationSeconds": 60}}'],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "InvalidParameterValueException" in refused.stderr and "900 to 43200" in refused.stderr
    removed = subprocess.run(
        [sys.executable, "-m", "silo", "settings", name, "--credentials", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert removed.returncode == 0 and "Credentials            none" in removed.stdout


def test_each_tenant_gets_its_own_token_and_sts_session_and_a_stem_gets_them_once_bound(
    server: SiloServer, sts_endpoint: str, code: bytes
) -> None:
    name = f"creds-{os.urandom(3).hex()}"
    client = deploy(
        server,
        name,
        code,
        {"Token": {"DurationSeconds": 600, "Audience": "my-services"}, "Sts": {"DurationSeconds": 900}},
    )
    seen: list[str] = []
    tails: list[str] = []
    a, tail = invoke(client, name, "tenant-a", probe=True, aws=True)
    tails.append(tail)
    assert a["variables"] == [
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "SILO_TENANT_TOKEN",
        "SILO_TENANT_TOKEN_URI",
    ]
    a_claims = claims(server, a["token"])
    assert a_claims["tenant"] == "tenant-a" and a_claims["environment_id"]
    assert a_claims["function_arn"].endswith(f":function:{name}")
    # The endpoint answers the environment's own token alone.
    assert a["no_token"][0] == 403 and a["wrong_token"][0] == 403 and a["aws_wrong_token"][0] == 403
    assert a["endpoint"][0] == 200 and claims(server, a["endpoint"][1]["Token"])["tenant"] == "tenant-a"
    a_arn = identity(sts_endpoint, a["aws"])
    assert ":assumed-role/silo-test/tenant-a." in a_arn, a_arn
    seen += [a["token"], a["endpoint"][1]["Token"], a["authorization"], *a["aws"]]

    time.sleep(1.0 * TIME_SCALE)  # a stem grows after a new tenant's call
    b, tail = invoke(client, name, "tenant-b", probe=True, aws=True)
    tails.append(tail)
    assert "(stem)" in tail, tail
    # Its init ran for nobody: no token then, and the endpoint had nothing to give.
    assert b["at_init"]["token_variable"] is None
    assert b["at_init"]["answer"][0] == 404 and b["at_init"]["answer"][1]["errorType"] == "NotBound"
    b_claims = claims(server, b["token"])
    assert b_claims["tenant"] == "tenant-b" and b_claims["environment_id"] != a_claims["environment_id"]
    b_arn = identity(sts_endpoint, b["aws"])
    assert ":assumed-role/silo-test/tenant-b." in b_arn, b_arn
    assert b["aws"][0] != a["aws"][0] and b["aws"][1] != a["aws"][1]
    assert b["authorization"] != a["authorization"]
    seen += [b["token"], b["endpoint"][1]["Token"], b["authorization"], *b["aws"]]

    # Tenant A again: its warm environment, its own credentials still.
    again, tail = invoke(client, name, "tenant-a", aws=True)
    tails.append(tail)
    assert again["env"] == a["env"] and "Init Duration" not in tail
    assert again["aws"][0] == a["aws"][0] and claims(server, again["token"])["tenant"] == "tenant-a"

    assert_nowhere(server, name, seen, tails)

    # B's environment, shown A's environment's token, gives nothing: the token is A's environment's alone.
    stolen, _ = invoke(client, name, "tenant-b", foreign=a["authorization"])
    assert [answer[0] for answer in stolen["foreign"]] == [403, 403]


def assert_nowhere(server: SiloServer, name: str, secrets: list[str], tails: list[str]) -> None:
    """None of `secrets` in the server's log, the calls' Tails, the stored logs, /metrics or the API."""
    api = api_client(server.endpoint)
    client = make_client(server.endpoint)
    places = {
        "the server's log": server.log(),
        "a Tail": "\n".join(tails),
        "the logs": json.dumps(api.json("GET", f"/silo/v1/functions/{name}/logs")),
        "/metrics": requests.get(server.endpoint + "/metrics", timeout=30).text,
        "the settings": json.dumps(api.json("GET", settings_path(name))),
        "GetFunction": json.dumps(client.get_function(FunctionName=name), default=str),
        "the tenants": json.dumps(api.json("GET", f"/silo/v1/functions/{name}/tenants")),
        "the server": json.dumps(api.json("GET", "/silo/v1/server")),
    }
    for secret in secrets:
        assert len(secret) >= 16
        for where, text in places.items():
            assert secret not in text, f"a credential appears in {where}"


def test_a_warm_environment_gets_a_fresh_token_without_a_cold_start(server: SiloServer, code: bytes) -> None:
    name = f"creds-warm-{os.urandom(3).hex()}"
    client = deploy(server, name, code, {"Token": {"DurationSeconds": 60, "Audience": "my-services"}})
    first, _ = invoke(client, name, "tenant-w")
    issued = claims(server, first["token"])
    # Renewed once half its life has passed: wait for that, then call the same warm environment.
    time.sleep(max(0.0, issued["iat"] + 31 - time.time()))
    second, tail = invoke(client, name, "tenant-w")
    assert second["env"] == first["env"] and "Init Duration" not in tail, "the same warm environment"
    renewed = claims(server, second["token"])
    assert second["token"] != first["token"]
    assert renewed["iat"] > issued["iat"] and renewed["exp"] > issued["exp"]
    assert renewed["environment_id"] == issued["environment_id"] and renewed["tenant"] == "tenant-w"
    assert "AWS_CONTAINER_CREDENTIALS_FULL_URI" not in second["variables"], "no Sts provider, no AWS variables"


def test_a_call_whose_credentials_cannot_be_had_fails_before_the_function_runs(tmp_path: Path, code: bytes) -> None:
    # An STS endpoint nobody answers at: the call fails with Lambda's ServiceException, and the function,
    # which would have answered, never runs (no Tail, no log line of it): never without its credentials.
    server = SiloServer(tmp_path / "data", "--sts-endpoint", f"http://127.0.0.1:{free_port()}")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "silo-own-key")
        env.setenv("AWS_SECRET_ACCESS_KEY", "silo-own-secret")
        server.start()
    try:
        name = f"creds-down-{os.urandom(3).hex()}"
        client = deploy(server, name, code, {"Sts": {}})
        with pytest.raises(client.exceptions.ServiceException) as caught:
            client.invoke(FunctionName=name, TenantId="tenant-d", Payload=b"{}")
        message = str(caught.value)
        assert "silo could not reach STS" in message and "did not run" in message
        logs = api_client(server.endpoint).json("GET", f"/silo/v1/functions/{name}/logs")
        assert "START RequestId" not in json.dumps(logs)
        assert "could not be asked for tenant 'tenant-d'" in server.log()
    finally:
        server.stop()
