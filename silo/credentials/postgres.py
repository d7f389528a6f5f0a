"""The `postgres` provider: PostgreSQL login roles per (function, tenant), in the user's database.

At `silo serve --tenant-db-admin DSN`, silo makes or renews one of the tenant's two roles in the database
the setting names, in one transaction:

    CREATE ROLE <one of silo.credentials.identifiers.role_names> WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
        NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT <n> PASSWORD <verifier> VALID UNTIL <t>
        IN ROLE <BaseRole>
    (or, when it exists, ALTER ROLE ... the same attributes, a new password and a new VALID UNTIL)
    INSERT INTO silo_tenant.tenant_roles (role, tenant) ... (when `silo tenant-db init` made that table)

Two roles (slots `_a` and `_b`), because a role has one password: renewing the only one would lock out
connections opened with the password handed out before. The slot renewed is the one missing, else the one
whose VALID UNTIL comes first: the one handed out last keeps its password until its own VALID UNTIL, so a
connection an environment opens with it after the renewal (a call that began before) still logs in. The
roles inherit the base role, on which the user grants their tables; the row-level-security recipe of
`silo tenant-db init` (silo.credentials.tenant_db) lets them see only their tenant's rows, by session_user.
The password is 32 random bytes; the server is sent only its SCRAM-SHA-256 verifier (libpq's
PQencryptPasswordConn), so the password is in no statement PostgreSQL might log. Every name and value is
composed with psycopg's sql.Identifier and sql.Literal, never with string formatting.

The base role is checked on every issue: silo refuses one that is a superuser, has BYPASSRLS or
CREATEROLE (a tenant would inherit the way around the recipe), or does not exist.

psycopg is synchronous here: each issue runs in a worker thread, on a connection of its own (a few a
tenant per password's half life, not per call). It is imported on first use.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from silo.credentials import identifiers
from silo.credentials.errors import ProviderError
from silo.credentials.lifetime import Lease

MAPPING_SCHEMA = "silo_tenant"
MAPPING_TABLE = "tenant_roles"
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class PostgresLogin:
    """A tenant's login role and its password. Never logged, never in silo's API: repr hides the password."""

    user: str
    password: str
    lease: Lease

    def __repr__(self) -> str:
        return f"PostgresLogin(user={self.user!r}, expires_at={self.lease.expires_at})"

    def document(self) -> dict[str, str]:
        """What the Runtime API's postgres route answers (libpq's variable names)."""
        expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.lease.expires_at))
        return {"PGUSER": self.user, "PGPASSWORD": self.password, "Expiration": expiry}


class PostgresError(ProviderError):
    """The tenant's role could not be made or renewed."""


@dataclass(frozen=True, slots=True)
class RoleRequest:
    """One tenant's login role, and the key its password is kept under."""

    function_arn: str
    tenant_id: str
    database: str
    base_role: str
    connection_limit: int
    duration_s: int

    @property
    def roles(self) -> tuple[str, str]:
        return identifiers.role_names(self.function_arn, self.tenant_id)


def refusal(attributes: tuple[bool, bool, bool] | None, base_role: str) -> str | None:
    """Why `base_role`, of (rolsuper, rolbypassrls, rolcreaterole) `attributes` (None: no such role), may not be
    the base role of tenants; None when it may."""
    if attributes is None:
        return f"the base role {base_role!r} does not exist; make it (NOLOGIN) or run `silo tenant-db init`"
    given = [name for name, has in zip(("SUPERUSER", "BYPASSRLS", "CREATEROLE"), attributes, strict=True) if has]
    if given:
        return (
            f"the base role {base_role!r} has {', '.join(given)}, which every tenant's role would inherit past "
            f"row-level security; give tenants a role without it (ALTER ROLE ... NO{given[0]})"
        )
    return None


def slot(roles: tuple[str, str], valid_until: dict[str, datetime | None]) -> tuple[str, bool]:
    """Which of a tenant's `roles` to renew, given the VALID UNTIL of those that exist (None: no end), and
    whether it exists: the first missing one, else the one that ends first (one without an end first of all:
    silo never leaves one so)."""
    for role in roles:
        if role not in valid_until:
            return role, False

    def ends(role: str) -> float:
        end = valid_until[role]
        return float("-inf") if end is None else end.timestamp()

    return min(roles, key=ends), True


