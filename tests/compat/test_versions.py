"""The rest of a function's lifecycle as boto3 and the AWS CLI see it, against a real `silo serve`: code
signing, tags, resource policies, versions and aliases, and what Terraform reads after a create.

The server lives for the whole session (tests/conftest.py), so every test uses its own function names.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from silo.control import aliases
from tests.compat.test_control_plane import create, error_of, make_zip, unique
from tests.support import ROLE, TIME_SCALE, SignedBy, create_python_function, payload_of, zip_files

ACCOUNT = "000000000000"


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:{name}"
    return base if qualifier is None else f"{base}:{qualifier}"


def code_of(err: dict[str, Any]) -> tuple[str, int, str]:
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Message"]


# -- code signing -----------------------------------------------------------------------------------


def test_code_signing_config_is_empty_as_for_a_function_without_one(lambda_client: Any) -> None:
    name = unique("csc")
    create(lambda_client, name)
    out = lambda_client.get_function_code_signing_config(FunctionName=name)
    assert (out["CodeSigningConfigArn"], out["FunctionName"]) == ("", name)
    by_arn = lambda_client.get_function_code_signing_config(FunctionName=arn(name))
    assert by_arn["FunctionName"] == name
    err = error_of(lambda: lambda_client.get_function_code_signing_config(FunctionName=name + "-none"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name + '-none')}")


# -- tags -------------------------------------------------------------------------------------------


def test_tag_lifecycle(lambda_client: Any, silo_server: Any) -> None:
    name = unique("tags")
    created = create(lambda_client, name, Tags={"team": "blue"})
    assert lambda_client.list_tags(Resource=arn(name))["Tags"] == {"team": "blue"}
    tagged = lambda_client.tag_resource(Resource=arn(name), Tags={"env": "prod", "team": "red"})
    assert tagged["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert lambda_client.list_tags(Resource=arn(name))["Tags"] == {"team": "red", "env": "prod"}
    assert lambda_client.get_function(FunctionName=name)["Tags"] == {"team": "red", "env": "prod"}
    # Tags change nothing a version runs: the revision stays.
    assert lambda_client.get_function(FunctionName=name)["Configuration"]["RevisionId"] == created["RevisionId"]
    lambda_client.untag_resource(Resource=arn(name), TagKeys=["team", "not-there"])
    assert lambda_client.list_tags(Resource=arn(name))["Tags"] == {"env": "prod"}
    silo_server.restart()
    assert lambda_client.list_tags(Resource=arn(name))["Tags"] == {"env": "prod"}
    lambda_client.untag_resource(Resource=arn(name), TagKeys=["env"])
    assert lambda_client.list_tags(Resource=arn(name))["Tags"] == {}
    assert "Tags" not in lambda_client.get_function(FunctionName=name)


def test_tag_limits_and_errors(lambda_client: Any) -> None:
    name = unique("tagerr")
    create(lambda_client, name)
    many = {f"{i}_key": f"{i}_value" for i in range(51)}
    err = error_of(lambda: lambda_client.tag_resource(Resource=arn(name), Tags=many))
    assert code_of(err) == ("InvalidParameterValueException", 400, "Number of tags exceeds resource tag limit.")
    lambda_client.tag_resource(Resource=arn(name), Tags=dict(list(many.items())[:50]))
    err = error_of(lambda: lambda_client.tag_resource(Resource=arn(name), Tags={"one": "more"}))
    assert code_of(err)[2] == "Number of tags exceeds resource tag limit."
    err = error_of(lambda: create(lambda_client, unique("tagcreate"), Tags=many))
    assert code_of(err)[:2] == ("InvalidParameterValueException", 400)
    err = error_of(lambda: lambda_client.tag_resource(Resource=arn(name, "1"), Tags={"a": "b"}))
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "Tags on function aliases and versions are not supported. Please specify a function ARN.",
    )
    err = error_of(lambda: lambda_client.list_tags(Resource=arn(name + "-none")))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name + '-none')}")
    err = error_of(lambda: lambda_client.list_tags(Resource=f"arn:aws:lambda:us-east-1:{ACCOUNT}:foobar:{name}"))
    assert code_of(err)[:2] == ("ValidationException", 400)
    assert "at 'resource' failed to satisfy constraint" in code_of(err)[2]
    err = error_of(lambda: lambda_client.tag_resource(Resource=arn(name), Tags={}))
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "An error occurred and the request cannot be processed.",
    )
    err = error_of(lambda: lambda_client.tag_resource(Resource=arn(name), Tags={"bad key!": "v"}))
    assert code_of(err)[:2] == ("ValidationException", 400)
    assert "Map keys must satisfy constraint" in code_of(err)[2]


# -- resource policies ------------------------------------------------------------------------------


def test_permission_lifecycle(lambda_client: Any, silo_server: Any) -> None:
    name = unique("perm")
    created = create(lambda_client, name)
    err = error_of(lambda: lambda_client.get_policy(FunctionName=name))
    assert code_of(err) == ("ResourceNotFoundException", 404, "The resource you requested does not exist.")
    added = lambda_client.add_permission(
        FunctionName=name,
        StatementId="s3",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::my-bucket",
        SourceAccount="111111111111",
    )
    assert added["ResponseMetadata"]["HTTPStatusCode"] == 201
    statement = {
        "Sid": "s3",
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "lambda:InvokeFunction",
        "Resource": arn(name),
        "Condition": {
            "StringEquals": {"AWS:SourceAccount": "111111111111"},
            "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::my-bucket"},
        },
    }
    assert json.loads(added["Statement"]) == statement
    lambda_client.add_permission(
        FunctionName=name, StatementId="account", Action="lambda:GetFunction", Principal="123456789012"
    )
    policy = lambda_client.get_policy(FunctionName=name)
    document = json.loads(policy["Policy"])
    assert (document["Version"], document["Id"]) == ("2012-10-17", "default")
    assert document["Statement"][0] == statement
    assert document["Statement"][1]["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    # The policy is the version's: a new policy is a new RevisionId, and GetPolicy reports it.
    revision = lambda_client.get_function(FunctionName=name)["Configuration"]["RevisionId"]
    assert revision != created["RevisionId"]
    assert policy["RevisionId"] == revision
    silo_server.restart()
    assert json.loads(lambda_client.get_policy(FunctionName=name)["Policy"]) == document

    err = error_of(
        lambda: lambda_client.add_permission(
            FunctionName=name, StatementId="s3", Action="lambda:InvokeFunction", Principal="*"
        )
    )
    assert code_of(err) == (
        "ResourceConflictException",
        409,
        "The statement id (s3) provided already exists. Please provide a new statement id, or remove the "
        "existing statement.",
    )
    err = error_of(lambda: lambda_client.remove_permission(FunctionName=name, StatementId="s3", RevisionId="stale"))
    assert code_of(err)[:2] == ("PreconditionFailedException", 412)
    lambda_client.remove_permission(FunctionName=name, StatementId="s3")
    err = error_of(lambda: lambda_client.remove_permission(FunctionName=name, StatementId="s3"))
    assert code_of(err) == ("ResourceNotFoundException", 404, "Statement s3 is not found in resource policy.")
    lambda_client.remove_permission(FunctionName=name, StatementId="account")
    err = error_of(lambda: lambda_client.get_policy(FunctionName=name))
    assert code_of(err) == ("ResourceNotFoundException", 404, "The resource you requested does not exist.")
    err = error_of(lambda: lambda_client.remove_permission(FunctionName=name, StatementId="account"))
    assert code_of(err) == ("ResourceNotFoundException", 404, "No policy is associated with the given resource.")


def test_permission_errors(lambda_client: Any) -> None:
    name = unique("permerr")
    create(lambda_client, name)

    def add(**extra: Any) -> Any:
        kwargs = {"FunctionName": name, "StatementId": "s", "Action": "lambda:InvokeFunction", "Principal": "*"}
        return lambda: lambda_client.add_permission(**{**kwargs, **extra})

    assert code_of(error_of(add(Qualifier="$LATEST"))) == (
        "InvalidParameterValueException",
        400,
        "We currently do not support adding policies for $LATEST.",
    )
    err = error_of(add(StatementId="example.com"))
    assert code_of(err)[:2] == ("ValidationException", 400)
    assert "Value 'example.com' at 'statementId'" in code_of(err)[2]
    assert code_of(error_of(add(Principal="not a principal!")))[:2] == ("ValidationException", 400)
    assert code_of(error_of(add(Principal="nobody"))) == (
        "InvalidParameterValueException",
        400,
        "The provided principal was invalid. Please check the principal and try again.",
    )
    assert code_of(error_of(add(FunctionName=name + "-none"))) == (
        "ResourceNotFoundException",
        404,
        f"Function not found: {arn(name + '-none')}",
    )
    assert code_of(error_of(add(Qualifier="42"))) == (
        "ResourceNotFoundException",
        404,
        f"Function not found: {arn(name, '42')}",
    )
    assert code_of(error_of(add(RevisionId="stale")))[:2] == ("PreconditionFailedException", 412)
    err = error_of(lambda: lambda_client.remove_permission(FunctionName=name + "-none", StatementId="s"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"No policy found for: {arn(name + '-none')}")
    err = error_of(lambda: lambda_client.get_policy(FunctionName=name + "-none"))
    assert code_of(err) == ("ResourceNotFoundException", 404, "The resource you requested does not exist.")
    for i in range(60):
        try:
            add(StatementId=f"s{i}", SourceArn="arn:aws:s3:::" + "b" * 500)()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "PolicyLengthExceededException"
            assert i > 10, "refused long before Lambda's 20 KiB"
            break
    else:
        pytest.fail("60 statements of 600 bytes were all taken, past Lambda's 20 KiB a policy")


# -- versions ---------------------------------------------------------------------------------------

COUNTER = (
    "import os\n"
    "count = 0\n"
    "MARK = {mark!r}\n"
    "def handler(event, context):\n"
    "    global count\n"
    "    count += 1\n"
    "    return {{'mark': MARK, 'count': count, 'version': context.function_version,\n"
    "            'invoked': context.invoked_function_arn, 'tenant': context.tenant_id, 'pid': os.getpid()}}\n"
)


def counter(mark: str) -> bytes:
    return zip_files({"app.py": COUNTER.format(mark=mark)})


def invoke(client: Any, name: str, qualifier: str | None = None, tenant: str | None = None) -> tuple[str, Any]:
    kwargs: dict[str, Any] = {"FunctionName": name}
    if qualifier is not None:
        kwargs["Qualifier"] = qualifier
    if tenant is not None:
        kwargs["TenantId"] = tenant
    response = client.invoke(**kwargs)
    assert "FunctionError" not in response, response["Payload"].read()
    return response["ExecutedVersion"], payload_of(response)


def test_publish_list_and_get_versions(lambda_client: Any, silo_server: Any) -> None:
    name = unique("ver")
    created = create(lambda_client, name, Description="first")
    err = error_of(lambda: lambda_client.publish_version(FunctionName=name, RevisionId="stale"))
    assert code_of(err)[:2] == ("PreconditionFailedException", 412)
    err = error_of(lambda: lambda_client.publish_version(FunctionName=name, CodeSha256="not-the-sha"))
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        f"CodeSHA256 (not-the-sha) is different from current CodeSHA256 in $LATEST ({created['CodeSha256']}). "
        "Please try again with the CodeSHA256 in $LATEST.",
    )
    v1 = lambda_client.publish_version(
        FunctionName=name, Description="v1", CodeSha256=created["CodeSha256"], RevisionId=created["RevisionId"]
    )
    assert v1["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (v1["Version"], v1["FunctionArn"], v1["Description"]) == ("1", arn(name, "1"), "v1")
    assert v1["RevisionId"] != created["RevisionId"]
    latest = lambda_client.get_function(FunctionName=name)["Configuration"]
    assert latest["RevisionId"] != created["RevisionId"], "publishing gives $LATEST a new RevisionId"
    assert (latest["Version"], latest["Description"]) == ("$LATEST", "first")
    # Nothing changed since version 1: Lambda publishes nothing and answers with it.
    again = lambda_client.publish_version(FunctionName=name)
    assert (again["Version"], again["RevisionId"]) == ("1", v1["RevisionId"])

    lambda_client.update_function_code(FunctionName=name, ZipFile=make_zip(("bootstrap", b"two")))
    v2 = lambda_client.publish_version(FunctionName=name)
    assert (v2["Version"], v2["Description"]) == ("2", "first")
    assert v2["CodeSha256"] != v1["CodeSha256"]
    one = lambda_client.get_function(FunctionName=name, Qualifier="1")
    assert (one["Configuration"]["FunctionArn"], one["Configuration"]["CodeSha256"]) == (
        arn(name, "1"),
        v1["CodeSha256"],
    )
    with urllib.request.urlopen(one["Code"]["Location"]) as resp:
        assert resp.read() == make_zip()
    assert lambda_client.get_function_configuration(FunctionName=f"{name}:2")["FunctionArn"] == arn(name, "2")
    assert lambda_client.get_function_configuration(FunctionName=name, Qualifier="$LATEST")["FunctionArn"] == arn(
        name, "$LATEST"
    )
    for qualifier in ("9", "no-such-alias"):
        err = error_of(lambda q=qualifier: lambda_client.get_function(FunctionName=name, Qualifier=q))  # type: ignore[misc]
        assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name, qualifier)}")

    listed = lambda_client.list_versions_by_function(FunctionName=name)
    assert [(v["Version"], v["FunctionArn"]) for v in listed["Versions"]] == [
        ("$LATEST", arn(name, "$LATEST")),
        ("1", arn(name, "1")),
        ("2", arn(name, "2")),
    ]
    assert "NextMarker" not in listed
    pages = list(lambda_client.get_paginator("list_versions_by_function").paginate(FunctionName=name, MaxItems=1))
    assert [v["Version"] for page in pages for v in page["Versions"]] == ["$LATEST", "1", "2"]
    first = lambda_client.list_versions_by_function(FunctionName=name, MaxItems=1)
    assert (len(first["Versions"]), first["NextMarker"]) == (1, "$LATEST")

    # Deleting a version leaves the others; its number is never given again; $LATEST cannot go alone.
    assert lambda_client.delete_function(FunctionName=name, Qualifier="2")["ResponseMetadata"]["HTTPStatusCode"] == 204
    err = error_of(lambda: lambda_client.delete_function(FunctionName=name, Qualifier="$LATEST"))
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "$LATEST version cannot be deleted without deleting the function.",
    )
    err = error_of(lambda: lambda_client.delete_function(FunctionName=name, Qualifier="2"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name, '2')}")
    silo_server.restart()
    lambda_client.update_function_configuration(FunctionName=name, Description="third")
    v3 = lambda_client.publish_version(FunctionName=name)
    assert v3["Version"] == "3", "a deleted version's number is not given again, even after a restart"
    assert [v["Version"] for v in lambda_client.list_versions_by_function(FunctionName=name)["Versions"]] == [
        "$LATEST",
        "1",
        "3",
    ]
    assert lambda_client.get_function(FunctionName=name, Qualifier="1")["Configuration"]["Description"] == "v1"
    lambda_client.delete_function(FunctionName=name)
    err = error_of(lambda: lambda_client.get_function(FunctionName=name, Qualifier="1"))
    assert code_of(err)[:2] == ("ResourceNotFoundException", 404)


def test_publish_with_create_and_update_code(lambda_client: Any) -> None:
    name = unique("pub")
    created = create(lambda_client, name, Publish=True)
    assert (created["Version"], created["FunctionArn"]) == ("1", arn(name))
    assert [v["Version"] for v in lambda_client.list_versions_by_function(FunctionName=name)["Versions"]] == [
        "$LATEST",
        "1",
    ]
    updated = lambda_client.update_function_code(FunctionName=name, ZipFile=make_zip(("bootstrap", b"2")), Publish=True)
    assert (updated["Version"], updated["FunctionArn"]) == ("2", arn(name, "2"))
    assert lambda_client.get_function(FunctionName=name)["Configuration"]["CodeSha256"] == updated["CodeSha256"]
    same = lambda_client.update_function_code(FunctionName=name, ZipFile=make_zip(("bootstrap", b"2")), Publish=True)
    assert same["Version"] == "2", "the same code again publishes nothing new"
    err = error_of(lambda: lambda_client.publish_version(FunctionName=f"{name}:1"))
    assert code_of(err)[:2] == ("InvalidParameterValueException", 400)


def test_versions_run_their_own_code_and_stay_warm(lambda_client: Any) -> None:
    name = unique("warm")
    create_python_function(lambda_client, name, COUNTER.format(mark="one"))
    lambda_client.publish_version(FunctionName=name)
    assert invoke(lambda_client, name, "1")[1]["count"] == 1
    executed, body = invoke(lambda_client, name, "1")
    assert (executed, body["mark"], body["count"], body["version"]) == ("1", "one", 2, "1")
    assert body["invoked"] == arn(name, "1")
    executed, body = invoke(lambda_client, f"{name}:1")
    assert (executed, body["count"]) == ("1", 3)
    pid = body["pid"]
    assert invoke(lambda_client, name)[1]["version"] == "$LATEST"

    # Updating $LATEST retires $LATEST's environments only: version 1's keeps its count.
    lambda_client.update_function_code(FunctionName=name, ZipFile=counter("two"))
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    executed, body = invoke(lambda_client, name)
    assert (executed, body["mark"], body["count"]) == ("$LATEST", "two", 1)
    executed, body = invoke(lambda_client, name, "1")
    assert (executed, body["mark"], body["count"], body["pid"]) == ("1", "one", 4, pid)
    lambda_client.update_function_configuration(FunctionName=name, Environment={"Variables": {"KEY": "v"}})
    assert invoke(lambda_client, name, "1")[1]["count"] == 5

    lambda_client.delete_function(FunctionName=name, Qualifier="1")
    err = error_of(lambda: lambda_client.invoke(FunctionName=name, Qualifier="1"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name, '1')}")
    err = error_of(lambda: lambda_client.invoke(FunctionName=name, Qualifier="7"))
    assert code_of(err)[:2] == ("ResourceNotFoundException", 404)
    assert invoke(lambda_client, name)[1]["mark"] == "two"


def test_a_version_keeps_tenant_isolation(lambda_client: Any) -> None:
    name = unique("tenver")
    create_python_function(lambda_client, name, COUNTER.format(mark="iso"), per_tenant=True)
    v1 = lambda_client.publish_version(FunctionName=name)
    assert v1["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}
    err = error_of(lambda: lambda_client.invoke(FunctionName=name, Qualifier="1"))
    assert code_of(err)[:2] == ("InvalidParameterValueException", 400)
    assert [invoke(lambda_client, name, "1", "blue")[1]["count"] for _ in range(2)] == [1, 2]
    executed, body = invoke(lambda_client, name, "1", "red")
    assert (executed, body["count"], body["tenant"]) == ("1", 1, "red")
    assert invoke(lambda_client, name, None, "blue")[1]["count"] == 1, "$LATEST's environments are not version 1's"


def test_terraforms_read_sequence_with_the_aws_cli(aws_cli: Any, tmp_path: Path, unique_name: str) -> None:
    """What Terraform's aws_lambda_function reads right after a create, each with `aws lambda ...`."""
    package = tmp_path / "code.zip"
    package.write_bytes(make_zip())
    created = aws_cli(
        "lambda",
        "create-function",
        "--function-name",
        unique_name,
        "--runtime",
        "provided.al2023",
        "--role",
        ROLE,
        "--handler",
        "bootstrap",
        "--zip-file",
        f"fileb://{package}",
        "--tags",
        "owner=terraform",
        "--publish",
    )
    assert created.returncode == 0, created.stderr

    def read(*args: str) -> Any:
        done = aws_cli("lambda", *args)
        assert done.returncode == 0, (args, done.stderr)
        return json.loads(done.stdout)

    got = read("get-function", "--function-name", unique_name)
    assert (got["Configuration"]["FunctionArn"], got["Tags"]) == (arn(unique_name), {"owner": "terraform"})
    versions = read("list-versions-by-function", "--function-name", unique_name)
    assert [v["Version"] for v in versions["Versions"]] == ["$LATEST", "1"]
    signing = read("get-function-code-signing-config", "--function-name", unique_name)
    assert signing == {"CodeSigningConfigArn": "", "FunctionName": unique_name}
    assert read("list-tags", "--resource", arn(unique_name)) == {"Tags": {"owner": "terraform"}}
    missing = aws_cli("lambda", "get-policy", "--function-name", unique_name)
    assert missing.returncode != 0
    assert "ResourceNotFoundException" in missing.stderr and "does not exist" in missing.stderr
    read(
        "add-permission",
        "--function-name",
        unique_name,
        "--statement-id",
        "apigw",
        "--action",
        "lambda:InvokeFunction",
        "--principal",
        "apigateway.amazonaws.com",
    )
    policy = json.loads(read("get-policy", "--function-name", unique_name)["Policy"])
    assert [s["Sid"] for s in policy["Statement"]] == ["apigw"]
    assert read("get-function", "--function-name", unique_name, "--qualifier", "1")["Configuration"]["Version"] == "1"


