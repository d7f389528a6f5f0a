"""Code signing against a real `silo serve`: keys made here, registered with `silo signing-profile add`, zips
signed with `silo sign`, the code signing configuration operations with boto3, and deployments of code and
layers refused (Enforce) or let through with a warning (Warn)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.compat.test_control_plane import error_of, unique
from tests.compat.test_layers import code_of, invoke, layer_arn
from tests.support import ROLE, SiloServer, python_runtime, zip_files

APP = "def handler(event, context):\n    return 'signed code runs'\n"


def silo(server: SiloServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "silo", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**server.aws_env(), "PATH": "/usr/bin:/bin"},
    )


def make_key(directory: Path, name: str) -> Path:
    path = directory / f"{name}.pem"
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return path


def register(server: SiloServer, name: str, key: Path) -> str:
    out = silo(server, "signing-profile", "add", name, str(key), "--endpoint", server.endpoint)
    assert out.returncode == 0, out.stderr
    return next(word for word in out.stdout.split() if word.startswith("arn:aws:signer:"))


def signed_zip(server: SiloServer, tmp_path: Path, files: dict[str, str | bytes], key: Path, profile: str) -> bytes:
    package = tmp_path / f"{unique('pkg')}.zip"
    package.write_bytes(zip_files(files))
    out = silo(server, "sign", str(package), "--key", str(key), "--profile", profile)
    assert out.returncode == 0, out.stderr
    return package.read_bytes()


@pytest.fixture(scope="module")
def publisher(silo_server: SiloServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, str]:
    """A registered signing profile: its name, its private key file, its version ARN."""
    name = unique("release").replace("-", "_")
    key = make_key(tmp_path_factory.mktemp("keys"), name)
    return name, key, register(silo_server, name, key)


def create(client: Any, name: str, code: bytes, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = client.create_function(
        FunctionName=name, Runtime=python_runtime(), Role=ROLE, Handler="app.handler", Code={"ZipFile": code}, **extra
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    return out


def config_of(client: Any, profile_arn: str, policy: str) -> str:
    out = client.create_code_signing_config(
        Description="release builds",
        AllowedPublishers={"SigningProfileVersionArns": [profile_arn]},
        CodeSigningPolicies={"UntrustedArtifactOnDeployment": policy},
    )
    arn: str = out["CodeSigningConfig"]["CodeSigningConfigArn"]
    return arn


def test_code_signing_config_operations(lambda_client: Any, publisher: tuple[str, Path, str]) -> None:
    created = lambda_client.create_code_signing_config(
        Description="first", AllowedPublishers={"SigningProfileVersionArns": [publisher[2]]}
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    config = created["CodeSigningConfig"]
    arn = config["CodeSigningConfigArn"]
    assert arn == f"arn:aws:lambda:us-east-1:000000000000:code-signing-config:{config['CodeSigningConfigId']}"
    assert config["CodeSigningPolicies"] == {"UntrustedArtifactOnDeployment": "Warn"}
    assert lambda_client.get_code_signing_config(CodeSigningConfigArn=arn)["CodeSigningConfig"] == config
    updated = lambda_client.update_code_signing_config(
        CodeSigningConfigArn=arn, CodeSigningPolicies={"UntrustedArtifactOnDeployment": "Enforce"}
    )["CodeSigningConfig"]
    assert updated["CodeSigningPolicies"]["UntrustedArtifactOnDeployment"] == "Enforce"
    assert updated["AllowedPublishers"] == config["AllowedPublishers"] and updated["Description"] == "first"
    listed = [
        c["CodeSigningConfigArn"]
        for page in lambda_client.get_paginator("list_code_signing_configs").paginate()
        for c in page["CodeSigningConfigs"]
    ]
    assert arn in listed

    name = unique("csc-fn")
    create(lambda_client, name, zip_files({"app.py": APP}))
    put = lambda_client.put_function_code_signing_config(CodeSigningConfigArn=arn, FunctionName=name)
    assert (put["CodeSigningConfigArn"], put["FunctionName"]) == (arn, name)
    assert lambda_client.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == arn
    using = lambda_client.list_functions_by_code_signing_config(CodeSigningConfigArn=arn)["FunctionArns"]
    assert using == [f"arn:aws:lambda:us-east-1:000000000000:function:{name}"]
    conflict = error_of(lambda: lambda_client.delete_code_signing_config(CodeSigningConfigArn=arn))
    assert code_of(conflict)[:2] == ("ResourceConflictException", 409) and name in code_of(conflict)[2]
    lambda_client.delete_function_code_signing_config(FunctionName=name)
    assert lambda_client.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == ""
    deleted = lambda_client.delete_code_signing_config(CodeSigningConfigArn=arn)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    missing = (
        "ResourceNotFoundException",
        404,
        f"The Lambda code signing configuration {arn} can not be found.",
    )
    assert code_of(error_of(lambda: lambda_client.get_code_signing_config(CodeSigningConfigArn=arn))) == missing
    gone = error_of(lambda: lambda_client.put_function_code_signing_config(CodeSigningConfigArn=arn, FunctionName=name))
    assert code_of(gone)[:2] == ("CodeSigningConfigNotFoundException", 404)


def test_enforce_refuses_unsigned_and_untrusted_code(
    lambda_client: Any, silo_server: SiloServer, publisher: tuple[str, Path, str], tmp_path: Path
) -> None:
    profile, key, profile_arn = publisher
    csc = config_of(lambda_client, profile_arn, "Enforce")
    name = unique("enforced")
    unsigned = error_of(lambda: create(lambda_client, name, zip_files({"app.py": APP}), CodeSigningConfigArn=csc))
    assert code_of(unsigned)[:2] == ("CodeVerificationFailedException", 400)
    assert "carries no signature" in code_of(unsigned)[2]
    # A key silo knows but the configuration does not allow.
    other = make_key(tmp_path, unique("other").replace("-", "_"))
    register(silo_server, other.stem, other)
    untrusted = signed_zip(silo_server, tmp_path, {"app.py": APP}, other, other.stem)
    err = error_of(lambda: create(lambda_client, name, untrusted, CodeSigningConfigArn=csc))
    assert code_of(err)[:2] == ("CodeVerificationFailedException", 400)
    assert "not among the allowed publishers" in code_of(err)[2]
    # A zip changed after it was signed fails the integrity check.
    good = signed_zip(silo_server, tmp_path, {"app.py": APP}, key, profile)
    swapped = BytesIO(zip_files({"app.py": APP.replace("signed code runs", "swapped code")}))
    with zipfile.ZipFile(swapped, "a") as zf:
        zf.comment = zipfile.ZipFile(BytesIO(good)).comment
    tampered = swapped.getvalue()
    err = error_of(lambda: create(lambda_client, name, tampered, CodeSigningConfigArn=csc))
    assert code_of(err)[:2] == ("InvalidCodeSignatureException", 400)
    assert code_of(error_of(lambda: lambda_client.get_function(FunctionName=name)))[0] == "ResourceNotFoundException"
    # Signed by the allowed profile: deployed, and it runs.
    create(lambda_client, name, good, CodeSigningConfigArn=csc)
    assert lambda_client.get_function_code_signing_config(FunctionName=name)["CodeSigningConfigArn"] == csc
    assert invoke(lambda_client, name) == "signed code runs"
    # An update must be signed too.
    err = error_of(lambda: lambda_client.update_function_code(FunctionName=name, ZipFile=zip_files({"app.py": APP})))
    assert code_of(err)[:2] == ("CodeVerificationFailedException", 400)
    newer = signed_zip(silo_server, tmp_path, {"app.py": APP.replace("runs", "runs again")}, key, profile)
    lambda_client.update_function_code(FunctionName=name, ZipFile=newer)
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke(lambda_client, name) == "signed code runs again"


def test_enforce_checks_layers_too(
    lambda_client: Any, silo_server: SiloServer, publisher: tuple[str, Path, str], tmp_path: Path
) -> None:
    profile, key, profile_arn = publisher
    csc = config_of(lambda_client, profile_arn, "Enforce")
    layer_name = unique("signed-layer")
    unsigned = lambda_client.publish_layer_version(
        LayerName=layer_name, Content={"ZipFile": zip_files({"python/lib1.py": "X = 1\n"})}
    )
    signed = lambda_client.publish_layer_version(
        LayerName=layer_name,
        Content={"ZipFile": signed_zip(silo_server, tmp_path, {"python/lib1.py": "X = 2\n"}, key, profile)},
    )
    code = signed_zip(
        silo_server, tmp_path, {"app.py": "import lib1\ndef handler(e, c):\n    return lib1.X\n"}, key, profile
    )
    name = unique("layers-enforced")
    err = error_of(
        lambda: create(lambda_client, name, code, CodeSigningConfigArn=csc, Layers=[unsigned["LayerVersionArn"]])
    )
    assert code_of(err)[:2] == ("CodeVerificationFailedException", 400)
    assert layer_arn(layer_name, 1) in code_of(err)[2]
    create(lambda_client, name, code, CodeSigningConfigArn=csc, Layers=[signed["LayerVersionArn"]])
    assert invoke(lambda_client, name) == 2
    err = error_of(
        lambda: lambda_client.update_function_configuration(FunctionName=name, Layers=[unsigned["LayerVersionArn"]])
    )
    assert code_of(err)[:2] == ("CodeVerificationFailedException", 400)


def test_warn_deploys_and_logs(lambda_client: Any, silo_server: SiloServer, publisher: tuple[str, Path, str]) -> None:
    csc = config_of(lambda_client, publisher[2], "Warn")
    name = unique("warned")
    create(lambda_client, name, zip_files({"app.py": APP}), CodeSigningConfigArn=csc)
    assert invoke(lambda_client, name) == "signed code runs"
    assert (
        f"deploying the function's code although it is not signed by an allowed publisher of {csc}" in silo_server.log()
    )


def test_signing_cli_refuses_plainly(silo_server: SiloServer, tmp_path: Path) -> None:
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"plain text")
    key = make_key(tmp_path, "k1")
    out = silo(silo_server, "sign", str(not_zip), "--key", str(key))
    assert out.returncode == 1 and "not a zip" in out.stderr
    public = tmp_path / "pub.pem"
    public.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    out = silo(silo_server, "sign", str(not_zip), "--key", str(public))
    assert out.returncode == 1 and "private key" in out.stderr.lower()
    out = silo(silo_server, "signing-profile", "add", "bad name", str(key), "--endpoint", silo_server.endpoint)
    assert out.returncode == 1 and "InvalidParameterValueException" in out.stderr
