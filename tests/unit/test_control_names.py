from __future__ import annotations

import pytest

from silo.control.names import FunctionRef, function_arn, merge_qualifier, parse_function_name
from silo.errors import InvalidParameterValueException, ValidationException


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("fn", FunctionRef("fn", None, None, None)),
        ("fn:$LATEST", FunctionRef("fn", "$LATEST", None, None)),
        ("fn:prod", FunctionRef("fn", "prod", None, None)),
        ("123456789012:function:fn", FunctionRef("fn", None, None, "123456789012")),
        ("123456789012:function:fn:3", FunctionRef("fn", "3", None, "123456789012")),
        (
            "arn:aws:lambda:eu-west-1:123456789012:function:my-fn_1",
            FunctionRef("my-fn_1", None, "eu-west-1", "123456789012"),
        ),
        (
            "arn:aws:lambda:us-gov-west-1:123456789012:function:fn:$LATEST",
            FunctionRef("fn", "$LATEST", "us-gov-west-1", "123456789012"),
        ),
    ],
)
def test_name_forms(value: str, expected: FunctionRef) -> None:
    assert parse_function_name(value, namespaced=True) == expected


def test_dots_only_in_namespaced_names() -> None:
    assert parse_function_name("a.b", namespaced=True).name == "a.b"
    with pytest.raises(ValidationException):
        parse_function_name("a.b", namespaced=False)


@pytest.mark.parametrize("value", ["00000000000\u0660:0", "arn:aws:lambda:us-east-\u0661:123456789012:function:f"])
def test_digits_of_other_scripts_are_not_digits(value: str) -> None:
    # Found by tests/fuzz/test_fuzz_names.py: Python's \d took an Arabic-Indic zero for an account digit.
    with pytest.raises(ValidationException):
        parse_function_name(value, namespaced=True)


def test_length_limits() -> None:
    with pytest.raises(ValidationException) as info:
        parse_function_name("arn:aws:lambda:us-east-1:123456789012:function:" + "f" * 100, namespaced=False)
    assert "Member must have length less than or equal to 140" in info.value.message
    with pytest.raises(InvalidParameterValueException):
        parse_function_name("f" * 65, namespaced=True)
    assert parse_function_name("f" * 64, namespaced=True).name == "f" * 64


def test_qualifier_rules() -> None:
    ref = parse_function_name("fn:1", namespaced=True)
    assert merge_qualifier(ref, None) == "1"
    assert merge_qualifier(ref, "1") == "1"
    assert merge_qualifier(parse_function_name("fn", namespaced=True), "prod") == "prod"
    with pytest.raises(InvalidParameterValueException):
        merge_qualifier(ref, "2")
    with pytest.raises(ValidationException) as info:
        merge_qualifier(ref, "bad?qualifier")
    assert "at 'qualifier'" in info.value.message


def test_arns() -> None:
    assert function_arn("us-east-1", "1", "fn") == "arn:aws:lambda:us-east-1:1:function:fn"
    assert function_arn("us-east-1", "1", "fn", "3") == "arn:aws:lambda:us-east-1:1:function:fn:3"
