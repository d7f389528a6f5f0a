"""CreateFunction / UpdateFunctionConfiguration validation, with Lambda's error classes and messages."""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any

import pytest

from silo.control.validation import Rules, S3Location, create_request, update_code, update_configuration
from silo.errors import (
    InvalidParameterValueException,
    InvalidRequestContentException,
    LambdaError,
    ValidationException,
)

RULES = Rules(available_runtimes=("python3.11", "provided.al2023", "provided.al2"), architecture="x86_64")
ROLE = "arn:aws:iam::123456789012:role/lambda-role"


def zip_b64() -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return e\n")
    return base64.b64encode(buf.getvalue()).decode()


def body(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "FunctionName": "fn",
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": zip_b64()},
    }
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def fails(kind: type[LambdaError], **overrides: Any) -> str:
    with pytest.raises(kind) as info:
        create_request(body(**overrides), RULES)
    assert type(info.value) is kind
    return info.value.message


def test_defaults_of_a_minimal_function() -> None:
    request = create_request(body(), RULES)
    assert request.ref.name == "fn"
    assert request.config == {
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Description": "",
        "Timeout": 3,
        "MemorySize": 128,
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
        "TracingConfig": {"Mode": "PassThrough"},
        "SnapStart": {"ApplyOn": "None"},
        "LoggingConfig": {"LogFormat": "Text", "LogGroup": "/aws/lambda/fn"},
    }
    assert isinstance(request.package, bytes) and request.package.startswith(b"PK")


def test_function_name_pattern() -> None:
    assert fails(ValidationException, FunctionName="bad name!") == (
        "1 validation error detected: Value 'bad name!' at 'functionName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: (arn:(aws[a-zA-Z-]*)?:lambda:)?((eusc-)?[a-z]{2}"
        r"((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?(\d{12}:)?(function:)?([a-zA-Z0-9-_]+)"
        r"(:(\$LATEST|[a-zA-Z0-9-_]+))?"
    )


def test_function_name_longer_than_64_is_an_invalid_parameter() -> None:
    name = "f" * 65
    assert fails(InvalidParameterValueException, FunctionName=name) == (
        f"1 validation error detected: Value '{name}' at 'functionName' failed to satisfy constraint: "
        "Member must have length less than or equal to 64"
    )


def test_function_name_may_be_an_arn() -> None:
    request = create_request(body(FunctionName="arn:aws:lambda:us-east-1:123456789012:function:fromarn"), RULES)
    assert request.ref.name == "fromarn"


def test_role_pattern() -> None:
    assert fails(ValidationException, Role="r1") == (
        "1 validation error detected: Value 'r1' at 'role' failed to satisfy constraint: Member must satisfy "
        r"regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+"
    )


def test_several_violations_are_reported_together() -> None:
    message = fails(ValidationException, Role="r1", Timeout=0, MemorySize=64)
    assert message.startswith("3 validation errors detected: ")
    assert "Value '0' at 'timeout' failed to satisfy constraint: Member must have value greater than or equal to 1" in (
        message
    )
    assert "Value '64' at 'memorySize' failed to satisfy constraint: Member must have value greater than" in message
    assert message.count("; ") == 2


@pytest.mark.parametrize(
    ("member", "value", "wire", "constraint"),
    [
        ("MemorySize", 127, "memorySize", "Member must have value greater than or equal to 128"),
        ("MemorySize", 10241, "memorySize", "Member must have value less than or equal to 10240"),
        ("Timeout", 0, "timeout", "Member must have value greater than or equal to 1"),
        ("Timeout", 901, "timeout", "Member must have value less than or equal to 900"),
        ("Description", "d" * 257, "description", "Member must have length less than or equal to 256"),
        ("Handler", "h" * 129, "handler", "Member must have length less than or equal to 128"),
        ("Handler", "app handler", "handler", r"Member must satisfy regular expression pattern: [^\s]+"),
    ],
)
def test_ranges_and_lengths(member: str, value: Any, wire: str, constraint: str) -> None:
    assert fails(ValidationException, **{member: value}) == (
        f"1 validation error detected: Value '{value}' at '{wire}' failed to satisfy constraint: {constraint}"
    )


