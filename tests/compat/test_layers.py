"""Layers as boto3 sees them, against a real `silo serve` (jail backend; gVisor where runsc is installed):
the layer operations and their errors, a function's layers merged in order at /opt, read-only, on the
paths Lambda's runtimes search, in a fresh and in a forked environment, and what a function with layers
cannot reach of another's.

The server lives for the whole session (tests/conftest.py), so every test uses its own names.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from silo.runtimes import catalog
from tests.compat.test_control_plane import AwsCli, error_of, raw_request, unique
from tests.security.test_gvisor import use_gvisor
from tests.support import (
    ROLE,
    SiloServer,
    create_python_function,
    forked_call,
    make_client,
    payload_of,
    python_runtime,
    zip_files,
)

ACCOUNT = "000000000000"
NODE = catalog.node_interpreter()
SITE = f"python/lib/python3.{sys.version_info.minor}/site-packages"


def layer_arn(name: str, version: int | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:{name}"
    return base if version is None else f"{base}:{version}"


def code_of(err: dict[str, Any]) -> tuple[str, int, str]:
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


def publish(
    client: Any, name: str, files: dict[str, str | bytes], modes: dict[str, int] | None = None, **extra: Any
) -> dict[str, Any]:
    content = {"ZipFile": zip_files(files, modes)}
    out: dict[str, Any] = client.publish_layer_version(LayerName=name, Content=content, **extra)
    return out


def invoke(client: Any, name: str, event: dict[str, Any] | None = None, **extra: Any) -> Any:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **extra)
    body = payload_of(response)
    assert "FunctionError" not in response, body
    return body


# -- the layer operations -----------------------------------------------------------------------------


def test_publish_get_list_and_delete(lambda_client: Any) -> None:
    name = unique("layer")
    first_zip = zip_files({"python/first.py": "X = 1\n"})
    first = lambda_client.publish_layer_version(
        LayerName=name,
        Description="the first",
        Content={"ZipFile": first_zip},
        CompatibleRuntimes=["python3.12", "python3.13"],
        CompatibleArchitectures=["x86_64"],
        LicenseInfo="MIT",
    )
    assert first["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (first["LayerArn"], first["LayerVersionArn"], first["Version"]) == (
        layer_arn(name),
        layer_arn(name, 1),
        1,
    )
    assert first["Content"]["CodeSha256"] == base64.b64encode(hashlib.sha256(first_zip).digest()).decode()
    assert first["Content"]["CodeSize"] == len(first_zip)
    assert (first["Description"], first["LicenseInfo"]) == ("the first", "MIT")
    assert first["CompatibleRuntimes"] == ["python3.12", "python3.13"]
    assert first["CompatibleArchitectures"] == ["x86_64"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000", first["CreatedDate"])
    # Content.Location serves the zip as uploaded.
    assert requests.get(first["Content"]["Location"], timeout=30).content == first_zip

    second = publish(lambda_client, name, {"python/second.py": "X = 2\n"}, CompatibleRuntimes=["nodejs22.x"])
    assert second["Version"] == 2
    for got in (
        lambda_client.get_layer_version(LayerName=name, VersionNumber=1),
        lambda_client.get_layer_version(LayerName=layer_arn(name), VersionNumber=1),
        lambda_client.get_layer_version_by_arn(Arn=layer_arn(name, 1)),
    ):
        assert {k: v for k, v in got.items() if k not in ("ResponseMetadata", "Content")} == {
            k: v for k, v in first.items() if k not in ("ResponseMetadata", "Content")
        }
        assert got["Content"]["CodeSha256"] == first["Content"]["CodeSha256"]

    versions = lambda_client.list_layer_versions(LayerName=name)["LayerVersions"]
    assert [v["Version"] for v in versions] == [2, 1]
    assert versions[1]["LayerVersionArn"] == layer_arn(name, 1) and "Content" not in versions[1]
    python = lambda_client.list_layer_versions(LayerName=name, CompatibleRuntime="python3.13")["LayerVersions"]
    assert [v["Version"] for v in python] == [1]
    arm = lambda_client.list_layer_versions(LayerName=name, CompatibleArchitecture="arm64")["LayerVersions"]
    assert arm == []

    listed = {layer["LayerName"]: layer for layer in lambda_client.list_layers()["Layers"]}
    assert listed[name]["LayerArn"] == layer_arn(name)
    assert listed[name]["LatestMatchingVersion"]["Version"] == 2
    filtered = {
        layer["LayerName"]: layer for layer in lambda_client.list_layers(CompatibleRuntime="python3.12")["Layers"]
    }
    assert filtered[name]["LatestMatchingVersion"]["Version"] == 1

    deleted = lambda_client.delete_layer_version(LayerName=name, VersionNumber=2)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    err = error_of(lambda: lambda_client.get_layer_version(LayerName=name, VersionNumber=2))
    assert code_of(err) == ("ResourceNotFoundException", 404, "The resource you requested does not exist.")
    assert [v["Version"] for v in lambda_client.list_layer_versions(LayerName=name)["LayerVersions"]] == [1]
    # A number is never given twice, not even that of a deleted version.
    assert publish(lambda_client, name, {"x.txt": "3"})["Version"] == 3
    # Deleting a version that is not there succeeds, as on Lambda.
    again = lambda_client.delete_layer_version(LayerName=name, VersionNumber=2)
    assert again["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_pagination_of_layers_and_versions(lambda_client: Any) -> None:
    prefix = unique("page")
    names = [f"{prefix}-{n}" for n in range(3)]
    for name in names:
        publish(lambda_client, name, {"f": name})
    for _ in range(4):
        publish(lambda_client, names[0], {"f": os.urandom(4).hex()})
    page = lambda_client.list_layer_versions(LayerName=names[0], MaxItems=2)
    assert [v["Version"] for v in page["LayerVersions"]] == [5, 4] and "NextMarker" in page
    paginator = lambda_client.get_paginator("list_layer_versions")
    seen = [
        v["Version"]
        for p in paginator.paginate(LayerName=names[0], PaginationConfig={"PageSize": 2})
        for v in p["LayerVersions"]
    ]
    assert seen == [5, 4, 3, 2, 1]
    layers = [
        layer["LayerName"]
        for p in lambda_client.get_paginator("list_layers").paginate(PaginationConfig={"PageSize": 1})
        for layer in p["Layers"]
    ]
    assert [n for n in layers if n.startswith(prefix)] == names
    assert len(layers) == len(set(layers))
    err = error_of(lambda: lambda_client.list_layers(MaxItems=51))
    assert code_of(err)[:2] == ("ValidationException", 400)


def test_errors_of_the_layer_operations(lambda_client: Any) -> None:
    name = unique("errors")
    missing = ("ResourceNotFoundException", 404, "The resource you requested does not exist.")
    assert code_of(error_of(lambda: lambda_client.get_layer_version(LayerName=name, VersionNumber=1))) == missing
    assert code_of(error_of(lambda: lambda_client.get_layer_version_by_arn(Arn=layer_arn(name, 1)))) == missing
    publish(lambda_client, name, {"f": "1"})
    assert code_of(error_of(lambda: lambda_client.get_layer_version(LayerName=name, VersionNumber=7))) == missing
    elsewhere = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:layer:{name}:1"
    assert code_of(error_of(lambda: lambda_client.get_layer_version_by_arn(Arn=elsewhere))) == missing
    assert lambda_client.list_layer_versions(LayerName=unique("none"))["LayerVersions"] == []

    s3 = error_of(
        lambda: lambda_client.publish_layer_version(LayerName=name, Content={"S3Bucket": "bucket", "S3Key": "k.zip"})
    )
    assert code_of(s3)[:2] == ("InvalidParameterValueException", 400)
    assert "Content.ZipFile" in code_of(s3)[2] and "S3" in code_of(s3)[2]
    broken = error_of(lambda: lambda_client.publish_layer_version(LayerName=name, Content={"ZipFile": b"not a zip"}))
    assert code_of(broken)[:2] == ("InvalidParameterValueException", 400)
    assert code_of(broken)[2].startswith("Could not unzip uploaded file.")
    bad_runtime = error_of(lambda: publish(lambda_client, name, {"f": "1"}, CompatibleRuntimes=["cobol1"]))
    assert code_of(bad_runtime)[:2] == ("ValidationException", 400)
    assert "compatibleRuntimes" in code_of(bad_runtime)[2]
    bad_name = error_of(lambda: publish(lambda_client, "no spaces allowed", {"f": "1"}))
    assert code_of(bad_name)[:2] == ("ValidationException", 400)
    # None of the refused publications took a number.
    assert publish(lambda_client, name, {"f": "2"})["Version"] == 2


def test_layer_version_permissions(lambda_client: Any) -> None:
    name = unique("perm")
    publish(lambda_client, name, {"f": "1"})
    none = error_of(lambda: lambda_client.get_layer_version_policy(LayerName=name, VersionNumber=1))
    assert code_of(none) == ("ResourceNotFoundException", 404, "No policy is associated with the given resource.")
    added = lambda_client.add_layer_version_permission(
        LayerName=name, VersionNumber=1, StatementId="one", Action="lambda:GetLayerVersion", Principal="111122223333"
    )
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert json.loads(added["Statement"]) == {
        "Sid": "one",
        "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "lambda:GetLayerVersion",
        "Resource": layer_arn(name, 1),
    }
    org = lambda_client.add_layer_version_permission(
        LayerName=name,
        VersionNumber=1,
        StatementId="org",
        Action="lambda:GetLayerVersion",
        Principal="*",
        OrganizationId="o-abcdefghij",
        RevisionId=added["RevisionId"],
    )
    assert json.loads(org["Statement"])["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-abcdefghij"}}
    policy = lambda_client.get_layer_version_policy(LayerName=name, VersionNumber=1)
    assert policy["RevisionId"] == org["RevisionId"]
    assert [s["Sid"] for s in json.loads(policy["Policy"])["Statement"]] == ["one", "org"]

    def add(**extra: Any) -> Any:
        kwargs = {"LayerName": name, "VersionNumber": 1, "Action": "lambda:GetLayerVersion", "Principal": "*"}
        return lambda_client.add_layer_version_permission(**{**kwargs, **extra})

    assert code_of(error_of(lambda: add(StatementId="one")))[:2] == ("ResourceConflictException", 409)
    stale = error_of(lambda: add(StatementId="three", RevisionId=added["RevisionId"]))
    assert code_of(stale)[:2] == ("PreconditionFailedException", 412)
    assert code_of(error_of(lambda: add(StatementId="bad", Action="lambda:InvokeFunction")))[:2] == (
        "ValidationException",
        400,
    )
    assert code_of(error_of(lambda: add(StatementId="x", VersionNumber=9)))[:2] == ("ResourceNotFoundException", 404)

    removed = lambda_client.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="one")
    assert removed["ResponseMetadata"]["HTTPStatusCode"] == 204
    gone = error_of(
        lambda: lambda_client.remove_layer_version_permission(LayerName=name, VersionNumber=1, StatementId="one")
    )
    assert code_of(gone) == ("ResourceNotFoundException", 404, "Statement one is not found in resource policy.")
    left = json.loads(lambda_client.get_layer_version_policy(LayerName=name, VersionNumber=1)["Policy"])
    assert [s["Sid"] for s in left["Statement"]] == ["org"]


# -- functions with layers ------------------------------------------------------------------------------

PROBE = """
import os, sys

