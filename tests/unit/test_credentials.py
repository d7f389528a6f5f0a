"""Per-tenant credentials below the API: session names, when credentials are renewed (a fake clock), the
vendor's cache over a fake STS, the tenant tokens and their key, and what an environment is answered."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest

from silo import errors
from silo.credentials import naming
from silo.credentials.lifetime import LAST_SECONDS, Lease
from silo.credentials.sts import AssumeRequest, AwsCredentials, StsRefused, StsUnreachable
from silo.credentials.tokens import TokenSigner
from silo.credentials.vendor import RETRY_AFTER_S, CredentialVendor, EnvironmentCredentials
from silo.store.sealing import SealingKeyError
from silo.types import TENANT_ID_MAX, CredentialsSetting, FunctionSpec
from tests.support import function_spec

ROLE = "arn:aws:iam::000000000000:role/app"
STATEMENT = '{"Effect":"Allow","Action":"s3:*","Resource":"arn:aws:s3:::b/${TenantId}/*"}'
POLICY = '{"Version":"2012-10-17","Statement":[' + STATEMENT + "]}"


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))  # near the real time: PyJWT checks iat and nbf against it

    def __call__(self) -> float:
        return self.now


class FakeSts:
    """AssumeRole as STS answers it: fresh keys each time, valid `duration_s` from the clock's now."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[AssumeRequest] = []
        self.failure: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def assume(self, request: AssumeRequest) -> AwsCredentials:
        self.calls.append(request)
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        n = len(self.calls)
        now = self.clock()
        return AwsCredentials(f"ASIA{n:04d}", f"secret-{n}", f"session-{n}", Lease(now, now + request.duration_s))


def spec(**setting: Any) -> FunctionSpec:
    return replace(function_spec("app"), role=ROLE, credentials=CredentialsSetting(**setting))


def vendor(clock: Clock, sts: FakeSts | None = None) -> CredentialVendor:
    return CredentialVendor(signer=TokenSigner(os.urandom(32), "http://silo.test"), sts=sts, clock=clock)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


# Session names


@pytest.mark.parametrize("tenant", ["a", "acme", "acme corp/eu:1", "x" * TENANT_ID_MAX, "+=,.@-_", "é"])
def test_a_session_name_is_within_sts_pattern_and_length_and_always_the_same(tenant: str) -> None:
    name = naming.session_name(tenant)
    assert naming.ALLOWED.fullmatch(name), name
    assert len(name) <= 64
    assert naming.session_name(tenant) == name


def test_a_session_name_reads_as_its_tenant() -> None:
    assert naming.session_name("acme corp/eu:1").startswith("acme-corp-eu-1.")


def test_tenants_whose_readable_parts_agree_get_different_names() -> None:
    same_reading = ["a b", "a:b", "a/b", "a-b", "x" * 40 + "1", "x" * 40 + "2"]
    names = {naming.session_name(t) for t in same_reading}
    assert len(names) == len(same_reading)


# When credentials are renewed


def test_a_credential_is_renewed_once_half_its_life_has_passed() -> None:
    lease = Lease(1000.0, 1900.0)
    assert not lease.due(1449.9)
    assert lease.due(1450.0)
    assert lease.usable(1900.0 - LAST_SECONDS - 0.1)
    assert not lease.usable(1900.0 - LAST_SECONDS)


# The vendor's cache of AWS credentials


def test_a_tenants_credentials_come_from_one_assume_role_until_due_then_fresh_ones() -> None:
    clock = Clock()
    sts = FakeSts(clock)
    v = vendor(clock, sts)
    request = AssumeRequest("fn", ROLE, "acme", 900, None)

    async def scenario() -> None:
        first = await v.aws(request)
        clock.now += 449
        assert await v.aws(request) is first
        clock.now += 1
        # Due: renewed in the background, the current ones handed out meanwhile (no call waits for STS).
        assert await v.aws(request) is first
        assert await v.aws(request) is first
        await settled()
        renewed = await v.aws(request)
        assert renewed.access_key_id != first.access_key_id
        assert renewed.lease.issued_at == clock.now

    run(scenario())
    assert len(sts.calls) == 2