# -- aliases ----------------------------------------------------------------------------------------


def two_versions(client: Any, name: str, *, per_tenant: bool = False) -> None:
    """A Python function with versions 1 and 2, each answering with its version and a count."""
    create_python_function(client, name, COUNTER.format(mark="one"), per_tenant=per_tenant)
    client.publish_version(FunctionName=name)
    client.update_function_code(FunctionName=name, ZipFile=counter("two"))
    client.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert client.publish_version(FunctionName=name)["Version"] == "2"


def test_alias_lifecycle(lambda_client: Any, silo_server: Any) -> None:
    name = unique("alias")
    create(lambda_client, name)
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=make_zip(("bootstrap", b"2")))
    lambda_client.publish_version(FunctionName=name)
    live = lambda_client.create_alias(
        FunctionName=name,
        Name="live",
        FunctionVersion="1",
        Description="the live one",
        RoutingConfig={"AdditionalVersionWeights": {"2": 0.2}},
    )
    assert live["ResponseMetadata"]["HTTPStatusCode"] == 201
    expected = {
        "AliasArn": arn(name, "live"),
        "Name": "live",
        "FunctionVersion": "1",
        "Description": "the live one",
        "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.2}},
        "RevisionId": live["RevisionId"],
    }
    assert {k: v for k, v in live.items() if k != "ResponseMetadata"} == expected
    got = lambda_client.get_alias(FunctionName=name, Name="live")
    assert {k: v for k, v in got.items() if k != "ResponseMetadata"} == expected
    plain = lambda_client.create_alias(FunctionName=name, Name="edge", FunctionVersion="$LATEST")
    assert (plain["Description"], "RoutingConfig" in plain) == ("", False)
    assert [a["Name"] for a in lambda_client.list_aliases(FunctionName=name)["Aliases"]] == ["edge", "live"]
    assert [a["Name"] for a in lambda_client.list_aliases(FunctionName=name, FunctionVersion="2")["Aliases"]] == [
        "live"
    ]
    pages = list(lambda_client.get_paginator("list_aliases").paginate(FunctionName=name, MaxItems=1))
    assert [a["Name"] for page in pages for a in page["Aliases"]] == ["edge", "live"]

    # Reads through an alias report its version, under the alias's ARN (AWS-recorded).
    config = lambda_client.get_function(FunctionName=name, Qualifier="live")["Configuration"]
    assert (config["FunctionArn"], config["Version"]) == (arn(name, "live"), "1")
    assert lambda_client.get_function_configuration(FunctionName=arn(name, "edge"))["Version"] == "$LATEST"

    err = error_of(lambda: lambda_client.update_alias(FunctionName=name, Name="live", RevisionId="stale"))
    assert code_of(err)[:2] == ("PreconditionFailedException", 412)
    updated = lambda_client.update_alias(
        FunctionName=name, Name="live", Description="moved", FunctionVersion="2", RoutingConfig={}
    )
    assert (updated["FunctionVersion"], updated["Description"], "RoutingConfig" in updated) == ("2", "moved", False)
    assert updated["RevisionId"] != live["RevisionId"]

    err = error_of(lambda: lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1"))
    assert code_of(err) == ("ResourceConflictException", 409, f"Alias already exists: {arn(name, 'live')}")
    err = error_of(lambda: lambda_client.get_alias(FunctionName=name, Name="gone"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Cannot find alias arn: {arn(name, 'gone')}")
    err = error_of(lambda: lambda_client.update_alias(FunctionName=name, Name="gone", Description="x"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Alias not found: {arn(name, 'gone')}")
    assert lambda_client.delete_alias(FunctionName=name, Name="gone")["ResponseMetadata"]["HTTPStatusCode"] == 204
    err = error_of(lambda: lambda_client.create_alias(FunctionName=name, Name="2024", FunctionVersion="1"))
    assert code_of(err)[:2] == ("ValidationException", 400)
    assert "Value '2024' at 'name'" in code_of(err)[2]
    err = error_of(lambda: lambda_client.create_alias(FunctionName=name, Name="ten", FunctionVersion="10"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name, '10')}")
    err = error_of(lambda: lambda_client.invoke(FunctionName=name, Qualifier="no-alias"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name, 'no-alias')}")

    # A version an alias sends calls to cannot be deleted.
    err = error_of(lambda: lambda_client.delete_function(FunctionName=name, Qualifier="2"))
    assert code_of(err)[:2] == ("ResourceConflictException", 409)
    assert "live" in code_of(err)[2]

    # An alias has its own resource policy and revision.
    added = lambda_client.add_permission(
        FunctionName=name, Qualifier="live", StatementId="sns", Action="lambda:InvokeFunction", Principal="*"
    )
    assert json.loads(added["Statement"])["Resource"] == arn(name, "live")
    policy = lambda_client.get_policy(FunctionName=name, Qualifier="live")
    assert policy["RevisionId"] == lambda_client.get_alias(FunctionName=name, Name="live")["RevisionId"]
    err = error_of(lambda: lambda_client.get_policy(FunctionName=name))
    assert code_of(err)[0] == "ResourceNotFoundException", "the alias's policy is not the function's"
    err = error_of(
        lambda: lambda_client.add_permission(
            FunctionName=name, Qualifier="live", StatementId="x", Action="lambda:*", Principal="*", RevisionId="old"
        )
    )
    assert code_of(err) == (
        "PreconditionFailedException",
        412,
        "The Revision Id provided does not match the latest Revision Id. Call the GetPolicy API to retrieve the "
        "latest Revision Id",
    )
    err = error_of(
        lambda: lambda_client.add_permission(
            FunctionName=name, Qualifier="gone", StatementId="x", Action="lambda:*", Principal="*"
        )
    )
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Cannot find alias arn: {arn(name, 'gone')}")

    silo_server.restart()
    assert lambda_client.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "2"
    assert json.loads(lambda_client.get_policy(FunctionName=name, Qualifier="live")["Policy"])["Statement"]
    lambda_client.delete_alias(FunctionName=name, Name="live")
    assert [a["Name"] for a in lambda_client.list_aliases(FunctionName=name)["Aliases"]] == ["edge"]
    lambda_client.delete_function(FunctionName=name, Qualifier="2")


def test_routing_config_is_checked_as_lambda_checks_it(lambda_client: Any) -> None:
    name = unique("routing")
    create(lambda_client, name)
    lambda_client.publish_version(FunctionName=name)
    lambda_client.update_function_code(FunctionName=name, ZipFile=make_zip(("bootstrap", b"2")))
    lambda_client.publish_version(FunctionName=name)

    def refused(version: str, weights: dict[str, float]) -> tuple[str, int, str]:
        return code_of(
            error_of(
                lambda: lambda_client.create_alias(
                    FunctionName=name,
                    Name="a",
                    FunctionVersion=version,
                    RoutingConfig={"AdditionalVersionWeights": weights},
                )
            )
        )

    assert refused("1", {"2": 2.0}) == (
        "ValidationException",
        400,
        "1 validation error detected: Value '{2=2.0}' at 'routingConfig.additionalVersionWeights' failed to "
        "satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, "
        "Member must have value greater than or equal to 0.0, Member must not be null]",
    )
    assert refused("1", {"$LATEST": 0.5})[:2] == ("ValidationException", 400)
    assert refused("1", {"2": 0.5, "3": 0.1}) == (
        "InvalidParameterValueException",
        400,
        "Number of items in AdditionalVersionWeights cannot be greater than 1",
    )
    assert refused("1", {"1": 0.5}) == (
        "InvalidParameterValueException",
        400,
        "Invalid function version 1. Function version 1 is already included in routing configuration.",
    )
    assert refused("$LATEST", {"1": 0.5}) == (
        "InvalidParameterValueException",
        400,
        "$LATEST is not supported for an alias pointing to more than 1 version",
    )
    assert refused("1", {"10": 0.5}) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name, '10')}")
    assert lambda_client.list_aliases(FunctionName=name)["Aliases"] == []


def test_a_weighted_alias_splits_calls_by_weight(lambda_client: Any) -> None:
    name = unique("split")
    two_versions(lambda_client, name)
    lambda_client.create_alias(
        FunctionName=name, Name="canary", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.3}}
    )
    ran: list[str] = []
    for i in range(1000):
        target = (name, "canary") if i % 2 else (arn(name, "canary"), None)
        executed, body = invoke(lambda_client, *target)
        assert executed == body["version"], "X-Amz-Executed-Version names the version that ran"
        assert body["mark"] == {"1": "one", "2": "two"}[executed]
        assert body["invoked"] == arn(name, "canary")
        ran.append(executed)
    share = ran.count("2") / len(ran)
    # 1,000 draws of a 0.3 chance: the standard deviation is 0.0145, so 0.06 is more than four of them.
    assert abs(share - 0.3) < 0.06, share
    assert set(ran) == {"1", "2"}


def test_a_tenant_stays_on_one_version_while_the_weights_hold(lambda_client: Any) -> None:
    name = unique("sticky")
    two_versions(lambda_client, name, per_tenant=True)
    lambda_client.create_alias(
        FunctionName=name, Name="canary", FunctionVersion="1", RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}}
    )
    tenants = [f"tenant-{i}" for i in range(16)]
    seen: dict[str, set[str]] = {t: set() for t in tenants}
    counts: dict[str, list[int]] = {t: [] for t in tenants}
    for _ in range(4):
        for tenant in tenants:
            executed, body = invoke(lambda_client, name, "canary", tenant)
            assert (body["tenant"], body["version"]) == (tenant, executed)
            seen[tenant].add(executed)
            counts[tenant].append(body["count"])
    for tenant in tenants:
        assert len(seen[tenant]) == 1, f"{tenant} ran {sorted(seen[tenant])}"
        expected = "2" if aliases.tenant_point(name, "canary", tenant) < 0.5 else "1"
        assert seen[tenant] == {expected}
        assert counts[tenant] == [1, 2, 3, 4], "each tenant's calls reuse its own warm environment"
    assert {v for s in seen.values() for v in s} == {"1", "2"}, "16 tenants at 0.5 all landed on one version"
    # Raising the weight moves tenants onto version 2 only; at 1.0 all of them are there.
    lambda_client.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {"2": 0.8}})
    for tenant in tenants:
        executed, _ = invoke(lambda_client, name, "canary", tenant)
        if seen[tenant] == {"2"}:
            assert executed == "2", f"{tenant} moved back to version 1 when the weight of 2 went up"
    lambda_client.update_alias(FunctionName=name, Name="canary", RoutingConfig={"AdditionalVersionWeights": {"2": 1.0}})
    assert {invoke(lambda_client, name, "canary", t)[0] for t in tenants} == {"2"}
    err = error_of(lambda: lambda_client.invoke(FunctionName=name, Qualifier="canary"))
    assert code_of(err)[:2] == ("InvalidParameterValueException", 400)