def handler(event, context):
    out = {"path": sys.path[:4], "PATH": os.environ.get("PATH"), "LD": os.environ.get("LD_LIBRARY_PATH"),
           "NODE_PATH": os.environ.get("NODE_PATH"), "opt": os.path.exists("/opt")}
    if out["opt"]:
        import mod, sitemod
        out["mod"], out["sitemod"] = mod.WHO, sitemod.WHO
        out["shared"] = open("/opt/shared.txt").read()
        out["tree"] = sorted(os.path.relpath(os.path.join(d, f), "/opt") for d, _, fs in os.walk("/opt") for f in fs)
        attempts = {}
        for what, act in (
            ("write", lambda: open("/opt/shared.txt", "w").write("mine")),
            ("create", lambda: open("/opt/new.txt", "x").write("mine")),
            ("mkdir", lambda: os.mkdir("/opt/python/new")),
            ("unlink", lambda: os.unlink("/opt/python/mod.py")),
        ):
            try:
                act()
                attempts[what] = "done"
            except OSError as exc:
                attempts[what] = exc.__class__.__name__
        out["attempts"] = attempts
        out["shared_after"] = open("/opt/shared.txt").read()
    return out
"""


@pytest.fixture(scope="module")
def two_layers(silo_server: SiloServer) -> tuple[str, str]:
    client = make_client(silo_server.endpoint)
    first = publish(
        client,
        unique("first"),
        {"python/mod.py": "WHO = 'first'\n", "shared.txt": "first", "only-first.txt": "1", "python/first_only.py": ""},
    )
    second = publish(
        client,
        unique("second"),
        {f"{SITE}/sitemod.py": "WHO = 'second'\n", "shared.txt": "second", "bin/tool": "#!/bin/sh\n"},
    )
    return first["LayerVersionArn"], second["LayerVersionArn"]


def check_probe(out: dict[str, Any]) -> None:
    assert out["path"][:3] == ["/var/task", f"/opt/{SITE}", "/opt/python"]
    assert "/opt/bin" in out["PATH"].split(":") and "/opt/lib" in out["LD"].split(":")
    assert (out["mod"], out["sitemod"]) == ("first", "second")
    # Merged in order: the later layer's file wins, both layers' other files are there.
    assert out["shared"] == "second"
    assert {"only-first.txt", "bin/tool", "python/mod.py", f"{SITE}/sitemod.py"} <= set(out["tree"])
    # Read-only: nothing is changed, whatever is tried.
    assert set(out["attempts"].values()) <= {"OSError", "PermissionError"}, out["attempts"]
    assert out["shared_after"] == "second"


def test_a_function_sees_its_layers_merged_in_order_at_opt(lambda_client: Any, two_layers: tuple[str, str]) -> None:
    name = unique("layered")
    created = create_python_function(lambda_client, name, PROBE, Layers=list(two_layers))
    sizes = {arn: lambda_client.get_layer_version_by_arn(Arn=arn)["Content"]["CodeSize"] for arn in two_layers}
    expected = [{"Arn": arn, "CodeSize": sizes[arn]} for arn in two_layers]
    assert created["Layers"] == expected
    assert lambda_client.get_function_configuration(FunctionName=name)["Layers"] == expected
    assert lambda_client.get_function(FunctionName=name)["Configuration"]["Layers"] == expected
    check_probe(invoke(lambda_client, name))


@pytest.fixture(scope="module")
def stemless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    """A server of its own without stems, so that a new tenant's first call is forked from the template."""
    server = SiloServer(tmp_path_factory.mktemp("layers-forked") / "data", "--stems-per-function", "0")
    server.start()
    yield server
    server.stop()


