"""EventInvokeConfig validation, storage and the policy the dispatcher reads, without a server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from silo import errors
from silo.control.event_config import AsyncPolicy, EventInvokeConfigService
from silo.store.db import Database, open_database
from silo.store.events import EventInvokeConfigRepository
from silo.types import FunctionSpec

ARN = "arn:aws:lambda:us-east-1:000000000000:function:"


class Functions:
    region = "us-east-1"
    account = "000000000000"

    def __init__(self, db: Database, **per_tenant: bool) -> None:
        self.per_tenant = per_tenant
        with db.transaction() as conn:
            for name in per_tenant:
                conn.execute("INSERT INTO functions (name, created_at) VALUES (?, 'now')", (name,))

    def resolve(self, function_name: str, qualifier: str | None) -> FunctionSpec:
        name = function_name.split(":")[6] if function_name.startswith("arn:") else function_name.split(":")[0]
        if name not in self.per_tenant or qualifier not in (None, "$LATEST"):
            raise errors.ResourceNotFoundException(f"Function not found: {ARN}{name}")
        return FunctionSpec(
            name, ARN + name, "$LATEST", "r", "python3.11", "h", Path("/x"), 128, 3, 512, {}, self.per_tenant[name]
        )


@pytest.fixture()
def service(tmp_path: Path) -> EventInvokeConfigService:
    db = open_database(tmp_path / "silo.db")
    functions = Functions(db, f=False, g=False, t=True)
    return EventInvokeConfigService(functions, EventInvokeConfigRepository(db), clock=lambda: 1700000000.5)


def test_defaults_apply_without_a_config(service: EventInvokeConfigService) -> None:
    assert service.policy("f", None) == AsyncPolicy(max_retries=2, max_age_s=21600)


def test_put_then_update_then_policy(service: EventInvokeConfigService) -> None:
    out = service.put(
        "f", None, {"MaximumRetryAttempts": 1, "DestinationConfig": {"OnFailure": {"Destination": ARN + "g"}}}
    )
    assert out == {
        "LastModified": 1700000000.5,
        "FunctionArn": ARN + "f:$LATEST",
        "MaximumRetryAttempts": 1,
        "DestinationConfig": {"OnSuccess": {}, "OnFailure": {"Destination": ARN + "g"}},
    }
    service.update("f", "$LATEST", {"MaximumEventAgeInSeconds": 120})
    assert service.policy("f", None) == AsyncPolicy(max_retries=1, max_age_s=120, on_failure=ARN + "g")
    assert service.list("f", None, None)["FunctionEventInvokeConfigs"][0]["MaximumEventAgeInSeconds"] == 120


@pytest.mark.parametrize(
    ("body", "error", "text"),
    [
        ({}, errors.InvalidParameterValueException, "at least one of error handling"),
        ({"MaximumRetryAttempts": 3}, errors.ValidationException, "less than or equal to 2"),
        ({"MaximumRetryAttempts": -1}, errors.ValidationException, "greater than or equal to 0"),
        ({"MaximumEventAgeInSeconds": 59}, errors.ValidationException, "greater than or equal to 60"),
        ({"MaximumRetryAttempts": "2"}, errors.InvalidRequestContentException, "must be an integer"),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": ARN + "f"}}},
            errors.InvalidParameterValueException,
            "destination for itself",
        ),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": ARN + "t"}}},
            errors.InvalidParameterValueException,
            "PER_TENANT",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:sns:us-east-1:000000000000:x"}}},
            errors.InvalidParameterValueException,
            "an SNS topic",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "kafka://topic"}}},
            errors.InvalidParameterValueException,
            "a Kafka topic",
        ),
        (
            {"DestinationConfig": {"OnSuccess": {"Destination": "nope"}}},
            errors.ValidationException,
            "'destinationConfig.onSuccess.destination'",
        ),
    ],
)
def test_put_is_validated(
    service: EventInvokeConfigService, body: dict[str, object], error: type[Exception], text: str
) -> None:
    with pytest.raises(error, match=re.escape(text)):
        service.put("f", None, body)


def test_missing_function_and_missing_config(service: EventInvokeConfigService) -> None:
    with pytest.raises(errors.ResourceNotFoundException, match=r"^The function doesn't exist\.$"):
        service.put("nope", None, {"MaximumRetryAttempts": 1})
    with pytest.raises(
        errors.ResourceNotFoundException, match=r"function:f:\$LATEST doesn't have an EventInvokeConfig"
    ):
        service.get("f", None)
    with pytest.raises(errors.ResourceNotFoundException, match=r"function:nope:\$LATEST doesn't have"):
        service.delete("nope", None)
    with pytest.raises(errors.InvalidParameterValueException, match="does not match the specified qualifier"):
        service.get("f:1", "2")


def test_list_pages(service: EventInvokeConfigService) -> None:
    service.put("f", None, {"MaximumRetryAttempts": 0})
    page = service.list("f", None, 1)
    assert len(page["FunctionEventInvokeConfigs"]) == 1 and "NextMarker" not in page
    with pytest.raises(errors.ValidationException, match="less than or equal to 50"):
        service.list("f", None, 51)