def test_event_invoke_config_of_a_version_and_an_alias(lambda_client: Any) -> None:
    name = unique("eic")
    create(lambda_client, name)
    lambda_client.publish_version(FunctionName=name)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for qualifier in ("1", "live"):
        put = lambda_client.put_function_event_invoke_config(
            FunctionName=name, Qualifier=qualifier, MaximumRetryAttempts=0
        )
        assert put["FunctionArn"] == arn(name, qualifier)
        got = lambda_client.get_function_event_invoke_config(FunctionName=name, Qualifier=qualifier)
        assert got["MaximumRetryAttempts"] == 0
    listed = lambda_client.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
    assert sorted(c["FunctionArn"] for c in listed) == [arn(name, "1"), arn(name, "live")]
    err = error_of(
        lambda: lambda_client.put_function_event_invoke_config(FunctionName=name, Qualifier="7", MaximumRetryAttempts=0)
    )
    assert code_of(err)[:2] == ("ResourceNotFoundException", 404)
    # A deleted alias (or version) takes its config with it.
    lambda_client.delete_alias(FunctionName=name, Name="live")
    err = error_of(lambda: lambda_client.get_function_event_invoke_config(FunctionName=name, Qualifier="live"))
    assert code_of(err)[:2] == ("ResourceNotFoundException", 404)
    lambda_client.delete_function(FunctionName=name, Qualifier="1")
    assert lambda_client.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"] == []


