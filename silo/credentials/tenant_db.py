"""`silo tenant-db init`: the row-level-security recipe that lets each tenant's login role see only its rows.

What it makes, in the database of the DSN, in one transaction (each name composed with sql.Identifier):

    the base role (NOLOGIN), unless it exists; refused if it is a superuser, or has BYPASSRLS or CREATEROLE
    schema silo_tenant, of the DSN's role, usable by the base role only
    table silo_tenant.tenant_roles (role, tenant): which tenant each login role serves; silo's Postgres
        provider writes a row as it makes a role. No grant on it: the base role cannot read it
    function silo_tenant.current_tenant(): SECURITY DEFINER (it runs as its owner, who can read the mapping),
        with a fixed search_path, returning the tenant of session_user; the base role may execute it
    on the table: ENABLE and FORCE ROW LEVEL SECURITY (FORCE: its owner too), a policy for the base role
        whose USING and WITH CHECK are `<tenant column> = silo_tenant.current_tenant()`, and SELECT, INSERT,
        UPDATE, DELETE granted to the base role, and USAGE on the sequences of its columns (serial, identity)

Why session_user: it is the role the connection logged in as, which only a superuser can change (SET
SESSION AUTHORIZATION). SET ROLE, RESET ROLE, a session variable (`SET app.tenant`) or set_config() change
current_user or settings, never session_user, so none of them reaches another tenant's rows; a role with
no row in the mapping (the base role itself, any other) gets NULL, which equals no tenant: it sees nothing.
"""

from __future__ import annotations

from typing import Any

from silo.credentials.postgres import MAPPING_SCHEMA, MAPPING_TABLE, PostgresError, refusal

POLICY = "silo_tenant_rows"
FUNCTION = "current_tenant"


def qualified(table: str) -> tuple[str, ...]:
    """`schema.table` or `table` as the parts of its identifier (a name with a dot is not supported)."""
    parts = tuple(table.split("."))
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ValueError(f"--table must be TABLE or SCHEMA.TABLE; got {table!r}")
    return parts


def statements(base_role: str, table: str, tenant_column: str, make_base: bool) -> list[Any]:
    """The recipe, as composed statements, in the order they run."""
    from psycopg import sql

    base = sql.Identifier(base_role)
    schema = sql.Identifier(MAPPING_SCHEMA)
    mapping = sql.Identifier(MAPPING_SCHEMA, MAPPING_TABLE)
    function = sql.Identifier(MAPPING_SCHEMA, FUNCTION)
    target = sql.Identifier(*qualified(table))
    column = sql.Identifier(tenant_column)
    made: list[Any] = []
    if make_base:
        made.append(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS").format(base))
    made += [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema),
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema),
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (role name PRIMARY KEY, tenant text NOT NULL)").format(mapping),
        sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(mapping),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp "
            "AS $$ SELECT tenant FROM {mapping} WHERE role = session_user $$"
        ).format(function=function, mapping=mapping),
        sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(function),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, base),
        sql.SQL("GRANT EXECUTE ON FUNCTION {}() TO {}").format(function, base),
        sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(target),
        sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(target),
        sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(POLICY), target),
        sql.SQL(
            "CREATE POLICY {policy} ON {table} TO {base} "
            "USING ({column} = {function}()) WITH CHECK ({column} = {function}())"
        ).format(policy=sql.Identifier(POLICY), table=target, base=base, column=column, function=function),
        sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(target, base),
    ]
    return made


def init(dsn: str, base_role: str, table: str, tenant_column: str) -> list[str]:
    """Run the recipe at `dsn`; what was done, one line each. PostgresError or psycopg.Error when it fails (and
    nothing of it stays)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_catalog.pg_roles WHERE rolname = %s", (base_role,)
        ).fetchone()
        make_base = row is None
        if row is not None:
            reason = refusal(tuple(row), base_role)
            if reason is not None:
                raise PostgresError(reason, reason)
        done = []
        with conn.transaction():
            for statement in statements(base_role, table, tenant_column, make_base):
                conn.execute(statement)
                done.append(statement.as_string(conn))
            for statement in _sequence_grants(conn, base_role, table):
                conn.execute(statement)
                done.append(statement.as_string(conn))
        return done


def _sequence_grants(conn: Any, base_role: str, table: str) -> list[Any]:
    """USAGE on the sequences of the table's own columns (serial, identity), without which a tenant cannot
    insert a row; no other sequence."""
    from psycopg import sql

    rows = conn.execute(
        "SELECT n.nspname, s.relname FROM pg_catalog.pg_depend d "
        "JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' "
        "JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace "
        "WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refobjid = %s::regclass AND d.deptype IN ('a', 'i')",
        (sql.Identifier(*qualified(table)).as_string(conn),),
    ).fetchall()
    return [
        sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(schema, name), sql.Identifier(base_role))
        for schema, name in rows
    ]