@pytest.mark.parametrize(("size", "ok"), [(511, False), (512, True), (10240, True), (10241, False)])
def test_ephemeral_storage_bounds(size: int, ok: bool) -> None:
    if ok:
        assert create_request(body(EphemeralStorage={"Size": size}), RULES).config["EphemeralStorage"] == {"Size": size}
    else:
        assert f"Value '{size}' at 'ephemeralStorage.size'" in fails(
            ValidationException, EphemeralStorage={"Size": size}
        )


def test_limits_are_inclusive() -> None:
    config = create_request(body(MemorySize=10240, Timeout=900, Description="d" * 256), RULES).config
    assert (config["MemorySize"], config["Timeout"]) == (10240, 900)


def test_handler_and_runtime_are_mandatory() -> None:
    expected = "Runtime and Handler are mandatory parameters for functions created with deployment packages."
    assert fails(InvalidParameterValueException, Handler=None) == expected
    assert fails(InvalidParameterValueException, Runtime=None) == expected


def test_unknown_runtime_gets_the_enum_message() -> None:
    message = fails(InvalidParameterValueException, Runtime="cobol85")
    assert message.startswith(
        "Value cobol85 at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [python3.8, "
    )
    assert message.endswith("]")


def test_known_runtime_absent_from_this_host_names_the_available_ones() -> None:
    message = fails(InvalidParameterValueException, Runtime="java21")
    assert "java21" in message
    assert "python3.11, provided.al2023, provided.al2" in message


def test_retired_runtime_gets_lambdas_deprecation_message() -> None:
    assert fails(InvalidParameterValueException, Runtime="python3.7").startswith(
        "The runtime parameter of python3.7 is no longer supported"
    )


def test_environment_variables_are_stored() -> None:
    config = create_request(body(Environment={"Variables": {"A_B": "1", "Cc": "x"}}), RULES).config
    assert config["Environment"] == {"Variables": {"A_B": "1", "Cc": "x"}}


def test_environment_key_pattern() -> None:
    assert fails(ValidationException, Environment={"Variables": {"1BAD": "x"}}) == (
        "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: "
        "Map keys must satisfy constraint: [Member must satisfy regular expression pattern: [a-zA-Z]([a-zA-Z0-9_])+]"
    )


def test_reserved_environment_keys_are_refused() -> None:
    message = fails(
        InvalidParameterValueException,
        Environment={"Variables": {"AWS_REGION": "x", "OK": "1", "LAMBDA_TASK_ROOT": "h"}},
    )
    assert message == (
        "Lambda was unable to configure your environment variables because the environment variables you have "
        "provided contains reserved keys that are currently not supported for modification. "
        "Reserved keys used in this request: AWS_REGION, LAMBDA_TASK_ROOT"
    )
    # `_HANDLER` is reserved too, but like on Lambda the key pattern refuses it first.
    assert "Map keys must satisfy" in fails(ValidationException, Environment={"Variables": {"_HANDLER": "h"}})


def test_environment_over_4kb_is_refused() -> None:
    variables = {"BIG": "x" * 4100}
    message = fails(InvalidParameterValueException, Environment={"Variables": variables})
    assert message.startswith(
        "Lambda was unable to configure your environment variables because the environment variables you have "
        'provided exceeded the 4KB limit. String measured: {"BIG":"xxx'
    )


