"""The rest of a function's lifecycle as boto3 and the AWS CLI see it, against a real `silo serve`: code
signing, tags, resource policies, versions and aliases, and what Terraform reads after a create.

The server lives for the whole session (tests/conftest.py), so every test uses its own function names.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.compat.test_control_plane import create, error_of, unique

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
