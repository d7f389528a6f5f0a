"""What Lambda refuses for tenant isolation, and the features silo does not implement, as boto3 sees them:
provisioned concurrency, SnapStart and event source mappings on a PER_TENANT function get Lambda's refusal;
on any other function the writes are refused saying silo does not implement them, and the reads answer
that there is none, never an unknown operation. (Function URLs: tests/compat/test_function_urls.py.)"""

from __future__ import annotations

from typing import Any

from tests.compat.test_control_plane import create, error_of, unique
from tests.compat.test_versions import arn, code_of

PER_TENANT = {"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}}
QUEUE = "arn:aws:sqs:us-east-1:000000000000:orders"


def published(client: Any, name: str, **extra: Any) -> str:
    create(client, name, **extra)
    version: str = client.publish_version(FunctionName=name)["Version"]
    client.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    return version


def test_provisioned_concurrency_is_refused_for_tenant_isolation(lambda_client: Any) -> None:
    name = unique("pc-tenant")
    version = published(lambda_client, name, **PER_TENANT)
    for qualifier in (version, "live"):
        err = error_of(
            lambda q=qualifier: lambda_client.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier=q, ProvisionedConcurrentExecutions=1
            )
        )
        code, status, message = code_of(err)
        assert (code, status) == ("InvalidParameterValueException", 400)
        assert message.startswith("Provisioned concurrency is not supported for functions with tenant isolation mode.")


def test_provisioned_concurrency_without_tenant_isolation(lambda_client: Any) -> None:
    name = unique("pc-plain")
    version = published(lambda_client, name)
    err = error_of(
        lambda: lambda_client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2
        )
    )
    code, status, message = code_of(err)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert message.startswith("silo does not implement provisioned concurrency")
    # Lambda's checks come first, in Lambda's words (AWS-recorded).
    err = error_of(
        lambda: lambda_client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        )
    )
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "Provisioned Concurrency Configs cannot be applied to unpublished function versions.",
    )
    err = error_of(
        lambda: lambda_client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="nope", ProvisionedConcurrentExecutions=1
        )
    )
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Cannot find alias arn: {arn(name, 'nope')}")
    err = error_of(
        lambda: lambda_client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="42", ProvisionedConcurrentExecutions=1
        )
    )
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name, '42')}")

    # The reads say there is none, as Lambda says of a version without one.
    err = error_of(lambda: lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version))
    assert code_of(err) == (
        "ProvisionedConcurrencyConfigNotFoundException",
        404,
        "No Provisioned Concurrency Config found for this function",
    )
    err = error_of(lambda: lambda_client.get_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST"))
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "The function resource provided must be an alias or a published version.",
    )
    listed = lambda_client.list_provisioned_concurrency_configs(FunctionName=name)
    assert listed["ProvisionedConcurrencyConfigs"] == []
    deleted = lambda_client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    err = error_of(lambda: lambda_client.list_provisioned_concurrency_configs(FunctionName=name + "-none"))
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(name + '-none')}")


def test_snapstart_is_refused_for_tenant_isolation(lambda_client: Any) -> None:
    name = unique("snap-tenant")
    err = error_of(lambda: create(lambda_client, name, SnapStart={"ApplyOn": "PublishedVersions"}, **PER_TENANT))
    assert code_of(err) == (
        "InvalidParameterValueException",
        400,
        "SnapStart is not supported for functions with tenant isolation mode.",
    )
    create(lambda_client, name, **PER_TENANT)
    err = error_of(
        lambda: lambda_client.update_function_configuration(
            FunctionName=name, SnapStart={"ApplyOn": "PublishedVersions"}
        )
    )
    assert code_of(err)[:2] == ("InvalidParameterValueException", 400)
    assert lambda_client.get_function_configuration(FunctionName=name)["SnapStart"]["ApplyOn"] == "None"


def test_event_source_mappings(lambda_client: Any) -> None:
    tenant, plain = unique("esm-tenant"), unique("esm-plain")
    create(lambda_client, tenant, **PER_TENANT)
    create(lambda_client, plain)
    err = error_of(lambda: lambda_client.create_event_source_mapping(FunctionName=tenant, EventSourceArn=QUEUE))
    code, status, message = code_of(err)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert message.startswith("Event source mappings are not supported for functions with tenant isolation mode.")
    err = error_of(lambda: lambda_client.create_event_source_mapping(FunctionName=arn(plain), EventSourceArn=QUEUE))
    code, status, message = code_of(err)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert message.startswith("silo does not implement event source mappings")
    err = error_of(
        lambda: lambda_client.create_event_source_mapping(FunctionName=plain + "-none", EventSourceArn=QUEUE)
    )
    assert code_of(err) == ("ResourceNotFoundException", 404, f"Function not found: {arn(plain + '-none')}")

    assert lambda_client.list_event_source_mappings()["EventSourceMappings"] == []
    assert lambda_client.list_event_source_mappings(FunctionName=plain)["EventSourceMappings"] == []
    some = "12345678-1234-1234-1234-123456789012"
    for call in (
        lambda: lambda_client.get_event_source_mapping(UUID=some),
        lambda: lambda_client.update_event_source_mapping(UUID=some, BatchSize=5),
        lambda: lambda_client.delete_event_source_mapping(UUID=some),
    ):
        assert code_of(error_of(call)) == (
            "ResourceNotFoundException",
            404,
            "The resource you requested does not exist.",
        )
