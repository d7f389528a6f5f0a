"""The Postgres provider's pure parts: its role names, which base roles it refuses, the statements it
composes (names and passwords quoted by psycopg, never formatted into the text), how the vendor keeps and
renews a tenant's login over a fake provider, and what an environment is given of it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
from psycopg import sql

from silo import errors
from silo.credentials import identifiers, tenant_db
from silo.credentials.lifetime import Lease
from silo.credentials.postgres import PostgresError, PostgresLogin, RoleRequest, refusal, role_statement, slot
from silo.credentials.vendor import CredentialVendor
from silo.runtime_api import wire
from silo.types import TENANT_ID_MAX, CredentialsSetting, Invocation, PostgresSetting
from tests.support import function_spec
from tests.unit.test_credentials import Clock

ARN = "arn:aws:lambda:us-east-1:000000000000:function:app"


@pytest.mark.parametrize("tenant", ["a", "acme", "Acme Corp/EU:1", "x" * TENANT_ID_MAX, "é", "'; DROP ROLE x; --"])
def test_role_names_are_legal_names_of_at_most_63_bytes_and_always_the_same(tenant: str) -> None:
    first, second = identifiers.role_names(ARN, tenant)
    for name in (first, second):
        assert len(name.encode()) <= identifiers.MAX_BYTES
        assert name.startswith("silo_") and name.isascii() and name == name.lower()
    assert first.endswith("_a") and second == first[:-1] + "b"
    assert (first, second) == identifiers.role_names(ARN, tenant)


def test_role_names_differ_by_tenant_and_by_function_even_when_their_readable_parts_agree() -> None:
    long_a, long_b = "x" * 100 + "a", "x" * 100 + "b"
    pairs = [(ARN, long_a), (ARN, long_b), (ARN, "Acme"), (ARN, "acme"), (ARN + "2", "acme")]
    names = {name for pair in pairs for name in identifiers.role_names(*pair)}
    assert len(names) == 10
    assert identifiers.role_names(ARN, "acme")[0].startswith("silo_acme_")


def test_the_slot_renewed_is_a_missing_one_else_the_one_that_ends_first() -> None:
    from datetime import UTC, datetime

    a, b = identifiers.role_names(ARN, "acme")
    early, late = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)
    assert slot((a, b), {}) == (a, False)
    assert slot((a, b), {a: late}) == (b, False)
    assert slot((a, b), {b: early}) == (a, False)
    assert slot((a, b), {a: late, b: early}) == (b, True)
    assert slot((a, b), {a: early, b: late}) == (a, True)
    assert slot((a, b), {a: late, b: None}) == (b, True)  # no end at all: renewed first


def test_a_base_role_with_superuser_bypassrls_or_createrole_is_refused() -> None:
    assert refusal((False, False, False), "app_tenant") is None
    assert "does not exist" in (refusal(None, "app_tenant") or "")
    for attributes, name in (((True, False, False), "SUPERUSER"), ((False, True, False), "BYPASSRLS")):
        assert name in (refusal(attributes, "app_tenant") or "")
    assert "CREATEROLE" in (refusal((False, False, True), "app_tenant") or "")


def request(tenant: str = "acme", duration_s: int = 600) -> RoleRequest:
    return RoleRequest(ARN, tenant, "app", "app_tenant", 5, duration_s)


def test_the_role_statement_quotes_every_name_and_value() -> None:
    hostile = replace(request(tenant='x"; DROP ROLE postgres; --'), base_role='b" SUPERUSER --')
    role = hostile.roles[0]
    made = role_statement(False, role, hostile, "SCRAM-SHA-256$'x", "2030-01-01T00:00:00Z")
    leaves = _walk(made)
    # Names are Identifiers and values Literals, which psycopg quotes; the statement's own text holds neither.
    assert sql.Identifier(role) in leaves and sql.Identifier('b" SUPERUSER --') in leaves
    assert sql.Literal("SCRAM-SHA-256$'x") in leaves and sql.Literal(5) in leaves
    text = _text(made)
    assert text.startswith("CREATE ROLE ") and " IN ROLE " in text and "DROP" not in text and "SCRAM" not in text
    assert "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT" in text
    renewal = role_statement(True, role, hostile, "v", "2030-01-01T00:00:00Z")
    assert _text(renewal).startswith("ALTER ROLE ") and " IN ROLE " not in _text(renewal)
    quoted = made.as_string()
    assert '"b"" SUPERUSER --"' in quoted and "'SCRAM-SHA-256$''x'" in quoted


def _walk(composable: Any) -> list[Any]:
    if isinstance(composable, sql.Composed):
        return [leaf for part in composable._obj for leaf in _walk(part)]
    return [composable]


def _text(composable: Any) -> str:
    return "".join(leaf._obj for leaf in _walk(composable) if isinstance(leaf, sql.SQL))


def test_the_recipe_refuses_a_table_name_it_cannot_split() -> None:
    assert tenant_db.qualified("notes") == ("notes",)
    assert tenant_db.qualified("app.notes") == ("app", "notes")
    for bad in ("", "a.b.c", ".notes", "app."):
        with pytest.raises(ValueError, match="--table"):
            tenant_db.qualified(bad)


def test_the_recipe_forces_row_security_and_keys_it_on_session_user() -> None:
    made = tenant_db.statements("app_tenant", "notes", "tenant", make_base=True)
    texts = [_text(statement) for statement in made]
    assert any("FORCE ROW LEVEL SECURITY" in t for t in texts)
    assert any("ENABLE ROW LEVEL SECURITY" in t for t in texts)
    assert any("SECURITY DEFINER" in t and "session_user" in t and "search_path" in t for t in texts)
    assert any(t.startswith("REVOKE ALL ON ") and "FROM PUBLIC" in t for t in texts)
    assert texts[0].startswith("CREATE ROLE ") and "NOLOGIN" in texts[0]
    assert not tenant_db.statements("app_tenant", "notes", "tenant", make_base=False)[0] == made[0]


def test_a_login_prints_without_its_password() -> None:
    login = PostgresLogin("silo_acme_0123", "s3cret-password", Lease(0, 600))
    assert "s3cret" not in repr(login) and "s3cret" not in str(login)
    assert login.document()["PGPASSWORD"] == "s3cret-password"


class FakePostgres:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[RoleRequest] = []
        self.failure: Exception | None = None

    async def issue(self, request: RoleRequest) -> PostgresLogin:
        self.calls.append(request)
        if self.failure is not None:
            raise self.failure
        now = self.clock()
        return PostgresLogin(request.roles[0], f"password-{len(self.calls)}", Lease(now, now + request.duration_s))

    def address(self) -> tuple[str, int]:
        return "127.0.0.1", 5432


def setting(**overrides: Any) -> CredentialsSetting:
    return CredentialsSetting(
        postgres=PostgresSetting(
            **{"database": "app", "base_role": "app_tenant", "connection_limit": 5, "duration_s": 600, **overrides}
        )
    )


def vendor(clock: Clock, provider: FakePostgres | None) -> CredentialVendor:
    return CredentialVendor(postgres=provider, clock=clock)  # type: ignore[arg-type]


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


def test_a_tenants_login_is_kept_until_half_its_life_then_renewed_without_a_wait() -> None:
    clock = Clock()
    provider = FakePostgres(clock)
    v = vendor(clock, provider)
    spec = replace(function_spec("app"), credentials=setting())
    acme, acme2, globex = (v.for_environment(spec, e) for e in ("e1", "e2", "e3"))
    assert acme is not None and acme2 is not None and globex is not None
    acme.bind("acme"), acme2.bind("acme"), globex.bind("globex")

    async def scenario() -> None:
        await acme.prepare("r1")
        await acme2.prepare("r2")
        await globex.prepare("r3")
        assert len(provider.calls) == 2  # one per tenant, however many environments
        first = acme.postgres_login()
        assert first is not None and first == acme2.postgres_login() and first != globex.postgres_login()
        assert first[0] in identifiers.role_names(spec.function_arn, "acme")
        clock.now += 301  # past half life: the current one is handed out and a renewal runs beside it
        await acme.prepare("r4")
        assert acme.postgres_login() == first
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await acme.prepare("r5")
        assert acme.postgres_login() == (first[0], "password-3")

    run(scenario())


def test_a_call_whose_login_cannot_be_made_fails_before_the_function_runs() -> None:
    clock = Clock()
    provider = FakePostgres(clock)
    provider.failure = PostgresError(
        "operator: CREATEROLE missing", "silo could not give this tenant its database role"
    )
    spec = replace(function_spec("app"), credentials=setting())
    env = vendor(clock, provider).for_environment(spec, "e1")
    assert env is not None
    env.bind("acme")
    with pytest.raises(errors.CredentialsUnavailable, match="database role") as caught:
        run(env.prepare("req-9"))
    assert "CREATEROLE" not in str(caught.value)  # the operator's reason stays in the log
    assert env.postgres_login() is None
    status, body = run(env.answer("postgres"))
    assert status == 502 and json.loads(body)["errorType"] == "CredentialsUnavailable"


def test_without_a_provider_no_login_is_made_up() -> None:
    clock = Clock()
    spec = replace(function_spec("app"), credentials=setting())
    env = vendor(clock, None).for_environment(spec, "e1")
    assert env is not None
    env.bind("acme")
    with pytest.raises(errors.CredentialsUnavailable, match="no PostgreSQL credentials"):
        run(env.prepare("req-1"))
    assert env.postgres_variables() == ({}, False)


def test_the_environment_is_told_where_the_database_is_and_the_route_serves_its_tenants_login() -> None:
    clock = Clock()
    provider = FakePostgres(clock)
    outbound = replace(
        function_spec("app"), credentials=setting(), network="outbound", host_services=("127.0.0.1:5432",)
    )
    env = vendor(clock, provider).for_environment(outbound, "e1")
    assert env is not None and env.serves_postgres
    assert env.postgres_variables() == ({"PGHOST": "127.0.0.1", "PGPORT": "5432", "PGDATABASE": "app"}, True)
    status, _ = run(env.answer("postgres"))
    assert status == 404  # a stem, bound to nobody, gets no login
    env.bind("acme")
    status, body = run(env.answer("postgres"))
    document = json.loads(body)
    assert status == 200 and document["PGUSER"] in identifiers.role_names(outbound.function_arn, "acme")
    assert document["PGPASSWORD"] == "password-1" and document["Expiration"].endswith("Z")
    closed = vendor(clock, provider).for_environment(replace(outbound, host_services=()), "e2")
    assert closed is not None and closed.postgres_variables()[1] is False  # not reachable at its gateway


def test_the_login_travels_in_silos_own_headers_of_get_next() -> None:
    inv = Invocation(request_id="r1", payload=b"{}", invoked_arn=ARN, tenant_id="acme")
    head = wire.next_head(inv, 1, None, ("silo_acme_x", "pw"))
    assert b"Silo-Postgres-User: silo_acme_x\r\n" in head and b"Silo-Postgres-Password: pw\r\n" in head
    assert b"Silo-Postgres" not in wire.next_head(inv, 1)
    with pytest.raises(ValueError, match="PostgreSQL password"):
        wire.next_head(inv, 1, None, ("u", "p\r\nX-Injected: 1"))