def test_a_forked_environment_gets_its_layers_paths(stemless: SiloServer) -> None:
    """The runtime's template started without any function's layers; a fork of it runs the handler with
    the layers mounted and on its paths all the same."""
    client = make_client(stemless.endpoint)
    first = publish(client, unique("first"), {"python/mod.py": "WHO = 'first'\n", "shared.txt": "first"})
    second = publish(
        client, unique("second"), {f"{SITE}/sitemod.py": "WHO = 'second'\n", "shared.txt": "second", "bin/tool": ""}
    )
    name = unique("forked")
    layers = [first["LayerVersionArn"], second["LayerVersionArn"]]
    create_python_function(client, name, PROBE, per_tenant=True, Layers=layers)
    out = forked_call(client, name, "t")
    assert out["path"][:3] == ["/var/task", f"/opt/{SITE}", "/opt/python"]
    assert (out["mod"], out["sitemod"], out["shared"]) == ("first", "second", "second")
    assert set(out["attempts"].values()) <= {"OSError", "PermissionError"}, out["attempts"]


def test_order_decides_which_file_wins(lambda_client: Any, two_layers: tuple[str, str]) -> None:
    name = unique("reversed")
    create_python_function(lambda_client, name, PROBE, Layers=[two_layers[1], two_layers[0]])
    out = invoke(lambda_client, name)
    assert out["shared"] == "first"


