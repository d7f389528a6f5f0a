"""Who may call, and as which tenant: a real `silo serve` with authentication on (the default), driven by boto3,
the AWS CLI and the silo CLI with real keys. Each refusal has AWS's code; nothing changed after signing
passes; a tenant-bound key invokes only its functions, only as its tenant; a revoked or expired key is
refused from its next request; no secret is kept in clear, logged or shown."""

from __future__ import annotations

import datetime
import json
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support import (
    CREDENTIALS,
    SiloServer,
    create_python_function,
    free_port,
    payload_of,
    signed_headers,
    signed_request,
)

WHO = "def handler(event, context):\n    return {'tenant': context.tenant_id, 'event': event}\n"
AWS = str(Path(sys.executable).parent / "aws")


def client_with(server: SiloServer, key: str, secret: str, region: str = "us-east-1", **config: Any) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=server.endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config),
    )


def code_of(call: Any) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as raised:
        call()
    error = raised.value.response
    return error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"], error["Error"]["Message"]


def silo_cli(server: SiloServer, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "silo", *args, "--endpoint", server.endpoint],
        capture_output=True,
        text=True,
        timeout=120,
        env=env if env is not None else {**os.environ, **server.aws_env()},
        cwd=cwd,
    )


def aws_cli(server: SiloServer, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AWS, *args, "--endpoint-url", server.endpoint, "--region", "us-east-1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **CREDENTIALS, "AWS_PAGER": "", **env},
    )


def new_key(server: SiloServer, *args: str) -> tuple[str, str]:
    made = silo_cli(server, "keys", "create", *args, "--json")
    assert made.returncode == 0, made.stderr
    doc = json.loads(made.stdout)
    return doc["AccessKeyId"], doc["SecretAccessKey"]


@pytest.fixture()
def function(lambda_client: Any, unique_name: str) -> str:
    create_python_function(lambda_client, unique_name, WHO, per_tenant=True)
    return unique_name