def test_async_invoke_through_an_alias(lambda_client: Any, silo_server: Any) -> None:
    name = unique("asyncalias")
    two_versions(lambda_client, name)
    lambda_client.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    accepted = lambda_client.invoke(FunctionName=name, Qualifier="live", InvocationType="Event", Payload=b"{}")
    assert accepted["StatusCode"] == 202
    request_id = accepted["ResponseMetadata"]["RequestId"]
    deadline = time.monotonic() + 30 * TIME_SCALE
    while True:
        event = requests.get(
            f"{silo_server.endpoint}/silo/v1/functions/{name}/events/{request_id}",
            auth=SignedBy(silo_server.endpoint),
            timeout=30,
        ).json()
        if event.get("State") == "succeeded":
            break
        assert time.monotonic() < deadline, event
        time.sleep(0.1)
    assert event["ExecutedVersion"] == "2"
    assert json.loads(event["ResponsePayload"])["invoked"] == arn(name, "live")


def test_list_functions_with_every_version(lambda_client: Any) -> None:
    prefix = unique("all")
    names = [f"{prefix}-a", f"{prefix}-b"]
    create(lambda_client, names[0], Publish=True)
    create(lambda_client, names[1])
    listed = [
        (f["FunctionArn"], f["Version"])
        for page in lambda_client.get_paginator("list_functions").paginate(
            FunctionVersion="ALL", PaginationConfig={"PageSize": 1}
        )
        for f in page["Functions"]
        if f["FunctionName"].startswith(prefix)
    ]
    assert listed == [
        (arn(names[0], "$LATEST"), "$LATEST"),
        (arn(names[0], "1"), "1"),
        (arn(names[1], "$LATEST"), "$LATEST"),
    ]
    plain = [
        f["FunctionArn"]
        for page in lambda_client.get_paginator("list_functions").paginate()
        for f in page["Functions"]
        if f["FunctionName"] in names
    ]
    assert plain == [arn(names[0]), arn(names[1])]