def test_a_function_without_layers_has_no_opt(lambda_client: Any) -> None:
    name = unique("plain")
    create_python_function(lambda_client, name, PROBE)
    out = invoke(lambda_client, name)
    assert out["opt"] is False
    assert "Layers" not in lambda_client.get_function_configuration(FunctionName=name)


def test_layers_are_changed_by_update_and_kept_by_a_version(lambda_client: Any, silo_server: SiloServer) -> None:
    one = publish(lambda_client, unique("gen"), {"python/which.py": "WHO = 'one'\n"})["LayerVersionArn"]
    two = publish(lambda_client, unique("gen"), {"python/which.py": "WHO = 'two'\n"})["LayerVersionArn"]
    source = "def handler(event, context):\n    import which\n    return which.WHO\n"
    name = unique("versioned")
    create_python_function(lambda_client, name, source, Layers=[one], Publish=True)
    assert invoke(lambda_client, name) == "one"
    updated = lambda_client.update_function_configuration(FunctionName=name, Layers=[two])
    assert [layer["Arn"] for layer in updated["Layers"]] == [two]
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert invoke(lambda_client, name) == "two"
    # The published version keeps the layers it was published with, even once that layer version is deleted.
    version_config = lambda_client.get_function_configuration(FunctionName=name, Qualifier="1")
    assert [layer["Arn"] for layer in version_config["Layers"]] == [one]
    match = re.fullmatch(r".*:layer:([^:]+):(\d+)", one)
    assert match is not None
    lambda_client.delete_layer_version(LayerName=match[1], VersionNumber=int(match[2]))
    assert invoke(lambda_client, name, Qualifier="1") == "one"
    # A restart keeps the deleted layer's code (and the merged /opt) while the version uses it.
    silo_server.restart()
    assert invoke(lambda_client, name, Qualifier="1") == "one"
    # An empty list takes the layers away.
    cleared = lambda_client.update_function_configuration(FunctionName=name, Layers=[])
    assert "Layers" not in cleared
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    body = lambda_client.invoke(FunctionName=name)
    assert body["FunctionError"] == "Unhandled" and "which" in payload_of(body)["errorMessage"]
    # The deleted layer version can no longer be added to a function.
    err = error_of(lambda: lambda_client.update_function_configuration(FunctionName=name, Layers=[one]))
    assert code_of(err) == ("InvalidParameterValueException", 400, f"Layer version {one} does not exist.")