async def settled() -> None:
    """Let what runs in the background (a renewal) finish."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_environments_asking_at_once_share_one_assume_role() -> None:
    clock = Clock()
    sts = FakeSts(clock)
    sts.gate = asyncio.Event()
    v = vendor(clock, sts)
    request = AssumeRequest("fn", ROLE, "acme", 900, None)

    async def scenario() -> None:
        asks = [asyncio.ensure_future(v.aws(request)) for _ in range(5)]
        await asyncio.sleep(0)
        assert sts.gate is not None
        sts.gate.set()
        got = await asyncio.gather(*asks)
        assert len({c.access_key_id for c in got}) == 1

    run(scenario())
    assert len(sts.calls) == 1


def test_tenants_functions_and_policies_are_kept_apart() -> None:
    clock = Clock()
    sts = FakeSts(clock)
    v = vendor(clock, sts)

    async def scenario() -> set[str]:
        keys = set()
        for request in (
            AssumeRequest("fn", ROLE, "acme", 900, None),
            AssumeRequest("fn", ROLE, "globex", 900, None),
            AssumeRequest("other", ROLE, "acme", 900, None),
            AssumeRequest("fn", ROLE, "acme", 900, POLICY),
        ):
            keys.add((await v.aws(request)).access_key_id)
        return keys

    assert len(run(scenario())) == 4


def test_a_failed_renewal_hands_out_the_current_credentials_until_their_last_seconds() -> None:
    clock = Clock()
    sts = FakeSts(clock)
    v = vendor(clock, sts)
    request = AssumeRequest("fn", ROLE, "acme", 900, None)

    async def scenario() -> None:
        first = await v.aws(request)
        sts.failure = StsUnreachable("STS down", "silo could not reach STS")
        clock.now += 600
        assert await v.aws(request) is first
        await settled()
        assert len(sts.calls) == 2
        assert await v.aws(request) is first  # the renewal failed: not asked again at once
        await settled()
        assert len(sts.calls) == 2
        clock.now += RETRY_AFTER_S
        assert await v.aws(request) is first  # asked again a while later, and failed again
        await settled()
        assert len(sts.calls) == 3
        clock.now = first.lease.expires_at - LAST_SECONDS
        with pytest.raises(StsUnreachable):
            await v.aws(request)
        sts.failure = None
        assert (await v.aws(request)).access_key_id != first.access_key_id

    run(scenario())


def test_the_assume_role_asks_for_the_tenants_session_tagged_and_its_own_policy() -> None:
    parameters = AssumeRequest("fn", ROLE, "acme/eu", 1800, POLICY).parameters()
    assert parameters == {
        "RoleArn": ROLE,
        "RoleSessionName": naming.session_name("acme/eu"),
        "DurationSeconds": 1800,
        "Tags": [{"Key": "TenantId", "Value": "acme/eu"}],
        "TransitiveTagKeys": ["TenantId"],
        "Policy": POLICY.replace("${TenantId}", "acme/eu"),
    }
    assert "Policy" not in AssumeRequest("fn", ROLE, "acme", 900, None).parameters()


def test_credentials_print_without_their_secrets() -> None:
    creds = AwsCredentials("ASIAEXAMPLEKEY", "the-secret", "the-session", Lease(0, 900))
    assert "the-secret" not in repr(creds) and "the-session" not in repr(creds) and "EXAMPLEKEY" not in repr(creds)
    assert creds.container_document() == {
        "AccessKeyId": "ASIAEXAMPLEKEY",
        "SecretAccessKey": "the-secret",
        "Token": "the-session",
        "Expiration": "1970-01-01T00:15:00Z",
    }


# One environment's credentials


def environment(v: CredentialVendor, **setting: Any) -> EnvironmentCredentials:
    found = v.for_environment(spec(**setting), "env-1")
    assert found is not None
    return found


def test_a_function_without_the_setting_gives_its_environments_nothing() -> None:
    assert vendor(Clock()).for_environment(function_spec("app"), "env-1") is None


def test_only_the_environments_own_token_is_authorized() -> None:
    v = vendor(Clock())
    mine = environment(v, token_duration_s=60)
    other = environment(v, token_duration_s=60)
    assert mine.authorization != other.authorization
    assert mine.authorized(mine.authorization.encode())
    for presented in (None, b"", other.authorization.encode(), mine.authorization.encode()[:-1], b"Bearer x"):
        assert not mine.authorized(presented)


def test_an_unbound_environment_is_answered_nothing() -> None:
    clock = Clock()
    sts = FakeSts(clock)
    env = environment(vendor(clock, sts), token_duration_s=60, sts_duration_s=900)
    for kind in ("aws", "token"):
        status, body = run(env.answer(kind))
        assert status == 404 and json.loads(body)["errorType"] == "NotBound"
    assert env.token() is None
    assert sts.calls == []
    with pytest.raises(errors.PlatformError):
        run(env.prepare("req-1"))


def test_a_bound_environment_never_changes_tenant() -> None:
    env = environment(vendor(Clock()), token_duration_s=60)
    env.bind("acme")
    env.bind("acme")
    with pytest.raises(ValueError):
        env.bind("globex")
    assert env.tenant_id == "acme"


def test_a_bound_environment_gets_its_tenants_aws_credentials() -> None:
    clock = Clock()
    sts = FakeSts(clock)
    v = vendor(clock, sts)
    acme = environment(v, sts_duration_s=900, sts_session_policy=POLICY)
    acme.bind("acme")
    globex = environment(v, sts_duration_s=900)
    globex.bind("globex")
    assert run(acme.prepare("req-1")) is None  # no token provider
    status, body = run(acme.answer("aws"))
    assert status == 200
    doc = json.loads(body)
    assert doc["AccessKeyId"] == "ASIA0001" and doc["Expiration"].endswith("Z")
    assert run(globex.answer("aws"))[1] != body
    assert [c.tenant_id for c in sts.calls] == ["acme", "globex"]
    assert sts.calls[0].session_policy == POLICY
    status, body = run(acme.answer("token"))
    assert status == 404 and json.loads(body)["errorType"] == "NoCredentials"


def test_a_call_whose_credentials_sts_refuses_fails_before_the_function_runs() -> None:
    clock = Clock()
    sts = FakeSts(clock)
    sts.failure = StsRefused(
        "STS refused: AccessDenied: not authorized ASIA-operator-detail", "STS refused (AccessDenied)"
    )
    env = environment(vendor(clock, sts), sts_duration_s=900)
    env.bind("acme")
    with pytest.raises(errors.CredentialsUnavailable) as caught:
        run(env.prepare("req-7"))
    assert caught.value.code == "ServiceException" and caught.value.status == 500
    assert "req-7" in caught.value.message and "did not run" in caught.value.message
    assert "operator-detail" not in caught.value.message
    status, body = run(env.answer("aws"))
    assert status == 502 and json.loads(body)["errorType"] == "CredentialsUnavailable"
    assert "operator-detail" not in body.decode()


def test_without_an_sts_provider_no_aws_credentials_are_made_up() -> None:
    env = environment(vendor(Clock(), None), sts_duration_s=900)
    env.bind("acme")
    with pytest.raises(errors.CredentialsUnavailable):
        run(env.prepare("req-1"))


def test_the_tenant_token_names_the_tenant_function_and_environment_and_is_renewed_at_half_life() -> None:
    clock = Clock()
    v = vendor(clock)
    env = environment(v, token_duration_s=60, token_audience="billing")
    env.bind("acme")
    assert v.signer is not None
    key = jwt.PyJWK(v.signer.jwks()["keys"][0])
    first = run(env.prepare("req-1"))
    assert first is not None
    claims = jwt.decode(
        first,
        key.key,
        algorithms=["EdDSA"],
        audience="billing",
        issuer="http://silo.test",
        options={"verify_exp": False},
    )
    assert claims["tenant"] == claims["sub"] == "acme"
    assert claims["function_arn"] == spec().function_arn and claims["environment_id"] == "env-1"
    assert claims["exp"] - claims["iat"] == 60 and claims["iat"] == int(clock.now)
    assert jwt.get_unverified_header(first)["kid"] == v.signer.kid
    clock.now += 29
    assert env.token() == first
    clock.now += 1
    renewed = env.token()
    assert renewed != first
    assert jwt.decode(renewed, options={"verify_signature": False})["iat"] == int(clock.now)
    status, body = run(env.answer("token"))
    assert status == 200 and json.loads(body)["Token"] == renewed


# The tokens' signing key


def test_the_signing_key_is_made_once_readable_by_its_owner_only_and_kept(tmp_path: Path) -> None:
    first = TokenSigner.in_directory(tmp_path, "http://silo.test")
    path = tmp_path / "tenant-tokens.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert TokenSigner.in_directory(tmp_path, "http://silo.test").jwks() == first.jwks()
    (key,) = first.jwks()["keys"]
    assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}  # no private member
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", key["kid"])


def test_a_signing_key_others_may_read_is_refused(tmp_path: Path) -> None:
    TokenSigner.in_directory(tmp_path, "http://silo.test")
    os.chmod(tmp_path / "tenant-tokens.key", 0o640)
    with pytest.raises(SealingKeyError, match="sign tokens for any tenant"):
        TokenSigner.in_directory(tmp_path, "http://silo.test")
