"""Resource-policy statements and tags below the API (silo.control.permissions, silo.control.tags): the
shapes Lambda writes and the rules it applies, as recorded from AWS."""

from __future__ import annotations

import pytest

from silo.control import permissions, tags
from silo.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    PolicyLengthExceededException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)

ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"


@pytest.mark.parametrize(
    ("given", "principal"),
    [
        ("*", "*"),
        ("111111111111", {"AWS": "arn:aws:iam::111111111111:root"}),
        ("arn:aws:iam::111111111111:user/u", {"AWS": "arn:aws:iam::111111111111:user/u"}),
        ("s3.amazonaws.com", {"Service": "s3.amazonaws.com"}),
        ("alexa-appkit.amazon.com", {"Service": "alexa-appkit.amazon.com"}),
    ],
)
def test_principals_as_lambda_writes_them(given: str, principal: object) -> None:
    assert permissions.principal(given, "000000000000") == principal


def test_a_principal_of_nothing_known_is_refused() -> None:
    with pytest.raises(InvalidParameterValueException, match="The provided principal was invalid"):
        permissions.principal("nobody", "000000000000")


def test_conditions_come_from_the_optional_members() -> None:
    body = {
        "StatementId": "url",
        "Action": "lambda:InvokeFunctionUrl",
        "Principal": "*",
        "SourceAccount": "111111111111",
        "FunctionUrlAuthType": "NONE",
        "PrincipalOrgID": "o-1234567890",
        "SourceArn": "arn:aws:s3:::bucket",
    }
    assert permissions.statement(body, ARN, "000000000000")["Condition"] == {
        "StringEquals": {
            "AWS:SourceAccount": "111111111111",
            "lambda:FunctionUrlAuthType": "NONE",
            "aws:PrincipalOrgID": "o-1234567890",
        },
        "ArnLike": {"AWS:SourceArn": "arn:aws:s3:::bucket"},
    }


def test_statements_are_checked_against_the_model_all_at_once() -> None:
    with pytest.raises(ValidationException) as info:
        permissions.statement({"StatementId": "a.b", "Action": "invoke"}, ARN, "000000000000")
    assert info.value.message.startswith("3 validation errors detected: ")
    assert "Value 'a.b' at 'statementId'" in info.value.message
    assert "Value 'null' at 'principal'" in info.value.message


def test_a_policy_takes_a_statement_id_once_and_20_kib_in_all() -> None:
    one = {"Sid": "a", "Effect": "Allow", "Principal": "*", "Action": "lambda:*", "Resource": ARN}
    with pytest.raises(ResourceConflictException, match=r"The statement id \(a\) provided already exists"):
        permissions.added([one], one)
    big = {**one, "Sid": "b", "Condition": {"ArnLike": {"AWS:SourceArn": "x" * 21000}}}
    with pytest.raises(PolicyLengthExceededException):
        permissions.added([one], big)
    with pytest.raises(ResourceNotFoundException, match=r"Statement b is not found in resource policy\."):
        permissions.removed([one], "b")
    with pytest.raises(ResourceNotFoundException, match=r"No policy is associated with the given resource\."):
        permissions.removed([], "a")
    assert permissions.removed([one], "a") == []


def test_tags_take_letters_of_any_script_and_refuse_the_rest() -> None:
    assert tags.check_tags({"équipe": "bleu", "k:1/2=3+4-5@6_7.8": ""}) == {"équipe": "bleu", "k:1/2=3+4-5@6_7.8": ""}
    with pytest.raises(ValidationException, match="Map keys must satisfy constraint"):
        tags.check_tags({"a!": "v"})
    with pytest.raises(ValidationException, match="Map value must satisfy constraint"):
        tags.check_tags({"a": "v" * 257})
    with pytest.raises(InvalidRequestContentException):
        tags.check_tags({"a": 1})
    with pytest.raises(InvalidParameterValueException, match=r"Number of tags exceeds resource tag limit\."):
        tags.merged({f"k{i}": "v" for i in range(50)}, {"one": "more"})


def test_only_a_functions_unqualified_arn_is_taggable_here() -> None:
    assert tags.resource_function(ARN).name == "f"
    with pytest.raises(InvalidParameterValueException, match="Tags on function aliases and versions"):
        tags.resource_function(ARN + ":live")
    with pytest.raises(ResourceNotFoundException, match="only functions can be tagged"):
        tags.resource_function("arn:aws:lambda:us-east-1:000000000000:code-signing-config:csc-0123456789abcdefg")
    with pytest.raises(ValidationException, match="at 'resource'"):
        tags.resource_function("arn:aws:s3:::bucket")
