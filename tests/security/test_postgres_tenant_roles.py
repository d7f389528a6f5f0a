"""The Postgres provider and the row-level-security recipe of `silo tenant-db init`, against the real PostgreSQL
at 127.0.0.1:5432 (trust authentication, database `test`), without silo's server.

Each test makes a database and a base role of its own, and drops them (and the tenant roles it made) after
(tests/postgres_support.py). Trust authentication on 127.0.0.1 means this server does not check passwords:
the tests check that a password is made, set (its SCRAM verifier is in pg_authid) and renewed, which is what a
real deployment needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from silo.credentials import tenant_db
from silo.credentials.postgres import PostgresError, PostgresProvider
from tests.postgres_support import ADMIN, Db, needs_postgres, scram_matches, tenant_database

pytestmark = needs_postgres


@pytest.fixture
def db() -> Iterator[Db]:
    with tenant_database() as made:
        yield made


def _init(db: Db) -> None:
    tenant_db.init(db.dsn, db.base_role, "notes", "tenant")


def test_each_tenant_role_reads_and_writes_only_its_rows(db: Db) -> None:
    _init(db)
    provider = PostgresProvider(ADMIN)
    acme, globex = provider.issue_now(db.request("acme")), provider.issue_now(db.request("globex"))
    assert acme.user != globex.user and acme.password != globex.password
    with db.connect(acme) as a, db.connect(globex) as g:
        assert a.execute("SELECT session_user").fetchone() == (acme.user,)
        assert sorted(r[0] for r in a.execute("SELECT body FROM notes")) == ["acme 1", "acme 2"]
        assert [r[0] for r in g.execute("SELECT body FROM notes")] == ["g 1"]
        a.execute("INSERT INTO notes (tenant, body) VALUES ('acme', 'acme 3')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # WITH CHECK: not into another tenant's rows
            a.execute("INSERT INTO notes (tenant, body) VALUES ('globex', 'planted')")
        assert g.execute("UPDATE notes SET body = 'overwritten' WHERE tenant = 'acme'").rowcount == 0
        assert g.execute("DELETE FROM notes WHERE tenant = 'acme'").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # nor move its own rows to another tenant
            g.execute("UPDATE notes SET tenant = 'acme'")
    with psycopg.connect(db.dsn) as admin:
        admin.execute("SET row_security = off")
        rows = admin.execute("SELECT tenant, body FROM notes ORDER BY id").fetchall()
    assert rows == [("acme", "acme 1"), ("acme", "acme 2"), ("globex", "g 1"), ("acme", "acme 3")]


@pytest.mark.parametrize(
    "attempt",
    [
        "SET app.tenant = 'globex'",
        "SELECT set_config('app.tenant', 'globex', false)",
        "SET ROLE {base}",
        "RESET ROLE",
        "SET SESSION AUTHORIZATION {other}",
        "SET ROLE {other}",
    ],
)
def test_no_attempt_to_widen_its_scope_reaches_another_tenants_rows(db: Db, attempt: str) -> None:
    _init(db)
    provider = PostgresProvider(ADMIN)
    acme, globex = provider.issue_now(db.request("acme")), provider.issue_now(db.request("globex"))
    statement = sql.SQL(attempt).format(base=sql.Identifier(db.base_role), other=sql.Identifier(globex.user))
    with db.connect(acme) as a:
        try:
            a.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            pass  # refused outright: SET ROLE or SESSION AUTHORIZATION of a role it is not
        seen = sorted(r[0] for r in a.execute("SELECT tenant FROM notes"))
        assert seen == ["acme", "acme"]  # allowed or not, it gained nothing
        assert a.execute("SELECT session_user").fetchone() == (acme.user,)


@pytest.mark.parametrize(
    "query",
    ["SELECT * FROM silo_tenant.tenant_roles", "SELECT rolname, rolpassword FROM pg_authid"],
)
def test_the_mapping_and_pg_authid_are_unreadable_to_a_tenant(db: Db, query: str) -> None:
    _init(db)
    acme = PostgresProvider(ADMIN).issue_now(db.request("acme"))
    with db.connect(acme) as a, pytest.raises(psycopg.errors.InsufficientPrivilege):
        a.execute(query)


def test_the_roles_are_made_as_the_setting_says_and_renewals_take_turns_between_them(db: Db) -> None:
    _init(db)
    provider = PostgresProvider(ADMIN)
    first = provider.issue_now(db.request("acme", duration_s=600))
    second = provider.issue_now(db.request("acme", duration_s=900))
    third = provider.issue_now(db.request("acme", duration_s=1200))
    a, b = db.request("acme").roles
    assert (first.user, second.user, third.user) == (a, b, a)
    assert len({first.password, second.password, third.password}) == 3
    with psycopg.connect(db.dsn) as admin:
        rows = {
            row[0]: row[1:]
            for row in admin.execute(
                "SELECT rolname, rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, "
                "rolinherit, rolconnlimit, rolvaliduntil, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                ([a, b],),
            )
        }
        mapped = admin.execute("SELECT role, tenant FROM silo_tenant.tenant_roles ORDER BY role").fetchall()
        members = admin.execute(
            "SELECT pg_has_role(%s, %s, 'MEMBER'), pg_has_role(%s, %s, 'MEMBER')", (a, db.base_role, b, db.base_role)
        ).fetchone()
    for role in (a, b):
        assert rows[role][:8] == (True, False, False, False, False, False, True, 5)
    # The renewal of a gave it a new password and VALID UNTIL; b, handed out before, keeps its own until its
    # end, so a connection opened with it after the renewal still logs in.
    assert abs(rows[a][8].timestamp() - third.lease.expires_at) < 2
    assert abs(rows[b][8].timestamp() - second.lease.expires_at) < 2
    # Sent as SCRAM verifiers only; each holds the newest password of its slot.
    assert scram_matches(rows[a][9], third.password) and not scram_matches(rows[a][9], first.password)
    assert scram_matches(rows[b][9], second.password) and second.password not in rows[b][9]
    assert mapped == [(a, "acme"), (b, "acme")] and members == (True, True)
    assert third.password not in repr(third)


def test_a_tenant_with_an_odd_or_long_id_gets_a_role_of_its_own(db: Db) -> None:
    _init(db)
    provider = PostgresProvider(ADMIN)
    long_a, long_b = "Tenant:" + "x" * 200 + "a", "Tenant:" + "x" * 200 + "b"
    a, b = provider.issue_now(db.request(long_a)), provider.issue_now(db.request(long_b))
    assert a.user != b.user and len(a.user.encode()) <= 63
    with db.connect(a) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)


@pytest.mark.parametrize("attribute", ["SUPERUSER", "BYPASSRLS", "CREATEROLE"])
def test_a_base_role_with_power_over_row_security_is_refused(db: Db, attribute: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN " + attribute).format(sql.Identifier(db.base_role)))
    with pytest.raises(PostgresError, match=attribute):
        PostgresProvider(ADMIN).issue_now(db.request("acme"))
    with pytest.raises(PostgresError, match=attribute):
        _init(db)
    with psycopg.connect(ADMIN) as admin:
        members = admin.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE b.rolname = %s",
            (db.base_role,),
        ).fetchone()
    assert members == (0,)  # no tenant role was made


def test_a_missing_base_role_is_refused_with_what_to_do(db: Db) -> None:
    with pytest.raises(PostgresError, match="does not exist"):
        PostgresProvider(ADMIN).issue_now(db.request("acme"))


def test_silo_tenant_db_init_runs_the_recipe_and_says_what_it_did(db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    from silo.cli.main import main

    argv = ["tenant-db", "init", "--dsn", db.dsn, "--base-role", db.base_role, "--table", "public.notes"]
    assert main([*argv, "--tenant-column", "tenant"]) == 0
    out = capsys.readouterr().out
    assert "FORCE ROW LEVEL SECURITY" in out and "SECURITY DEFINER" in out
    assert main([*argv, "--tenant-column", "tenant"]) == 0  # again: nothing breaks, nothing doubles
    acme = PostgresProvider(ADMIN).issue_now(db.request("acme"))
    with db.connect(acme) as a:
        assert a.execute("SELECT count(*) FROM notes").fetchone() == (2,)
    assert main([*argv, "--tenant-column", "no_such_column"]) == 1
    assert "none of it was kept" in capsys.readouterr().err