def test_unknown_and_too_many_layers_are_refused(lambda_client: Any) -> None:
    name = unique("refused")
    unknown = layer_arn(unique("nothing"), 1)
    err = error_of(lambda: create_python_function(lambda_client, name, PROBE, Layers=[unknown]))
    assert code_of(err) == ("InvalidParameterValueException", 400, f"Layer version {unknown} does not exist.")
    six = [layer_arn(f"l{n}", 1) for n in range(6)]
    err = error_of(lambda: create_python_function(lambda_client, name, PROBE, Layers=six))
    assert code_of(err) == ("InvalidParameterValueException", 400, "Cannot reference more than 5 layers.")
    # Nothing was created by the refusals.
    assert code_of(error_of(lambda: lambda_client.get_function(FunctionName=name)))[0] == "ResourceNotFoundException"


def test_the_unzipped_limit_counts_the_layers(lambda_client: Any) -> None:
    # Zeros compress about a thousandfold: each zip is small, each unpacks to 140 MB (under the 250 MB
    # limit alone), and the two together pass it.
    big = b"\0" * 140_000_000
    first = publish(lambda_client, unique("big"), {"one.bin": big})
    second = publish(lambda_client, unique("big"), {"two.bin": big})
    arns = [first["LayerVersionArn"], second["LayerVersionArn"]]
    name = unique("heavy")
    err = error_of(lambda: create_python_function(lambda_client, name, PROBE, Layers=arns))
    code, status, message = code_of(err)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert message.startswith("Function code combined with layers exceeds the maximum allowed size of 262144000 bytes.")
    create_python_function(lambda_client, name, PROBE, Layers=arns[:1])
    err = error_of(lambda: lambda_client.update_function_configuration(FunctionName=name, Layers=arns))
    assert code_of(err)[:2] == ("InvalidParameterValueException", 400)
    assert [layer["Arn"] for layer in lambda_client.get_function_configuration(FunctionName=name)["Layers"]] == arns[:1]
    lambda_client.delete_function(FunctionName=name)
    for published in (first, second):
        lambda_client.delete_layer_version(LayerName=published["LayerArn"], VersionNumber=published["Version"])


