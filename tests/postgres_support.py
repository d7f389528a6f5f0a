"""A throwaway database and base role on the PostgreSQL at 127.0.0.1:5432 (trust authentication, database
`test`), for the Postgres provider's tests; dropped after, with the tenant roles made in it.

Trust authentication on 127.0.0.1 means that server does not check passwords: the tests check that a
password is made, set (its SCRAM verifier in pg_authid) and delivered, which is what a real deployment needs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql

from silo.credentials.postgres import PostgresLogin, RoleRequest

ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"


def reachable() -> bool:
    try:
        psycopg.connect(ADMIN, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


needs_postgres = pytest.mark.skipif(not reachable(), reason="no PostgreSQL at 127.0.0.1:5432")


@dataclass
class Db:
    name: str
    base_role: str
    function_arn: str
    dsn: str

    def request(self, tenant: str, duration_s: int = 3600) -> RoleRequest:
        return RoleRequest(self.function_arn, tenant, self.name, self.base_role, 5, duration_s)

    def connect(self, login: PostgresLogin) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            host="127.0.0.1", port=5432, dbname=self.name, user=login.user, password=login.password, autocommit=True
        )

    def verifier(self, role: str) -> str:
        with psycopg.connect(self.dsn) as admin:
            row = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
        assert row is not None and row[0] is not None, f"role {role} has no password"
        return str(row[0])


@contextmanager
def tenant_database() -> Iterator[Db]:
    """A database with a table `notes (id, tenant, body)` holding two rows of acme and one of globex."""
    suffix = secrets.token_hex(4)
    name, base = f"silo_test_{suffix}", f"silo_test_base_{suffix}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, tenant text NOT NULL, body text NOT NULL)")
        conn.execute(
            "INSERT INTO notes (tenant, body) VALUES ('acme', 'acme 1'), ('acme', 'acme 2'), ('globex', 'g 1')"
        )
    try:
        yield Db(name, base, f"arn:aws:lambda:us-east-1:000000000000:function:pg-{suffix}", dsn)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            members = admin.execute(
                "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                "JOIN pg_roles b ON b.oid = m.roleid WHERE b.rolname = %s",
                (base,),
            ).fetchall()
            for role in [m[0] for m in members] + [base]:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def scram_matches(verifier: str, password: str) -> bool:
    """Whether `password` is the one whose SCRAM-SHA-256 verifier (as pg_authid keeps it) is `verifier`
    (RFC 5802: StoredKey = H(HMAC(SaltedPassword, "Client Key")))."""
    scheme, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$", 1)
    iterations, salt = iterations_salt.split(":", 1)
    stored_key = keys.split(":", 1)[0]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return scheme == "SCRAM-SHA-256" and hmac.compare_digest(
        base64.b64encode(hashlib.sha256(client_key).digest()).decode(), stored_key
    )
