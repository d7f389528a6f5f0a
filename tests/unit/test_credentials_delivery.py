"""Per-tenant credentials through the router and real environments of the development backend, whose
Runtime API is a port of the host: anyone on the host can reach it, so the environment's token is all that
guards it. A call whose STS credentials cannot be had fails before its function runs, and the same warm
environment serves the tenant once STS answers again."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from silo import errors
from silo.credentials.sts import StsUnreachable
from silo.credentials.tokens import TokenSigner
from silo.credentials.vendor import CredentialVendor
from silo.router.pool import Router
from silo.router.stems import StemPolicy
from silo.sandbox.process import ProcessSandbox
from silo.types import CredentialsSetting, EnvKey, FunctionSpec, Invocation
from tests.support import function_spec
from tests.unit.test_credentials import Clock, FakeSts

APP = """
import json, os, urllib.error, urllib.request
ENVIRONMENT = os.urandom(8).hex()
RUNS = 0

def handler(event, context):
    global RUNS
    RUNS += 1
    request = urllib.request.Request(os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"])
    request.add_header("Authorization", os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"])
    with urllib.request.urlopen(request, timeout=10) as answer:
        aws = json.loads(answer.read())
    return {"env": ENVIRONMENT, "runs": RUNS, "aws": aws, "token": os.environ.get("SILO_TENANT_TOKEN"),
            "url": os.environ["AWS_CONTAINER_CREDENTIALS_FULL_URI"]}
"""


def deployed(tmp_path: Path) -> FunctionSpec:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "app.py").write_text(APP)
    setting = CredentialsSetting(sts_duration_s=900, token_duration_s=60)
    return replace(function_spec("f"), code_dir=code, role="arn:aws:iam::000000000000:role/app", credentials=setting)


async def call(router: Router, spec: FunctionSpec, tenant: str, request_id: str) -> dict[str, object]:
    inv = Invocation(request_id, b"{}", tenant, spec.function_arn)
    result = await router.invoke(EnvKey(spec.function_arn, spec.version, tenant), spec, inv)
    assert result.function_error is None, result.payload
    out: dict[str, object] = json.loads(result.payload)
    return out


def status_of(url: str, authorization: str | None) -> int:
    request = urllib.request.Request(url)
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_tenants_get_their_own_and_a_host_process_without_the_token_gets_nothing(tmp_path: Path) -> None:
    spec = deployed(tmp_path)
    clock = Clock()
    sts = FakeSts(clock)
    vendor = CredentialVendor(signer=TokenSigner(os.urandom(32), "http://silo.test"), sts=sts, clock=clock)  # type: ignore[arg-type]

    async def main() -> None:
        router = Router(ProcessSandbox(tmp_path / "envs"), stems=StemPolicy(per_function=0), credentials=vendor)
        try:
            a = await call(router, spec, "a", "r1")
            b = await call(router, spec, "b", "r2")
            assert a["aws"] != b["aws"] and a["env"] != b["env"]
            assert [c.tenant_id for c in sts.calls] == ["a", "b"]
            assert a["token"] and b["token"] and a["token"] != b["token"]
            url = str(a["url"])
            assert url.startswith("http://127.0.0.1:") and url.endswith("/2018-06-01/silo/credentials")
            # The host port answers a request without the environment's token, or with another's, with 403.
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, status_of, url, None) == 403
            assert await loop.run_in_executor(None, status_of, url, "Bearer nothing") == 403
        finally:
            await router.close()

    asyncio.run(asyncio.wait_for(main(), timeout=60))


def test_a_call_without_its_credentials_does_not_run_and_the_warm_environment_serves_once_sts_heals(
    tmp_path: Path,
) -> None:
    spec = deployed(tmp_path)
    clock = Clock()
    sts = FakeSts(clock)
    vendor = CredentialVendor(signer=TokenSigner(os.urandom(32), "http://silo.test"), sts=sts, clock=clock)  # type: ignore[arg-type]

    async def main() -> None:
        router = Router(ProcessSandbox(tmp_path / "envs"), stems=StemPolicy(per_function=0), credentials=vendor)
        try:
            first = await call(router, spec, "a", "r1")
            clock.now += 10_000  # long past their end: nothing of the tenant's is usable any more
            sts.failure = StsUnreachable("STS down", "silo could not reach STS for this tenant's credentials")
            with pytest.raises(errors.CredentialsUnavailable, match="did not run"):
                await call(router, spec, "a", "r2")
            sts.failure = None
            again = await call(router, spec, "a", "r3")
            assert again["env"] == first["env"], "the same warm environment"
            assert again["runs"] == 2, "the refused call never reached the function"
            assert again["aws"] != first["aws"], "fresh credentials"
        finally:
            await router.close()

    asyncio.run(asyncio.wait_for(main(), timeout=60))
