"""The control plane as boto3 and the AWS CLI see it, against a real `silo serve`.

Fixtures (tests/compat/conftest.py): `silo_server` (.endpoint, .data_dir, .restart()), `lambda_client`
(boto3, us-east-1) and `aws_cli(*args)`. The server lives for the whole session, so every test uses
its own function names.
"""

from __future__ import annotations

import io
import json
import stat
import subprocess
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.support import credentials_of

ROLE = "arn:aws:iam::123456789012:role/lambda-role"
RUNTIME = "provided.al2023"  # always available: it needs nothing from the host
TENANCY = {"TenantIsolationMode": "PER_TENANT"}

AwsCli = Callable[..., "subprocess.CompletedProcess[str]"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_zip(*members: tuple[str | zipfile.ZipInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members or (("bootstrap", b"#!/bin/sh\necho hi\n"),):
            # A fixed timestamp keeps the bytes (and so the sha) the same from call to call.
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)) if isinstance(name, str) else name
            zf.writestr(info, data)
    return buf.getvalue()


def create(client: Any, name: str, code: bytes | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = client.create_function(
        FunctionName=name,
        Runtime=RUNTIME,
        Role=ROLE,
        Handler="bootstrap",
        Code={"ZipFile": code or make_zip()},
        **extra,
    )
    return out


def error_of(call: Callable[[], Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as info:
        call()
    response: dict[str, Any] = info.value.response
    return response


def scratch_is_empty(server: Any) -> bool:
    scratch = Path(server.data_dir) / "code" / "scratch"
    return not scratch.exists() or not any(scratch.iterdir())


def test_create_get_list_delete(lambda_client: Any) -> None:
    name = unique("crud")
    created = create(lambda_client, name, Description="hello", MemorySize=256, Timeout=10)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert (created["State"], created["LastUpdateStatus"], created["Version"]) == ("Active", "Successful", "$LATEST")
    assert (created["MemorySize"], created["Timeout"], created["Description"]) == (256, 10, "hello")
    assert created["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{name}"}
    assert created["TracingConfig"] == {"Mode": "PassThrough"}
    assert created["EphemeralStorage"] == {"Size": 512}
    assert created["PackageType"] == "Zip"

    got = lambda_client.get_function(FunctionName=name)
    assert got["Configuration"]["CodeSha256"] == created["CodeSha256"]
    assert got["Code"]["RepositoryType"] == "S3"
    with urllib.request.urlopen(got["Code"]["Location"]) as resp:
        assert resp.read() == make_zip()
    assert lambda_client.get_function_configuration(FunctionName=created["FunctionArn"])["FunctionName"] == name

    names = [
        f["FunctionName"]
        for page in lambda_client.get_paginator("list_functions").paginate()
        for f in page["Functions"]
    ]
    assert name in names

    deleted = lambda_client.delete_function(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    err = error_of(lambda: lambda_client.get_function(FunctionName=name))
    assert err["Error"]["Code"] == "ResourceNotFoundException"
    assert err["Error"]["Message"] == f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{name}"


def test_duplicate_name_conflicts(lambda_client: Any) -> None:
    name = unique("dup")
    create(lambda_client, name)
    err = error_of(lambda: create(lambda_client, name))
    assert err["Error"]["Code"] == "ResourceConflictException"
    assert err["Error"]["Message"] == f"Function already exist: {name}"


def test_pagination_across_pages(lambda_client: Any) -> None:
    prefix = unique("page")
    names = sorted(f"{prefix}-{i:02d}" for i in range(57))
    for n in names:
        create(lambda_client, n)
    first = lambda_client.list_functions()
    assert len(first["Functions"]) <= 50
    seen: list[str] = []
    pages = 0
    for page in lambda_client.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 20}):
        pages += 1
        seen.extend(f["FunctionName"] for f in page["Functions"])
    assert pages >= 3
    assert seen == sorted(seen)
    assert [s for s in seen if s.startswith(prefix)] == names
    small = lambda_client.list_functions(MaxItems=5)
    assert len(small["Functions"]) == 5
    assert "NextMarker" in small


def test_tenancy_config_is_reported_in_every_configuration(lambda_client: Any) -> None:
    iso, plain = unique("iso"), unique("plain")
    views = [create(lambda_client, iso, TenancyConfig=TENANCY)]
    plain_created = create(lambda_client, plain)
    views.append(lambda_client.get_function(FunctionName=iso)["Configuration"])
    views.append(lambda_client.get_function_configuration(FunctionName=iso))
    listed = {
        f["FunctionName"]: f
        for page in lambda_client.get_paginator("list_functions").paginate()
        for f in page["Functions"]
    }
    views.append(listed[iso])
    views.append(lambda_client.update_function_code(FunctionName=iso, ZipFile=make_zip(("bootstrap", b"v2"))))
    views.append(lambda_client.update_function_configuration(FunctionName=iso, MemorySize=512))
    for view in views:
        assert view["TenancyConfig"] == TENANCY
    assert "TenancyConfig" not in plain_created
    assert "TenancyConfig" not in listed[plain]
    assert "TenancyConfig" not in lambda_client.get_function(FunctionName=plain)["Configuration"]
    assert "TenancyConfig" not in lambda_client.get_function_configuration(FunctionName=plain)


def test_tenancy_config_is_immutable(lambda_client: Any, silo_server: Any) -> None:
    name = unique("immut")
    create(lambda_client, name)
    with pytest.raises(ParamValidationError, match='Unknown parameter in input: "TenancyConfig"'):
        lambda_client.update_function_configuration(FunctionName=name, TenancyConfig=TENANCY)
    # What boto3 refuses to send, a raw (signed) request can; the server refuses it too.
    status, headers, body = raw_request(
        silo_server.endpoint,
        "PUT",
        f"/2015-03-31/functions/{name}/configuration",
        json.dumps({"TenancyConfig": TENANCY}).encode(),
    )
    assert status == 400
    assert headers["x-amzn-errortype"] == "InvalidParameterValueException"
    assert "TenancyConfig" in json.loads(body)["message"]
    assert "TenancyConfig" not in lambda_client.get_function_configuration(FunctionName=name)


def test_bad_tenancy_mode_is_a_validation_error(silo_server: Any) -> None:
    body = {
        "FunctionName": unique("badmode"),
        "Runtime": RUNTIME,
        "Role": ROLE,
        "Handler": "bootstrap",
        "Code": {"ZipFile": "UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA=="},
        "TenancyConfig": {"TenantIsolationMode": "SHARED"},
    }
    status, headers, raw = raw_request(silo_server.endpoint, "POST", "/2015-03-31/functions", json.dumps(body).encode())
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationException"
    assert json.loads(raw)["message"] == (
        "1 validation error detected: Value 'SHARED' at 'tenancyConfig.tenantIsolationMode' failed to satisfy "
        "constraint: Member must satisfy enum value set: [PER_TENANT]"
    )


def test_waiters(lambda_client: Any) -> None:
    name = unique("wait")
    fast = {"Delay": 1, "MaxAttempts": 3}
    create(lambda_client, name)
    lambda_client.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig=fast)
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=fast)
    lambda_client.update_function_configuration(FunctionName=name, Timeout=7)
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=fast)
    lambda_client.get_waiter("function_updated").wait(FunctionName=name, WaiterConfig=fast)
    lambda_client.get_waiter("function_active").wait(FunctionName=name, WaiterConfig=fast)