def test_logging_levels_require_json() -> None:
    message = fails(InvalidParameterValueException, LoggingConfig={"LogFormat": "Text", "ApplicationLogLevel": "DEBUG"})
    assert "ApplicationLogLevel" in message and "JSON" in message
    json_logging = create_request(body(LoggingConfig={"LogFormat": "JSON", "SystemLogLevel": "WARN"}), RULES)
    assert json_logging.config["LoggingConfig"] == {
        "LogFormat": "JSON",
        "ApplicationLogLevel": "INFO",
        "SystemLogLevel": "WARN",
        "LogGroup": "/aws/lambda/fn",
    }


def test_logging_enums() -> None:
    message = fails(ValidationException, LoggingConfig={"LogFormat": "XML"})
    assert message == (
        "1 validation error detected: Value 'XML' at 'loggingConfig.logFormat' failed to satisfy constraint: "
        "Member must satisfy enum value set: [JSON, Text]"
    )
    assert "at 'loggingConfig.applicationLogLevel'" in fails(
        ValidationException, LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "LOUD"}
    )


def test_custom_log_group() -> None:
    config = create_request(body(LoggingConfig={"LogGroup": "/my/group"}), RULES).config
    assert config["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": "/my/group"}


def test_tenancy_config_per_tenant_is_accepted() -> None:
    config = create_request(body(TenancyConfig={"TenantIsolationMode": "PER_TENANT"}), RULES).config
    assert config["TenancyConfig"] == {"TenantIsolationMode": "PER_TENANT"}


def test_tenancy_config_other_mode_is_refused() -> None:
    assert fails(ValidationException, TenancyConfig={"TenantIsolationMode": "SHARED"}) == (
        "1 validation error detected: Value 'SHARED' at 'tenancyConfig.tenantIsolationMode' failed to satisfy "
        "constraint: Member must satisfy enum value set: [PER_TENANT]"
    )


def test_snapstart_is_refused_with_tenant_isolation() -> None:
    fails(
        InvalidParameterValueException,
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
        SnapStart={"ApplyOn": "PublishedVersions"},
    )


def test_code_is_a_zip_file_or_an_s3_object() -> None:
    request = create_request(body(Code={"S3Bucket": "b", "S3Key": "k", "S3ObjectVersion": "v"}), RULES)
    assert request.package == S3Location("b", "k", "v")
    assert "S3Key" in fails(InvalidParameterValueException, Code={"S3Bucket": "b"})
    assert "not both" in fails(
        InvalidParameterValueException, Code={"S3Bucket": "b", "S3Key": "k", "ZipFile": zip_b64()}
    )
    assert "ImageUri" in fails(InvalidParameterValueException, Code={"ImageUri": "repo/img:1"})
    assert fails(InvalidParameterValueException, Code={}) == "Please provide a source for function code."
    assert "base64" in fails(InvalidRequestContentException, Code={"ZipFile": "!!not base64!!"})


def test_architecture_must_be_the_hosts() -> None:
    assert "arm64" in fails(InvalidParameterValueException, Architectures=["arm64"])
    assert "at 'architectures'" in fails(ValidationException, Architectures=["sparc"])
    assert "at 'architectures'" in fails(ValidationException, Architectures=["x86_64", "x86_64"])
    assert create_request(body(Architectures=["x86_64"]), RULES).config["Architectures"] == ["x86_64"]


def test_required_members() -> None:
    message = fails(ValidationException, FunctionName=None, Role=None, Code=None)
    assert message.startswith("3 validation errors detected: ")
    assert "Value 'null' at 'role' failed to satisfy constraint: Member must not be null" in message


def test_wrong_json_types_are_malformed_requests() -> None:
    assert "Timeout" in fails(InvalidRequestContentException, Timeout="3")
    assert "MemorySize" in fails(InvalidRequestContentException, MemorySize=True)
    fails(InvalidRequestContentException, Environment={"Variables": {"A1": 1}})


def test_unknown_members_are_ignored() -> None:
    request = create_request(body(SomethingNew={"x": 1}, KMSKeyArn="arn:aws:kms:x", VpcConfig={}), RULES)
    assert "SomethingNew" not in request.config