def role_statement(exists: bool, role: str, request: RoleRequest, verifier: str, valid_until: str) -> Any:
    """The CREATE ROLE (or ALTER ROLE) of `role`, one of `request`'s, composed (a psycopg sql.Composed)."""
    from psycopg import sql

    attributes = sql.SQL(
        "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT {limit} "
        "PASSWORD {password} VALID UNTIL {until}"
    ).format(
        limit=sql.Literal(request.connection_limit), password=sql.Literal(verifier), until=sql.Literal(valid_until)
    )
    if exists:
        return sql.SQL("ALTER ROLE {role} WITH {attributes}").format(role=sql.Identifier(role), attributes=attributes)
    return sql.SQL("CREATE ROLE {role} WITH {attributes} IN ROLE {base}").format(
        role=sql.Identifier(role), attributes=attributes, base=sql.Identifier(request.base_role)
    )


class PostgresProvider:
    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn

    def _where(self, database: str) -> str:
        # The DSN may hold a password: the log names only its host, port and the database.
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(self.admin_dsn)
        except Exception:
            return f"database {database!r}"
        return f"database {database!r} at {parts.get('host', 'localhost')}:{parts.get('port', 5432)}"

    def address(self) -> tuple[str, int]:
        """The host and port of the admin DSN (what environments connect to, too)."""
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(self.admin_dsn)
        return str(parts.get("host") or "localhost"), int(parts.get("port") or 5432)

    async def issue(self, request: RoleRequest) -> PostgresLogin:
        return await asyncio.to_thread(self.issue_now, request)

    def issue_now(self, request: RoleRequest) -> PostgresLogin:
        import psycopg

        issued = time.time()
        expires = issued + request.duration_s
        password = secrets.token_urlsafe(32)
        try:
            with psycopg.connect(
                self.admin_dsn, dbname=request.database, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True
            ) as conn:
                self._check_base(conn, request.base_role)
                with conn.transaction():
                    role = self._write(conn, request, password, expires)
        except PostgresError:
            raise
        except psycopg.Error as exc:
            raise PostgresError(
                f"PostgreSQL ({self._where(request.database)}) refused to make or renew a role of tenant "
                f"{request.tenant_id!r} ({request.roles[0]}): {type(exc).__name__}: {exc}. The --tenant-db-admin "
                f"role needs CREATEROLE and, on PostgreSQL 16 and later, ADMIN OPTION on {request.base_role!r}",
                "silo could not give this tenant its database role",
            ) from None
        return PostgresLogin(role, password, Lease(issued, expires))

    def _check_base(self, conn: Any, base_role: str) -> None:
        row = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = %s", (base_role,)
        ).fetchone()
        reason = refusal(tuple(row) if row is not None else None, base_role)
        if reason is not None:
            raise PostgresError(
                f"silo refuses to make tenant roles in {self._where('')}: {reason}",
                "the function's database base role is refused by silo; the server's log says why",
            )

    def _write(self, conn: Any, request: RoleRequest, password: str, expires: float) -> str:
        """Make or renew one of the tenant's roles with `password`, valid until `expires`; which one."""
        from psycopg import sql

        roles = request.roles
        # Two servers (or two renewals) of one tenant take turns: the second sees what the first made.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (roles[0],))
        rows = conn.execute(
            "SELECT rolname, rolvaliduntil FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", (list(roles),)
        ).fetchall()
        role, exists = slot(roles, {name: until for name, until in rows})
        # Only the SCRAM verifier goes to the server (libpq's PQencryptPasswordConn): no statement it might
        # log holds the password.
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
        valid_until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        conn.execute(role_statement(exists, role, request, verifier, valid_until))
        mapping = conn.execute("SELECT to_regclass(%s)", (f"{MAPPING_SCHEMA}.{MAPPING_TABLE}",)).fetchone()
        if mapping is not None and mapping[0] is not None:
            conn.execute(
                sql.SQL(
                    "INSERT INTO {table} (role, tenant) VALUES ({role}, {tenant}) "
                    "ON CONFLICT (role) DO UPDATE SET tenant = EXCLUDED.tenant"
                ).format(
                    table=sql.Identifier(MAPPING_SCHEMA, MAPPING_TABLE),
                    role=sql.Literal(role),
                    tenant=sql.Literal(request.tenant_id),
                )
            )
        return role