def test_updates_with_revision_ids(lambda_client: Any) -> None:
    name = unique("upd")
    created = create(lambda_client, name, Environment={"Variables": {"GREETING": "hi"}})
    assert created["Environment"] == {"Variables": {"GREETING": "hi"}}
    err = error_of(
        lambda: lambda_client.update_function_configuration(FunctionName=name, Timeout=5, RevisionId="stale")
    )
    assert err["Error"]["Code"] == "PreconditionFailedException"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 412
    config = lambda_client.update_function_configuration(
        FunctionName=name, Timeout=5, RevisionId=created["RevisionId"], Environment={"Variables": {"A1": "b"}}
    )
    assert config["Timeout"] == 5
    assert config["Environment"] == {"Variables": {"A1": "b"}}
    assert config["RevisionId"] != created["RevisionId"]
    code = lambda_client.update_function_code(
        FunctionName=name, ZipFile=make_zip(("bootstrap", b"v2")), RevisionId=config["RevisionId"]
    )
    assert code["CodeSha256"] != created["CodeSha256"]
    assert code["Timeout"] == 5
    err = error_of(
        lambda: lambda_client.update_function_code(
            FunctionName=name, ZipFile=make_zip(("bootstrap", b"v3")), RevisionId=config["RevisionId"]
        )
    )
    assert err["Error"]["Code"] == "PreconditionFailedException"


def test_validation_errors_reach_boto3(lambda_client: Any) -> None:
    err = error_of(
        lambda: lambda_client.create_function(
            FunctionName=unique("v"), Runtime=RUNTIME, Role="r1", Handler="bootstrap", Code={"ZipFile": make_zip()}
        )
    )
    assert err["Error"]["Code"] == "ValidationException"
    assert err["Error"]["Message"].startswith("1 validation error detected: Value 'r1' at 'role'")
    err = error_of(lambda: create(lambda_client, unique("v"), Environment={"Variables": {"AWS_REGION": "x"}}))
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert err["Error"]["Message"].endswith("Reserved keys used in this request: AWS_REGION")
    err = error_of(lambda: create(lambda_client, unique("v"), MemorySize=20000))
    assert err["Error"]["Code"] == "ValidationException"
    err = error_of(
        lambda: lambda_client.create_function(
            FunctionName=unique("v"), Runtime="cobol85", Role=ROLE, Handler="h", Code={"ZipFile": make_zip()}
        )
    )
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert err["Error"]["Message"].startswith("Value cobol85 at 'runtime' failed to satisfy constraint")


