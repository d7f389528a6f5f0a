"""The Credentials silo setting, checked when it is given: what it stores, and each refusal with its reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from silo.control import silo_settings
from silo.control.credential_settings import to_spec, validate
from silo.credentials import policy
from silo.errors import InvalidParameterValueException
from silo.types import TENANT_ID_MAX, CredentialsSetting, PostgresSetting

PER_TENANT = {"TenancyConfig": {"TenantIsolationMode": "PER_TENANT"}}
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/${TenantId}/*"}],
}


def refused(value: Any, *, per_tenant: bool = True) -> str:
    with pytest.raises(InvalidParameterValueException) as caught:
        validate(value, per_tenant=per_tenant)
    return caught.value.message


def test_both_providers_are_stored_with_their_defaults_filled_in() -> None:
    assert validate({"Sts": {}, "Token": {}}, per_tenant=True) == {
        "Sts": {"SessionPolicy": None, "DurationSeconds": 3600},
        "Token": {"DurationSeconds": 900, "Audience": "silo"},
    }
    assert validate({"Token": {"DurationSeconds": 60, "Audience": "billing"}}, per_tenant=True) == {
        "Token": {"DurationSeconds": 60, "Audience": "billing"}
    }


def test_the_postgres_provider_is_stored_with_its_defaults_and_reaches_the_environments() -> None:
    stored = validate({"Postgres": {"Database": "App", "BaseRole": "app tenant"}}, per_tenant=True)
    assert stored == {
        "Postgres": {"Database": "App", "BaseRole": "app tenant", "ConnectionLimit": 5, "DurationSeconds": 3600}
    }
    given = {"Database": "app", "BaseRole": "app_tenant", "ConnectionLimit": 1000, "DurationSeconds": 300}
    spec = to_spec(validate({"Postgres": given}, per_tenant=True))
    assert spec == CredentialsSetting(postgres=PostgresSetting("app", "app_tenant", 1000, 300))


def test_a_policy_given_as_an_object_is_stored_as_its_json_text() -> None:
    stored = validate({"Sts": {"SessionPolicy": POLICY, "DurationSeconds": 900}}, per_tenant=True)
    assert stored is not None
    assert json.loads(stored["Sts"]["SessionPolicy"]) == POLICY
    text = json.dumps(POLICY)
    assert validate({"Sts": {"SessionPolicy": text}}, per_tenant=True) == {
        "Sts": {"SessionPolicy": text, "DurationSeconds": 3600}
    }


def test_the_setting_travels_through_silo_settings_and_null_removes_it() -> None:
    settings = silo_settings.validate({"Credentials": {"Token": {}}}, PER_TENANT)
    assert settings["Credentials"] == {"Token": {"DurationSeconds": 900, "Audience": "silo"}}
    stored = {**PER_TENANT, "Silo": settings}
    assert silo_settings.validate({"Network": "outbound"}, stored)["Credentials"] == settings["Credentials"]
    assert silo_settings.validate({"Credentials": None}, stored)["Credentials"] is None
    assert silo_settings.current(PER_TENANT)["Credentials"] is None


def test_what_the_environments_are_given_of_it() -> None:
    assert to_spec(None) is None
    assert to_spec({"Token": {"DurationSeconds": 120, "Audience": "a"}}) == CredentialsSetting(
        token_duration_s=120, token_audience="a"
    )
    assert to_spec({"Sts": {"SessionPolicy": "{}", "DurationSeconds": 900}}) == CredentialsSetting(
        sts_duration_s=900, sts_session_policy="{}"
    )


def test_only_a_tenant_isolated_function_has_credentials_per_tenant() -> None:
    assert "tenant isolation mode" in refused({"Token": {}}, per_tenant=False)
    assert validate(None, per_tenant=False) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("token", "must be an object"),
        ({}, "at least one provider"),
        ({"Mysql": {}}, "unknown member(s) Mysql"),
        ({"Postgres": {}}, "Postgres.Database is required"),
        ({"Postgres": {"Database": "app"}}, "Postgres.BaseRole is required"),
        ({"Postgres": {"Database": "app", "BaseRole": "t", "Role": "x"}}, "unknown member(s) Role in Postgres"),
        ({"Postgres": {"Database": "", "BaseRole": "t"}}, "Postgres.Database must be a PostgreSQL name"),
        ({"Postgres": {"Database": "a" * 64, "BaseRole": "t"}}, "of 1 to 63 bytes"),
        ({"Postgres": {"Database": "é" * 32, "BaseRole": "t"}}, "of 1 to 63 bytes"),  # 64 bytes of UTF-8
        ({"Postgres": {"Database": "app", "BaseRole": "a\x00b"}}, "Postgres.BaseRole must be a PostgreSQL name"),
        ({"Postgres": {"Database": "app", "BaseRole": "a\nb"}}, "Postgres.BaseRole must be printable"),
        ({"Postgres": {"Database": "app", "BaseRole": 7}}, "Postgres.BaseRole must be a PostgreSQL name"),
        ({"Postgres": {"Database": "app", "BaseRole": "postgres"}}, "a role of PostgreSQL's own"),
        ({"Postgres": {"Database": "app", "BaseRole": "PUBLIC"}}, "a role of PostgreSQL's own"),
        ({"Postgres": {"Database": "app", "BaseRole": "pg_read_all_data"}}, "a role of PostgreSQL's own"),
        ({"Postgres": {"Database": "app", "BaseRole": "t", "ConnectionLimit": 0}}, "ConnectionLimit must be"),
        ({"Postgres": {"Database": "app", "BaseRole": "t", "ConnectionLimit": 1001}}, "from 1 to 1000"),
        ({"Postgres": {"Database": "app", "BaseRole": "t", "ConnectionLimit": True}}, "ConnectionLimit must be"),
        ({"Postgres": {"Database": "app", "BaseRole": "t", "DurationSeconds": 299}}, "from 300 to 86400"),
        ({"Postgres": {"Database": "app", "BaseRole": "t", "DurationSeconds": 86401}}, "from 300 to 86400"),
        ({"Token": 900}, "Token must be an object"),
        ({"Token": {"Duration": 900}}, "unknown member(s) Duration in Token"),
        ({"Sts": {"Policy": "{}"}}, "unknown member(s) Policy in Sts"),
        ({"Token": {"Audience": ""}}, "Token.Audience must be 1 to 256 printable characters"),
        ({"Token": {"Audience": "a\nb"}}, "Token.Audience must be"),
    ],
)
def test_malformed_settings_are_refused_saying_what_is_wrong(value: Any, expected: str) -> None:
    assert expected in refused(value)


@pytest.mark.parametrize(
    ("provider", "seconds"),
    [("Sts", 899), ("Sts", 43201), ("Sts", "900"), ("Sts", True), ("Token", 59), ("Token", 3601), ("Token", 1.5)],
)
def test_durations_out_of_bounds_are_refused_with_the_bounds(provider: str, seconds: Any) -> None:
    message = refused({provider: {"DurationSeconds": seconds}})
    bounds = "900 to 43200" if provider == "Sts" else "60 to 3600"
    assert f"{provider}.DurationSeconds must be a whole number from {bounds}" in message


def test_durations_at_their_bounds_are_accepted() -> None:
    for provider, seconds in (("Sts", 900), ("Sts", 43200), ("Token", 60), ("Token", 3600)):
        validate({provider: {"DurationSeconds": seconds}}, per_tenant=True)


def padded(total: int, placeholders: int) -> str:
    """A policy of exactly `total` characters holding `placeholders` times ${TenantId}."""
    resource = ",".join(f'"arn:aws:s3:::b/{policy.PLACEHOLDER}"' for _ in range(placeholders))
    head = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":['
    tail = '],"Sid":"'
    end = '"}]}'
    filler = total - len(head) - len(resource) - len(tail) - len(end)
    text = head + resource + tail + "x" * filler + end
    assert len(text) == total
    return text


def test_a_policy_is_measured_with_the_longest_tenant_id_in_each_placeholder() -> None:
    grows = TENANT_ID_MAX - len(policy.PLACEHOLDER)
    fits = padded(policy.MAX_CHARS - 2 * grows, 2)
    assert policy.longest(fits) == policy.MAX_CHARS
    validate({"Sts": {"SessionPolicy": fits}}, per_tenant=True)
    too_long = padded(policy.MAX_CHARS - 2 * grows + 1, 2)
    message = refused({"Sts": {"SessionPolicy": too_long}})
    assert f"would be {policy.MAX_CHARS + 1} characters" in message and "at most 2048" in message
    # Short as written, too long once a long tenant id stands in each of its placeholders.
    many = padded(1500, 3)
    assert "would be" in refused({"Sts": {"SessionPolicy": many}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "IAM policy document"),
        (42, "IAM policy document"),
        ('{"Statement": [}', "is not JSON"),
        ('["Statement"]', "must be a policy document"),
        ('{"Version": "2012-10-17"}', "must be a policy document"),
        ('{"Statement": [], "Sid": "\u2603"}', "U+0020 to U+00FF"),
    ],
)
def test_policies_sts_would_refuse_are_refused_now(text: Any, expected: str) -> None:
    assert expected in refused({"Sts": {"SessionPolicy": text}})


def test_the_tenant_id_is_put_in_each_placeholder() -> None:
    template = json.dumps(POLICY)
    rendered = json.loads(policy.render(template, "acme/eu-1"))
    assert rendered["Statement"][0]["Resource"] == "arn:aws:s3:::bucket/acme/eu-1/*"
