"""Caller keys below the API: the service's rules, sealed secrets, the credentials file and how the CLI finds it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from silo import errors
from silo.cli import credentials
from silo.control.keys import KeyService
from silo.store.db import open_database
from silo.store.keys import KeyRepository
from silo.store.sealing import Sealer, SealingKeyError, load_or_create_key


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def service(tmp_path: Path, clock: Clock | None = None) -> KeyService:
    db = open_database(tmp_path / "silo.db")
    return KeyService(KeyRepository(db, Sealer.in_directory(tmp_path)), clock or Clock())


def test_a_tenant_key_is_bound_to_its_tenant_and_functions(tmp_path: Path) -> None:
    keys = service(tmp_path)
    record = keys.create({"TenantId": "acme", "Functions": ["f", "g", "f"]}, by="SILOADMIN")
    found = keys.lookup(record.key_id)
    assert found is not None and found.secret == record.secret
    assert found.principal.admin is False and found.principal.tenant == "acme"
    assert found.principal.functions == frozenset({"f", "g"})
    assert record.key_id.startswith("SILO") and len(record.key_id) == 20 and len(record.secret) == 40


@pytest.mark.parametrize(
    ("request_", "says"),
    [
        ({}, "either an administrator's"),
        ({"Admin": True, "TenantId": "a"}, "not both"),
        ({"TenantId": "a"}, "names the functions"),
        ({"TenantId": " a", "Functions": ["f"]}, "TenantId must be"),
        ({"TenantId": "a;b", "Functions": ["f"]}, "TenantId must be"),
        ({"TenantId": "a", "Functions": ["arn:aws:lambda:us-east-1:000000000000:function:f"]}, "no function name"),
        ({"Admin": True, "ExpiresInSeconds": 0}, "ExpiresInSeconds"),
        ({"Admin": True, "Secret": "mine"}, "Unknown field"),
    ],
)
def test_a_key_that_makes_no_sense_is_refused(tmp_path: Path, request_: dict[str, object], says: str) -> None:
    with pytest.raises(errors.InvalidParameterValueException, match=says):
        service(tmp_path).create(request_, by=None)


def test_revoked_and_expired_keys_are_found_no_more_and_the_last_admin_stays(tmp_path: Path) -> None:
    clock = Clock()
    keys = service(tmp_path, clock)
    first = keys.create({"Admin": True}, by=None)
    with pytest.raises(errors.ResourceConflictException, match="last active administrator"):
        keys.revoke(first.key_id, by=first.key_id)
    clock.now += 1  # keys made in the same second are listed by key id, which is random
    second = keys.create({"Admin": True, "ExpiresInSeconds": 60}, by=first.key_id)
    keys.revoke(first.key_id, by=second.key_id)
    assert keys.lookup(first.key_id) is None
    assert keys.lookup(second.key_id) is not None
    clock.now += 60
    assert keys.lookup(second.key_id) is None
    with pytest.raises(errors.ResourceNotFoundException):
        keys.revoke("SILONOSUCHKEY", by=None)
    # A new service over the same store finds the same keys, in the same states.
    again = service(tmp_path, clock)
    assert [(r.key_id, r.revoked_by) for r in again.keys()] == [(first.key_id, second.key_id), (second.key_id, None)]


def test_the_database_holds_no_secret_and_another_sealing_key_opens_none(tmp_path: Path) -> None:
    keys = service(tmp_path)
    record = keys.create({"Admin": True}, by=None)
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("silo.db*"))
    assert record.key_id.encode() in stored and record.secret.encode() not in stored
    assert stat.S_IMODE((tmp_path / "secrets.key").stat().st_mode) == 0o600
    (tmp_path / "secrets.key").unlink()
    assert service(tmp_path).lookup(record.key_id) is None, "a key sealed with another file opens with no other"


def test_a_sealing_key_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    load_or_create_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(SealingKeyError, match="chmod 600"):
        load_or_create_key(path)


def test_the_credentials_file_is_kept_while_its_key_works(tmp_path: Path) -> None:
    keys = service(tmp_path)
    made = keys.credentials_key(None)
    assert made is not None and made.admin
    assert keys.credentials_key((made.key_id, made.secret)) is None
    assert keys.credentials_key((made.key_id, "not its secret")) is not None


def test_the_cli_finds_credentials_as_botocore_would_and_in_the_servers_directory(tmp_path: Path) -> None:
    path = tmp_path / ".silo" / "credentials"
    path.parent.mkdir()
    credentials.write(path, "silo", "SILOKEY", "s3cret", "eu-west-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.read(path, "silo") == ("SILOKEY", "s3cret")
    home = {"HOME": str(tmp_path / "home")}
    found = credentials.find(home, cwd=tmp_path)
    assert found is not None and (found.access_key, found.secret, found.region) == ("SILOKEY", "s3cret", "eu-west-1")
    assert credentials.find(home, cwd=tmp_path / "home") is None
    named = credentials.find(
        {**home, "AWS_SHARED_CREDENTIALS_FILE": str(path), "AWS_REGION": "us-east-1"}, cwd=Path("/")
    )
    assert named is not None and named.region == "us-east-1"
    assert credentials.find({**home, "AWS_SHARED_CREDENTIALS_FILE": str(path), "AWS_PROFILE": "other"}) is None
    env = credentials.find({"AWS_ACCESS_KEY_ID": "A", "AWS_SECRET_ACCESS_KEY": "B"}, cwd=tmp_path)
    assert env is not None and (env.access_key, env.region) == ("A", "us-east-1")