def test_publish_to_is_refused_clearly() -> None:
    assert "PublishTo" in fails(InvalidParameterValueException, PublishTo="LATEST_PUBLISHED")


LAYER = "arn:aws:lambda:us-east-1:000000000000:layer:{}:{}"


def test_layers_are_kept_in_order_as_given() -> None:
    arns = [LAYER.format("b", 2), LAYER.format("a", 1)]
    assert create_request(body(Layers=arns), RULES).config["Layers"] == arns
    assert "Layers" not in create_request(body(Layers=[]), RULES).config


def test_layers_are_checked_as_lambda_checks_them() -> None:
    message = fails(ValidationException, Layers=["arn:aws:lambda:us-east-1:1:layer:x:1"])
    assert "at 'layers' failed to satisfy constraint" in message
    assert "at 'layers'" in fails(ValidationException, Layers=[LAYER.format("x" * 140, 1)])
    six = [LAYER.format(f"l{n}", 1) for n in range(6)]
    assert fails(InvalidParameterValueException, Layers=six) == "Cannot reference more than 5 layers."
    twice = fails(InvalidParameterValueException, Layers=[LAYER.format("x", 1), LAYER.format("x", 2)])
    assert twice.startswith("Two different versions of the same layer are not allowed")


def test_update_configuration_sets_and_clears_layers() -> None:
    current = create_request(body(Layers=[LAYER.format("a", 1)]), RULES).config
    assert update_configuration({"Layers": [LAYER.format("a", 2)]}, current, "fn", RULES)["Layers"] == [
        LAYER.format("a", 2)
    ]
    assert update_configuration({"Layers": []}, current, "fn", RULES)["Layers"] == []
    assert update_configuration({"MemorySize": 256}, current, "fn", RULES)["Layers"] == current["Layers"]


def test_image_package_is_refused() -> None:
    assert fails(InvalidParameterValueException, PackageType="Image").startswith("PackageType Image is not supported")


def test_update_configuration_merges_and_validates() -> None:
    current = create_request(body(Environment={"Variables": {"A1": "x"}}), RULES).config
    config = update_configuration({"MemorySize": 256, "Description": "new"}, current, "fn", RULES)
    assert config["MemorySize"] == 256
    assert config["Description"] == "new"
    assert config["Environment"] == {"Variables": {"A1": "x"}}
    assert config["Timeout"] == 3
    cleared = update_configuration({"Environment": {"Variables": {}}}, current, "fn", RULES)
    assert cleared["Environment"] == {"Variables": {}}
    with pytest.raises(ValidationException):
        update_configuration({"Timeout": 1000}, current, "fn", RULES)


def test_update_configuration_refuses_tenancy_config() -> None:
    current = create_request(body(), RULES).config
    with pytest.raises(InvalidParameterValueException) as info:
        update_configuration({"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}}, current, "fn", RULES)
    assert "cannot be changed" in info.value.message


def test_update_configuration_switching_to_text_drops_inherited_levels() -> None:
    current = create_request(body(LoggingConfig={"LogFormat": "JSON", "ApplicationLogLevel": "DEBUG"}), RULES).config
    config = update_configuration({"LoggingConfig": {"LogFormat": "Text"}}, current, "fn", RULES)
    assert config["LoggingConfig"] == {"LogFormat": "Text", "LogGroup": "/aws/lambda/fn"}


def test_update_code_request() -> None:
    request = update_code({"ZipFile": zip_b64(), "RevisionId": "r", "DryRun": True}, RULES)
    assert (request.revision_id, request.dry_run, request.architectures) == ("r", True, None)
    assert update_code({"S3Bucket": "b", "S3Key": "k"}, RULES).package == S3Location("b", "k")
    with pytest.raises(InvalidParameterValueException):
        update_code({"S3Key": "k"}, RULES)
    with pytest.raises(InvalidParameterValueException):
        update_code({"ZipFile": zip_b64(), "Architectures": ["arm64"]}, RULES)
