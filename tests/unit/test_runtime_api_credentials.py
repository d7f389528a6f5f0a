"""silo's credentials routes of the Runtime API, on the wire: only the environment's own Authorization
token is answered, an unbound environment gets nothing, and the tenant token rides with each invocation."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace

from silo.credentials.tokens import TokenSigner
from silo.credentials.vendor import CredentialVendor, EnvironmentCredentials
from silo.runtime_api import paths
from silo.types import CredentialsSetting
from tests.support import function_spec
from tests.unit.test_runtime_api_server import NEXT, deadline, invocation, run, serving


def get(path: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"GET {path} HTTP/1.1\r\nHost: rapi\r\n{extra}\r\n".encode()


def credentials() -> EnvironmentCredentials:
    vendor = CredentialVendor(signer=TokenSigner(os.urandom(32), "http://silo.test"))
    spec = replace(function_spec("app"), credentials=CredentialsSetting(token_duration_s=60))
    found = vendor.for_environment(spec, "env-1")
    assert found is not None
    return found


def test_a_wrong_or_missing_token_is_refused_and_an_unbound_environment_gets_nothing() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            env = credentials()
            rig.channel.credentials = env
            raw = await rig.connect()
            for headers in ((), ("Authorization: wrong",), (f"Authorization: {env.authorization}x",)):
                await raw.send(get(paths.TENANT_TOKEN, *headers))
                status, _, body = await raw.answer()
                assert status == 403 and json.loads(body)["errorType"] == "AccessDenied"
            await raw.send(get(paths.TENANT_TOKEN, f"Authorization: {env.authorization}"))
            status, _, body = await raw.answer()
            assert status == 404 and json.loads(body)["errorType"] == "NotBound"
            env.bind("blue")
            await raw.send(get(paths.TENANT_TOKEN, f"Authorization: {env.authorization}"))
            status, _, body = await raw.answer()
            assert status == 200 and json.loads(body)["Token"] == env.token()
            await raw.send(get(paths.CREDENTIALS, f"Authorization: {env.authorization}"))
            status, _, body = await raw.answer()
            assert status == 404 and json.loads(body)["errorType"] == "NoCredentials"  # no Sts provider
            await raw.send(f"POST {paths.CREDENTIALS} HTTP/1.1\r\nHost: rapi\r\nContent-Length: 0\r\n\r\n".encode())
            assert (await raw.answer())[0] == 405

    run(scenario)


def test_a_function_without_credentials_serves_none() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            raw = await rig.connect()
            await raw.send(get(paths.CREDENTIALS, "Authorization: anything"))
            status, _, body = await raw.answer()
            assert status == 404 and json.loads(body)["errorType"] == "NoCredentials"

    run(scenario)


def test_the_tenant_token_comes_with_the_invocation_and_not_without() -> None:
    async def scenario() -> None:
        async with serving() as rig:
            raw = await rig.connect()
            await raw.send(NEXT)
            rig.channel.submit(invocation("req-1"), deadline(), "tok.en.value")
            status, headers, _ = await raw.answer()
            assert status == 200 and headers[paths.TENANT_TOKEN_HEADER.lower()] == "tok.en.value"
            await raw.send(
                f"POST {paths.response_path('req-1')} HTTP/1.1\r\nHost: rapi\r\nContent-Length: 2\r\n\r\n{{}}".encode()
            )
            assert (await raw.answer())[0] == 202
            await raw.send(NEXT)
            rig.channel.submit(invocation("req-2"), deadline())
            _, headers, _ = await raw.answer()
            assert paths.TENANT_TOKEN_HEADER.lower() not in headers

    run(scenario)


def test_an_answer_still_being_made_does_not_outlive_the_channel() -> None:
    class Slow:
        def authorized(self, presented: bytes | None) -> bool:
            return True

        async def answer(self, kind: str) -> tuple[int, bytes]:
            await asyncio.sleep(3600)
            return 200, b"{}"

    async def scenario() -> None:
        async with serving() as rig:
            rig.channel.credentials = Slow()  # type: ignore[assignment]
            raw = await rig.connect()
            await raw.send(get(paths.CREDENTIALS))
            await asyncio.sleep(0.05)
            assert len(rig.channel._answering) == 1
            await rig.channel.close()
            assert await raw.reader.read() == b""

    run(scenario)


def test_the_postgres_route_serves_the_tenants_login_to_the_environments_token_alone() -> None:
    from silo.credentials.lifetime import Lease
    from silo.credentials.postgres import PostgresLogin, RoleRequest
    from silo.types import PostgresSetting

    class Issuing:
        async def issue(self, request: RoleRequest) -> PostgresLogin:
            return PostgresLogin(request.roles[0], "the-password", Lease(0, 4102444800))

    vendor = CredentialVendor(postgres=Issuing())  # type: ignore[arg-type]
    setting = CredentialsSetting(postgres=PostgresSetting("app", "app_tenant", 5, 600))
    env = vendor.for_environment(replace(function_spec("app"), credentials=setting), "env-1")
    assert env is not None

    async def scenario() -> None:
        async with serving() as rig:
            rig.channel.credentials = env
            raw = await rig.connect()
            await raw.send(get(paths.POSTGRES, "Authorization: wrong"))
            assert (await raw.answer())[0] == 403
            await raw.send(get(paths.POSTGRES, f"Authorization: {env.authorization}"))
            status, _, body = await raw.answer()
            assert status == 404 and json.loads(body)["errorType"] == "NotBound"
            env.bind("blue")
            await raw.send(get(paths.POSTGRES, f"Authorization: {env.authorization}"))
            status, _, body = await raw.answer()
            document = json.loads(body)
            assert status == 200 and document["PGPASSWORD"] == "the-password"
            assert document["PGUSER"].startswith("silo_blue_") and document["Expiration"] == "2100-01-01T00:00:00Z"

    run(scenario)