def test_each_refusal_has_awss_code_in_boto3(silo_server: SiloServer, lambda_client: Any) -> None:
    key, secret = silo_server.credentials
    unsigned = client_with(silo_server, "x", "x", signature_version=UNSIGNED)
    assert code_of(unsigned.list_functions) == (
        403,
        "MissingAuthenticationTokenException",
        code_of(unsigned.list_functions)[2],
    )
    status, code, message = code_of(client_with(silo_server, "SILONOSUCHKEY0000000", secret).list_functions)
    assert (status, code, message) == (
        403,
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
    status, code, message = code_of(client_with(silo_server, key, secret + "x").list_functions)
    assert (status, code) == (403, "InvalidSignatureException")
    assert message.startswith("The request signature we calculated does not match the signature you provided.")
    assert secret not in message
    status, code, message = code_of(client_with(silo_server, key, secret, region="eu-west-1").list_functions)
    assert (status, code) == (403, "InvalidSignatureException") and "region" in message
    # The same key with the right secret is accepted.
    assert "Functions" in lambda_client.list_functions()


@pytest.fixture()
def clock_off_by() -> Iterator[list[float]]:
    """botocore's signers read the time through botocore.auth.get_current_datetime: an offset for it."""
    offset = [0.0]
    real = botocore.auth.get_current_datetime

    def shifted() -> datetime.datetime:
        return real() + datetime.timedelta(seconds=offset[0])

    botocore.auth.get_current_datetime = shifted
    yield offset
    botocore.auth.get_current_datetime = real


def test_a_stale_or_future_date_is_refused(silo_server: SiloServer, clock_off_by: list[float]) -> None:
    client = client_with(silo_server, *silo_server.credentials)
    clock_off_by[0] = -360
    status, code, message = code_of(client.list_functions)
    assert (status, code) == (403, "InvalidSignatureException")
    assert message.startswith("Signature expired: ") and "- 5 min.)" in message
    clock_off_by[0] = 360
    status, code, message = code_of(client.list_functions)
    assert (status, code) == (403, "InvalidSignatureException") and message.startswith("Signature not yet current: ")
    clock_off_by[0] = -200  # within the five minutes
    assert "Functions" in client.list_functions()


def test_each_refusal_has_awss_code_in_the_aws_cli(silo_server: SiloServer) -> None:
    key, secret = silo_server.credentials
    missing = aws_cli(silo_server, {}, "lambda", "list-functions", "--no-sign-request")
    assert missing.returncode != 0 and "(MissingAuthenticationTokenException)" in missing.stderr
    unknown = aws_cli(
        silo_server,
        {"AWS_ACCESS_KEY_ID": "SILONOSUCHKEY0000000", "AWS_SECRET_ACCESS_KEY": secret},
        "lambda",
        "list-functions",
    )
    assert unknown.returncode != 0 and "(UnrecognizedClientException)" in unknown.stderr
    assert "The security token included in the request is invalid." in unknown.stderr
    wrong = aws_cli(
        silo_server, {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": "nope"}, "lambda", "list-functions"
    )
    assert wrong.returncode != 0 and "(InvalidSignatureException)" in wrong.stderr
    right = aws_cli(silo_server, silo_server.aws_env(), "lambda", "list-functions")
    assert right.returncode == 0, right.stderr


def send(request: urllib.request.Request) -> tuple[int, str, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, "", json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["x-amzn-ErrorType"], json.loads(exc.read())


def test_what_is_changed_after_signing_is_refused(silo_server: SiloServer, function: str) -> None:
    endpoint = silo_server.endpoint
    path = f"/2015-03-31/functions/{function}/invocations"
    body = b'{"pay": 1}'

    def sent(headers: dict[str, str], data: bytes) -> tuple[int, str, dict[str, Any]]:
        return send(urllib.request.Request(endpoint + path, data=data, method="POST", headers=headers))

    signed = signed_headers(endpoint, "POST", path, body, {"X-Amz-Tenant-Id": "alice"})
    assert sent(signed, body)[0] == 200
    assert sent(signed, b'{"pay": 1000}')[:2] == (403, "InvalidSignatureException")
    assert sent({**signed, "X-Amz-Tenant-Id": "mallory"}, body)[:2] == (403, "InvalidSignatureException")
    # A tenant header added to a request signed without one is no signed header: refused, not trusted.
    untenanted = signed_headers(endpoint, "POST", path, body)
    assert sent({**untenanted, "X-Amz-Tenant-Id": "mallory"}, body)[:2] == (403, "InvalidSignatureException")
    # The body's hash is the server's own: a client's X-Amz-Content-SHA256 (which botocore signs in place of the
    # body when given) does not make another body acceptable.
    import hashlib

    claimed = {"X-Amz-Tenant-Id": "alice", "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    with_claim = signed_headers(endpoint, "POST", path, body, claimed)
    assert sent(with_claim, body)[0] == 200
    assert sent(with_claim, b'{"pay": 1000}')[:2] == (403, "InvalidSignatureException")
    # The path and the query are signed as they were sent: an ARN, percent-encoded, and a qualifier.
    arn = f"arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3A{function}"
    by_arn = f"/2015-03-31/functions/{arn}/invocations?Qualifier=%24LATEST"
    request = signed_request(endpoint, by_arn, data=body, headers={"X-Amz-Tenant-Id": "alice"})
    status, _, answer = send(request)
    assert status == 200 and answer == {"tenant": "alice", "event": {"pay": 1}}


def test_a_tenant_bound_key_invokes_only_its_functions_as_its_tenant(
    silo_server: SiloServer, lambda_client: Any, function: str
) -> None:
    other = function + "-other"
    create_python_function(lambda_client, other, WHO, per_tenant=True)
    key, secret = new_key(silo_server, "--tenant", "acme", "--function", function, "--description", "acme's app")
    acme = client_with(silo_server, key, secret)
    assert payload_of(acme.invoke(FunctionName=function))["tenant"] == "acme"
    assert payload_of(acme.invoke(FunctionName=function, TenantId="acme"))["tenant"] == "acme"
    assert acme.invoke(FunctionName=function, InvocationType="DryRun")["StatusCode"] == 204
    status, code, message = code_of(lambda: acme.invoke(FunctionName=function, TenantId="globex"))
    assert (status, code) == (403, "AccessDeniedException")
    assert key in message and "'acme'" in message and "'globex'" in message
    status, code, message = code_of(lambda: acme.invoke(FunctionName=other))
    assert (status, code) == (403, "AccessDeniedException") and key in message
    refused = [
        acme.list_functions,
        lambda: acme.get_function(FunctionName=function),
        lambda: acme.get_function_configuration(FunctionName=function),
        lambda: acme.delete_function(FunctionName=function),
        lambda: acme.update_function_configuration(FunctionName=function, Timeout=9),
        lambda: acme.put_function_concurrency(FunctionName=function, ReservedConcurrentExecutions=1),
        lambda: acme.get_function_event_invoke_config(FunctionName=function),
        acme.get_account_settings,
    ]
    for call in refused:
        status, code, message = code_of(call)
        assert (status, code) == (403, "AccessDeniedException") and key in message and "acme" in message
    # Nor may it manage keys, through the API or the silo CLI.
    keys = silo_cli(
        silo_server, "keys", "list", env={**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    )
    assert keys.returncode == 1 and "AccessDeniedException" in keys.stderr
    # The function is still there: nothing of the refused calls happened.
    assert lambda_client.get_function(FunctionName=function)["Configuration"]["Timeout"] == 3
    denied = aws_cli(
        silo_server,
        {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret},
        "lambda",
        "invoke",
        "--function-name",
        function,
        "--tenant-id",
        "globex",
        "/dev/null",
    )
    assert denied.returncode != 0 and "(AccessDeniedException)" in denied.stderr


def events_of(server: SiloServer, function: str, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        status, _, event = send(signed_request(server.endpoint, f"/silo/v1/functions/{function}/events/{request_id}"))
        assert status == 200, event
        if event["State"] == "succeeded" or time.monotonic() > deadline:
            return event
        time.sleep(0.2)


def test_an_event_through_a_tenant_bound_key_runs_as_its_tenant_and_names_the_key(
    silo_server: SiloServer, lambda_client: Any, function: str
) -> None:
    key, secret = new_key(silo_server, "--tenant", "acme", "--function", function)
    accepted = client_with(silo_server, key, secret).invoke(
        FunctionName=function, InvocationType="Event", Payload=b"{}"
    )
    assert accepted["StatusCode"] == 202
    event = events_of(silo_server, function, accepted["ResponseMetadata"]["RequestId"])
    assert event["State"] == "succeeded", event
    assert event["TenantId"] == "acme" and event["CallerKeyId"] == key
    assert json.loads(event["ResponsePayload"])["tenant"] == "acme"
    admin = lambda_client.invoke(FunctionName=function, InvocationType="Event", TenantId="any", Payload=b"{}")
    event = events_of(silo_server, function, admin["ResponseMetadata"]["RequestId"])
    assert event["CallerKeyId"] == silo_server.credentials[0]


def start_lines(server: SiloServer, function: str, request_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        path = f"/silo/v1/functions/{function}/logs?request_id={request_id}"
        status, _, page = send(signed_request(server.endpoint, path))
        assert status == 200, page
        starts = [e for e in page["Events"] if e["Message"].startswith("START ")]
        if starts or time.monotonic() > deadline:
            return starts
        time.sleep(0.2)


def test_each_call_is_recorded_with_the_key_that_made_it(
    silo_server: SiloServer, lambda_client: Any, function: str
) -> None:
    key, secret = new_key(silo_server, "--tenant", "acme", "--function", function)
    admin_key = silo_server.credentials[0]
    by_admin = lambda_client.invoke(FunctionName=function, TenantId="globex")
    by_tenant = client_with(silo_server, key, secret).invoke(FunctionName=function)
    queued = lambda_client.invoke(FunctionName=function, TenantId="initech", InvocationType="Event", Payload=b"{}")
    assert events_of(silo_server, function, queued["ResponseMetadata"]["RequestId"])["State"] == "succeeded"
    for response, caller, tenant in (
        (by_admin, admin_key, "globex"),
        (by_tenant, key, "acme"),
        (queued, admin_key, "initech"),
    ):
        starts = start_lines(silo_server, function, response["ResponseMetadata"]["RequestId"])
        assert [(s["CallerKeyId"], s["TenantId"]) for s in starts] == [(caller, tenant)]
    # Only the START line names the key: the function's own lines and the END and REPORT lines do not.
    path = f"/silo/v1/functions/{function}/logs?request_id={by_admin['ResponseMetadata']['RequestId']}"
    events = send(signed_request(silo_server.endpoint, path))[2]["Events"]
    assert [e["Message"].split(" ")[0] for e in events if "CallerKeyId" in e] == ["START"]


def test_a_revoked_or_expired_key_is_refused_at_once(silo_server: SiloServer, function: str) -> None:
    key, secret = new_key(silo_server, "--admin", "--description", "to revoke")
    client = client_with(silo_server, key, secret)
    assert "Functions" in client.list_functions()
    revoked = silo_cli(silo_server, "keys", "revoke", key)
    assert revoked.returncode == 0, revoked.stderr
    assert code_of(client.list_functions)[:2] == (403, "UnrecognizedClientException")
    listed = silo_cli(silo_server, "keys", "list", "--json")
    shown = next(k for k in json.loads(listed.stdout) if k["AccessKeyId"] == key)
    assert shown["State"] == "Revoked" and shown["RevokedBy"] == silo_server.credentials[0]

    key, secret = new_key(silo_server, "--tenant", "acme", "--function", function, "--expires", "3s")
    shown = next(
        k for k in json.loads(silo_cli(silo_server, "keys", "list", "--json").stdout) if k["AccessKeyId"] == key
    )
    until = datetime.datetime.fromisoformat(shown["ExpiresAt"].replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, until - time.time()) + 0.5)
    expired = client_with(silo_server, key, secret)
    assert code_of(lambda: expired.invoke(FunctionName=function))[:2] == (403, "UnrecognizedClientException")


def test_the_last_administrator_key_is_not_revoked(silo_server: SiloServer) -> None:
    listed = json.loads(silo_cli(silo_server, "keys", "list", "--json").stdout)
    admins = [k["AccessKeyId"] for k in listed if k["Kind"] == "admin" and k["State"] == "Active"]
    own = silo_server.credentials[0]
    for other in admins:
        if other != own:
            assert silo_cli(silo_server, "keys", "revoke", other).returncode == 0
    last = silo_cli(silo_server, "keys", "revoke", own)
    assert (
        last.returncode == 1
        and "ResourceConflictException" in last.stderr
        and "last active administrator" in last.stderr
    )


def test_no_secret_is_kept_in_clear_logged_or_shown(silo_server: SiloServer, function: str) -> None:
    key, secret = new_key(silo_server, "--tenant", "acme", "--function", function)
    admin_secret = silo_server.credentials[1]
    for path in (silo_server.credentials_file, silo_server.data_dir / "secrets.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    stored = b"".join(p.read_bytes() for p in silo_server.data_dir.glob("silo.db*"))
    assert key.encode() in stored, "the key ids are stored (the check below would pass on an empty file)"
    assert secret.encode() not in stored and admin_secret.encode() not in stored
    listed = silo_cli(silo_server, "keys", "list", "--json")
    assert key in listed.stdout and secret not in listed.stdout and admin_secret not in listed.stdout
    with urllib.request.urlopen(silo_server.endpoint + "/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    assert secret not in metrics and admin_secret not in metrics
    client_with(silo_server, key, secret).invoke(FunctionName=function)
    code_of(lambda: client_with(silo_server, key, secret + "x").invoke(FunctionName=function))
    log = silo_server.log()
    assert secret not in log and admin_secret not in log


def test_the_silo_cli_finds_the_servers_credentials(silo_server: SiloServer, tmp_path: Path) -> None:
    plain = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    nowhere = silo_cli(silo_server, "keys", "list", env={**plain, "HOME": str(tmp_path)}, cwd=tmp_path)
    assert nowhere.returncode == 1 and "MissingAuthenticationTokenException" in nowhere.stderr
    assert "found no credentials" in nowhere.stderr
    # Run from the directory that holds the server's data directory as .silo/.
    (tmp_path / ".silo").mkdir()
    (tmp_path / ".silo" / "credentials").write_bytes(silo_server.credentials_file.read_bytes())
    here = silo_cli(silo_server, "keys", "list", env={**plain, "HOME": str(tmp_path)}, cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert silo_server.credentials[0] in here.stdout
    # AWS_SHARED_CREDENTIALS_FILE and AWS_PROFILE, as boto3 and the AWS CLI read them.
    named = {**plain, "AWS_SHARED_CREDENTIALS_FILE": str(silo_server.credentials_file), "AWS_PROFILE": "silo"}
    assert silo_cli(silo_server, "keys", "list", env=named, cwd="/").returncode == 0
    other_profile = silo_cli(silo_server, "keys", "list", env={**named, "AWS_PROFILE": "nope"}, cwd="/")
    assert other_profile.returncode == 1 and "found no credentials" in other_profile.stderr
    # boto3 and the AWS CLI read the same file with no other setting than the two variables (the region is
    # in the file too).
    assert (
        aws_cli(
            silo_server,
            {"AWS_SHARED_CREDENTIALS_FILE": str(silo_server.credentials_file), "AWS_PROFILE": "silo"},
            "lambda",
            "list-functions",
        ).returncode
        == 0
    )


def test_a_restart_keeps_the_keys(tmp_path: Path) -> None:
    server = SiloServer(tmp_path / "data")
    server.start()
    try:
        first = server.credentials
        assert "administrator key" in server.log() and str(server.credentials_file) in server.log()
        key, secret = new_key(server, "--admin")
        server.restart()
        assert server.credentials == first, "the credentials file's key still works, so it is kept"
        assert "Functions" in client_with(server, key, secret).list_functions()
        # A credentials file whose key no longer works (here: removed) gets a new administrator key.
        server.credentials_file.unlink()
        server.restart()
        assert server.credentials[0] not in (first[0], key)
        assert stat.S_IMODE(server.credentials_file.stat().st_mode) == 0o600
        assert "Functions" in client_with(server, *server.credentials).list_functions()
    finally:
        server.stop()


def test_no_authentication_only_on_loopback_and_said_at_start(tmp_path: Path) -> None:
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "silo",
            "serve",
            "--auth",
            "none",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "refused"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--auth none" in refused.stderr and "loopback" in refused.stderr
    server = SiloServer(tmp_path / "data", "--auth", "none")
    server.start()
    try:
        assert "authentication is off" in server.log()
        anyone = client_with(server, "anyone", "anything", signature_version=UNSIGNED)
        assert "Functions" in anyone.list_functions()
        assert not server.credentials_file.exists()
    finally:
        server.stop()