@pytest.mark.skipif(NODE is None, reason="no node of a version silo serves (20, 22) on PATH")
def test_a_node_function_requires_a_module_of_its_layer(lambda_client: Any) -> None:
    assert NODE is not None
    major = NODE.runtime.removeprefix("nodejs").removesuffix(".x")
    layer = publish(
        lambda_client,
        unique("node"),
        {
            "nodejs/node_modules/greet/index.js": "exports.hello = (who) => `hello ${who}`;\n",
            f"nodejs/node{major}/node_modules/versioned/index.js": "exports.v = 'for this node';\n",
            "bin/layer-tool": "#!/bin/sh\necho from the layer\n",
        },
        {"bin/layer-tool": 0o755},
    )
    source = (
        "const { execFileSync } = require('child_process');\n"
        "exports.handler = async () => ({ greeting: require('greet').hello('layers'), "
        "versioned: require('versioned').v, nodePath: process.env.NODE_PATH, "
        "tool: execFileSync('layer-tool').toString().trim() });\n"
    )
    name = unique("node-layered")
    lambda_client.create_function(
        FunctionName=name,
        Runtime=NODE.runtime,
        Role=ROLE,
        Handler="index.handler",
        Code={"ZipFile": zip_files({"index.js": source, "bin/x": ""})},
        Layers=[layer["LayerVersionArn"]],
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name)
    out = invoke(lambda_client, name)
    assert (out["greeting"], out["versioned"]) == ("hello layers", "for this node")
    assert out["nodePath"].split(":")[:2] == [f"/opt/nodejs/node{major}/node_modules", "/opt/nodejs/node_modules"]
    assert out["tool"] == "from the layer"


RUNTIME_NAMES = ("bootstrap", "loop", "client", "handler", "context", "logs")


def test_files_named_like_the_runtime_shadow_nothing_of_it(lambda_client: Any) -> None:
    poison = "raise SystemExit('the runtime imported a module of the function')\n"
    layer = publish(lambda_client, unique("shadow"), {f"python/{n}.py": poison for n in RUNTIME_NAMES})
    files: dict[str, str | bytes] = {f"{n}.py": poison for n in RUNTIME_NAMES}
    files["app.py"] = "def handler(event, context):\n    return {'id': context.aws_request_id}\n"
    name = unique("shadowed")
    lambda_client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_files(files)},
        Layers=[layer["LayerVersionArn"]],
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
    )
    lambda_client.get_waiter("function_active_v2").wait(FunctionName=name)
    # Environments started from nothing, bound stems and template forks alike.
    for tenant in ("a", "b", "c", "d", "e"):
        assert "id" in invoke(lambda_client, name, TenantId=tenant)


# -- an attack -----------------------------------------------------------------------------------------

SNOOP = """
import os

def handler(event, context):
    found = {marker: [] for marker in event["markers"]}
    for d, dirs, files in os.walk("/"):
        if d.startswith(("/proc", "/sys", "/usr", "/dev", "/var/lang")):
            dirs[:] = []
            continue
        for f in files:
            path = os.path.join(d, f)
            try:
                with open(path, "rb") as fh:
                    data = fh.read(1 << 20)
                for marker in found:
                    if marker.encode() in data:
                        found[marker].append(path)
            except OSError:
                pass
    opt = sorted(os.path.relpath(os.path.join(d, f), "/opt") for d, _, fs in os.walk("/opt") for f in fs)
    written = []
    for path in ("/opt/python/victim.py", "/opt/victim.txt", "/var/task/app.py", "/opt/mine.py"):
        try:
            with open(path, "a") as fh:
                fh.write("owned")
            written.append(path)
        except OSError:
            pass
    return {"found": found, "opt": opt, "written": written, "mounts": open("/proc/self/mountinfo").read()}
"""


