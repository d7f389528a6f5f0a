"""Code from S3 against a real `silo serve --s3-endpoint` and moto's S3 in server mode: CreateFunction and
UpdateFunctionCode with `Code.S3Bucket/S3Key[/S3ObjectVersion]`, Lambda's errors for a missing object or
bucket and for a server without an endpoint, and PackageType Image refused."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from silo.control.s3_code import NO_ENDPOINT, S3Code, check_s3_endpoint
from silo.control.validation import S3Location
from silo.errors import InvalidParameterValueException
from tests.compat.test_control_plane import error_of, unique
from tests.compat.test_versions import code_of
from tests.support import ROLE, SiloServer, free_port, make_client, python_runtime, zip_files

# What silo signs its GetObject with (moto's S3 takes any key); the files keep botocore off this host's own.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "silo-s3-test",
    "AWS_SECRET_ACCESS_KEY": "silo-s3-test-secret",
    "AWS_EC2_METADATA_DISABLED": "true",
}
BUCKET = "silo-code"


def handler_zip(answer: str) -> bytes:
    return zip_files({"app.py": f"def handler(event, context):\n    return {answer!r}\n"})


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="uploader",
        aws_secret_access_key="uploader-secret",
    )
    client.create_bucket(Bucket=BUCKET)
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return client


@pytest.fixture(scope="module")
def s3_silo(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[SiloServer]:
    home = tmp_path_factory.mktemp("silo-s3")
    env = {
        **S3_ENV,
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-credentials"),
        "AWS_CONFIG_FILE": str(home / "no-config"),
    }
    server = SiloServer(home / "data", "--s3-endpoint", s3_endpoint, env=env)
    server.start()
    yield server
    server.stop()


def create_from_s3(client: Any, name: str, key: str, **code: str) -> dict[str, Any]:
    out: dict[str, Any] = client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"S3Bucket": BUCKET, "S3Key": key, **code},
    )
    return out


def answer_of(client: Any, name: str) -> Any:
    return json.loads(client.invoke(FunctionName=name)["Payload"].read())


def test_create_and_update_from_s3(s3: Any, s3_silo: SiloServer) -> None:
    client = make_client(s3_silo.endpoint)
    name, key = unique("s3"), unique("pkg") + ".zip"
    first, second = handler_zip("first"), handler_zip("second")
    v1 = s3.put_object(Bucket=BUCKET, Key=key, Body=first)["VersionId"]
    created = create_from_s3(client, name, key)
    assert created["CodeSha256"] == base64.b64encode(hashlib.sha256(first).digest()).decode()
    assert created["CodeSize"] == len(first)
    assert answer_of(client, name) == "first"

    s3.put_object(Bucket=BUCKET, Key=key, Body=second)
    updated = client.update_function_code(FunctionName=name, S3Bucket=BUCKET, S3Key=key)
    assert updated["CodeSha256"] == base64.b64encode(hashlib.sha256(second).digest()).decode()
    assert answer_of(client, name) == "second"
    # A version of the object, by its id.
    client.update_function_code(FunctionName=name, S3Bucket=BUCKET, S3Key=key, S3ObjectVersion=v1)
    assert answer_of(client, name) == "first"
    # The package is kept as fetched: GetFunction's Code.Location serves it.
    assert client.get_function(FunctionName=name)["Configuration"]["CodeSha256"] == created["CodeSha256"]
    s3_silo.restart()
    assert answer_of(client, name) == "first"


def test_a_missing_object_or_bucket_is_lambdas_error(s3: Any, s3_silo: SiloServer) -> None:
    client = make_client(s3_silo.endpoint)
    name = unique("s3-missing")
    no_key = (
        "InvalidParameterValueException",
        400,
        "Error occurred while GetObject. S3 Error Code: NoSuchKey. S3 Error Message: The specified key does not exist.",
    )
    assert code_of(error_of(lambda: create_from_s3(client, name, "not-there.zip"))) == no_key
    err = error_of(
        lambda: client.create_function(
            FunctionName=name,
            Runtime=python_runtime(),
            Role=ROLE,
            Handler="app.handler",
            Code={"S3Bucket": "no-such-bucket", "S3Key": "pkg.zip"},
        )
    )
    code, status, message = code_of(err)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert message.startswith("Error occurred while GetObject. S3 Error Code: NoSuchBucket. S3 Error Message: ")
    # Nothing was created.
    assert code_of(error_of(lambda: client.get_function(FunctionName=name)))[:2] == ("ResourceNotFoundException", 404)

    key = unique("pkg") + ".zip"
    s3.put_object(Bucket=BUCKET, Key=key, Body=handler_zip("kept"))
    create_from_s3(client, name, key)
    err = error_of(lambda: client.update_function_code(FunctionName=name, S3Bucket=BUCKET, S3Key="gone.zip"))
    assert code_of(err) == no_key
    assert answer_of(client, name) == "kept"
    # Not a zip at all: Lambda's message for a package it cannot unzip.
    s3.put_object(Bucket=BUCKET, Key="not-a-zip", Body=b"plain text")
    err = error_of(lambda: client.update_function_code(FunctionName=name, S3Bucket=BUCKET, S3Key="not-a-zip"))
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "Could not unzip uploaded file. Please check your file, then try to upload again.",
    )


def test_code_members_that_do_not_go_together(s3_silo: SiloServer) -> None:
    client = make_client(s3_silo.endpoint)
    err = error_of(
        lambda: client.create_function(
            FunctionName=unique("s3-both"),
            Runtime=python_runtime(),
            Role=ROLE,
            Handler="app.handler",
            Code={"S3Bucket": BUCKET, "S3Key": "k.zip", "ZipFile": handler_zip("x")},
        )
    )
    assert code_of(err)[:2] == ("InvalidParameterValueException", 400)
    assert "not both" in code_of(err)[2]


def test_without_an_endpoint_s3_code_is_refused(lambda_client: Any) -> None:
    err = error_of(lambda: create_from_s3(lambda_client, unique("s3-none"), "pkg.zip"))
    assert code_of(err) == ("InvalidParameterValueException", 400, NO_ENDPOINT)


def test_image_packages_are_refused(lambda_client: Any) -> None:
    err = error_of(
        lambda: lambda_client.create_function(
            FunctionName=unique("image"),
            Role=ROLE,
            PackageType="Image",
            Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1"},
        )
    )
    code, status, message = code_of(err)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert message.startswith("PackageType Image is not supported")
    err = error_of(
        lambda: lambda_client.create_function(
            FunctionName=unique("image-uri"),
            Runtime=python_runtime(),
            Role=ROLE,
            Handler="app.handler",
            Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1"},
        )
    )
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "Please don't provide ImageUri when updating a function with packageType Zip.",
    )


def test_a_package_over_the_limit_is_not_read(s3: Any, s3_endpoint: str) -> None:
    s3.put_object(Bucket=BUCKET, Key="big.zip", Body=b"x" * 200)
    source = S3Code(s3_endpoint, "us-east-1", limit=100, session=_session())
    with pytest.raises(InvalidParameterValueException, match="at most 100 bytes"):
        source.fetch(S3Location(BUCKET, "big.zip"))
    assert S3Code(s3_endpoint, "us-east-1", session=_session()).fetch(S3Location(BUCKET, "big.zip")) == b"x" * 200


def _session() -> Any:
    import botocore.session

    session = botocore.session.Session()
    session.set_credentials("silo-s3-test", "silo-s3-test-secret")
    return session


def test_the_endpoint_setting_is_checked() -> None:
    check_s3_endpoint("")
    check_s3_endpoint("http://127.0.0.1:9000")
    check_s3_endpoint("https://s3.us-east-1.amazonaws.com")
    for bad in ("s3.amazonaws.com", "ftp://host", "http://", "http://host/?x=1"):
        with pytest.raises(ValueError, match="s3_endpoint must be"):
            check_s3_endpoint(bad)