def test_account_settings(lambda_client: Any) -> None:
    before = lambda_client.get_account_settings()
    assert before["AccountLimit"]["CodeSizeUnzipped"] == 262144000
    assert before["AccountLimit"]["CodeSizeZipped"] == 52428800
    assert before["AccountLimit"]["ConcurrentExecutions"] == 1000
    create(lambda_client, unique("acct"))
    after = lambda_client.get_account_settings()
    assert after["AccountUsage"]["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    assert after["AccountUsage"]["TotalCodeSize"] > before["AccountUsage"]["TotalCodeSize"]


def test_state_and_code_survive_a_restart(lambda_client: Any, silo_server: Any) -> None:
    iso, plain = unique("keep-iso"), unique("keep")
    create(lambda_client, iso, TenancyConfig=TENANCY)
    before = create(lambda_client, plain, Environment={"Variables": {"K1": "v"}})
    silo_server.restart()
    after = lambda_client.get_function(FunctionName=plain)
    assert after["Configuration"]["RevisionId"] == before["RevisionId"]
    assert after["Configuration"]["Environment"] == {"Variables": {"K1": "v"}}
    assert lambda_client.get_function_configuration(FunctionName=iso)["TenancyConfig"] == TENANCY
    with urllib.request.urlopen(after["Code"]["Location"]) as resp:
        assert resp.read() == make_zip()


def _symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def _bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("bomb", "w") as member:
        chunk = b"\0" * (1 << 20)
        for _ in range(252):
            member.write(chunk)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda: b"definitely not a zip", "InvalidParameterValueException",
         "Could not unzip uploaded file. Please check your file, then try to upload again."),
        (lambda: make_zip(("../escape", b"x")), "InvalidParameterValueException", None),
        (lambda: make_zip(("/etc/escape", b"x")), "InvalidParameterValueException", None),
        (lambda: make_zip(_symlink("link", "../../../etc/passwd")), "InvalidParameterValueException", None),
        (_bomb, "InvalidParameterValueException", "Unzipped size must be smaller than 262144000 bytes"),
        (lambda: b"\0" * 52428801, "RequestEntityTooLargeException", "Zipped size must be smaller than 52428800 bytes"),
    ],
    ids=["corrupt", "dotdot", "absolute", "symlink-out", "bomb", "zipped-too-large"],
)  # fmt: skip
def test_bad_zips_are_refused_and_the_server_keeps_serving(
    lambda_client: Any, silo_server: Any, make: Callable[[], bytes], code: str, message: str | None
) -> None:
    name = unique("badzip")
    err = error_of(lambda: create(lambda_client, name, code=make()))
    assert err["Error"]["Code"] == code
    if message is not None:
        assert err["Error"]["Message"] == message
    assert scratch_is_empty(silo_server)
    missing = error_of(lambda: lambda_client.get_function(FunctionName=name))
    assert missing["Error"]["Code"] == "ResourceNotFoundException"
    # The server is still up, and a good function can still be created.
    good = unique("aftergood")
    create(lambda_client, good)
    assert lambda_client.get_function(FunctionName=good)["Configuration"]["State"] == "Active"


def test_bad_zip_on_update_keeps_the_old_code(lambda_client: Any) -> None:
    name = unique("badupd")
    created = create(lambda_client, name)
    err = error_of(lambda: lambda_client.update_function_code(FunctionName=name, ZipFile=b"nope"))
    assert err["Error"]["Code"] == "InvalidParameterValueException"
    assert lambda_client.get_function_configuration(FunctionName=name)["CodeSha256"] == created["CodeSha256"]


def test_aws_cli_create_get_list_delete(aws_cli: AwsCli, tmp_path: Path) -> None:
    name = unique("cli")
    package = tmp_path / "code.zip"
    package.write_bytes(make_zip())
    created = aws_cli(
        "lambda", "create-function", "--function-name", name, "--runtime", RUNTIME, "--role", ROLE,
        "--handler", "bootstrap", "--zip-file", f"fileb://{package}",
        "--tenancy-config", "TenantIsolationMode=PER_TENANT", "--output", "json",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["TenancyConfig"] == TENANCY

    got = aws_cli("lambda", "get-function", "--function-name", name, "--output", "json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["Configuration"]["FunctionName"] == name

    listed = aws_cli("lambda", "list-functions", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert name in [f["FunctionName"] for f in json.loads(listed.stdout)["Functions"]]

    deleted = aws_cli("lambda", "delete-function", "--function-name", name)
    assert deleted.returncode == 0, deleted.stderr

    missing = aws_cli("lambda", "get-function", "--function-name", name)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr
    assert f"Function not found: arn:aws:lambda:us-east-1:000000000000:function:{name}" in missing.stderr


def test_aws_cli_account_settings(aws_cli: AwsCli) -> None:
    out = aws_cli("lambda", "get-account-settings", "--output", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["AccountLimit"]["CodeSizeZipped"] == 52428800


def raw_request(endpoint: str, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """A SigV4-signed request with a body boto3 would refuse to build."""
    request = botocore.awsrequest.AWSRequest(
        method=method, url=endpoint + path, data=body, headers={"Content-Type": "application/json"}
    )
    credentials = botocore.credentials.Credentials(*credentials_of(endpoint))
    botocore.auth.SigV4Auth(credentials, "lambda", "us-east-1").add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(prepared.url, data=body, method=method, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