def test_a_function_cannot_see_or_change_another_functions_layers_or_code(
    lambda_client: Any, silo_server: SiloServer
) -> None:
    marker = f"victim-secret-{os.urandom(8).hex()}"
    victim_layer = publish(
        lambda_client, unique("victim"), {"python/victim.py": f"S = '{marker}'\n", "victim.txt": marker}
    )
    victim = unique("victim")
    create_python_function(
        lambda_client,
        victim,
        f"import victim\nCODE = '{marker}'\ndef handler(event, context):\n    return victim.S\n",
        Layers=[victim_layer["LayerVersionArn"]],
    )
    assert invoke(lambda_client, victim) == marker
    own_marker = f"own-{os.urandom(8).hex()}"
    own = publish(lambda_client, unique("own"), {"python/mine.py": f"X = '{own_marker}'\n"})
    attacker = unique("attacker")
    create_python_function(lambda_client, attacker, SNOOP, Layers=[own["LayerVersionArn"]], Timeout=60)
    out = invoke(lambda_client, attacker, {"markers": [marker, own_marker]})
    # The search finds what it may see (its own layer), and nothing of the victim's layer or code.
    assert out["found"] == {marker: [], own_marker: ["/opt/python/mine.py"]}
    assert out["opt"] == ["python/mine.py"]
    assert out["written"] == []
    # Where layers and code are stored on the host is not told either.
    assert str(silo_server.data_dir) not in out["mounts"]
    # And the victim's layer is as it was.
    assert invoke(lambda_client, victim) == marker


# -- gVisor ----------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="gVisor needs root; CI runs these as root")
@pytest.mark.skipif(shutil.which("runsc") is None, reason="runsc is not installed (.ci/run installs it)")
def test_layers_in_gvisor(lambda_client: Any, silo_server: SiloServer, two_layers: tuple[str, str]) -> None:
    name = unique("gv-layered")
    create_python_function(lambda_client, name, PROBE, Layers=list(two_layers))
    use_gvisor(silo_server, name)
    check_probe(invoke(lambda_client, name))


# -- the AWS CLI, and requests boto3 would not build -------------------------------------------------------


def test_aws_cli_publishes_lists_and_uses_a_layer(aws_cli: AwsCli, tmp_path: Path, lambda_client: Any) -> None:
    name = unique("cli-layer")
    package = tmp_path / "layer.zip"
    package.write_bytes(zip_files({"python/clilayer.py": "WHO = 'cli'\n"}))
    published = aws_cli(
        "lambda", "publish-layer-version", "--layer-name", name, "--zip-file", f"fileb://{package}",
        "--compatible-runtimes", python_runtime(), "--compatible-architectures", "x86_64", "--output", "json",
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    arn = json.loads(published.stdout)["LayerVersionArn"]
    assert arn == layer_arn(name, 1)
    listed = aws_cli("lambda", "list-layer-versions", "--layer-name", name, "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert [v["Version"] for v in json.loads(listed.stdout)["LayerVersions"]] == [1]
    function = unique("cli-layered")
    create_python_function(
        lambda_client, function, "import clilayer\ndef handler(event, context):\n    return clilayer.WHO\n"
    )
    updated = aws_cli(
        "lambda", "update-function-configuration", "--function-name", function, "--layers", arn, "--output", "json"
    )  # fmt: skip
    assert updated.returncode == 0, updated.stderr
    assert [layer["Arn"] for layer in json.loads(updated.stdout)["Layers"]] == [arn]
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=function)
    assert invoke(lambda_client, function) == "cli"
    missing = aws_cli("lambda", "get-layer-version", "--layer-name", name, "--version-number", "9")
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr


def test_what_boto3_would_not_send_is_refused_in_lambdas_words(silo_server: SiloServer) -> None:
    name = unique("raw")
    zipped = base64.b64encode(zip_files({"f": "1"})).decode()
    three = {"Content": {"ZipFile": zipped}, "CompatibleArchitectures": ["x86_64", "arm64", "x86_64"]}
    status, headers, body = raw_request(
        silo_server.endpoint, "POST", f"/2018-10-31/layers/{name}/versions", json.dumps(three).encode()
    )
    assert status == 400 and b"compatibleArchitectures" in body
    assert headers["x-amzn-errortype"].startswith("ValidationException")
    status, headers, body = raw_request(silo_server.endpoint, "POST", f"/2018-10-31/layers/{name}/versions", b"{}")
    assert status == 400 and b"content" in body
    status, headers, body = raw_request(silo_server.endpoint, "GET", f"/2018-10-31/layers/{name}/versions/one", b"")
    assert status == 400 and b"versionNumber" in body
    status, headers, body = raw_request(
        silo_server.endpoint, "GET", "/2018-10-31/layers?find=LayerVersion&Arn=nonsense", b""
    )
    assert status == 400 and b"at 'arn'" in body
