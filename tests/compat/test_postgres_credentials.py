"""The Postgres provider through a real `silo serve` (the jail, an outbound network with HostServices
["127.0.0.1:5432"]): a Python function that calls `psycopg.connect()` with no arguments is its tenant's login
role and reads and writes only its tenant's rows under the recipe of `silo tenant-db init`; the password
never appears in the server's log, a Tail, the logs, /metrics or the API.

psycopg is bundled into the function's zip from the tests' own environment (pure Python psycopg, its binary
wheel's extension and the libpq it ships), as tests/compat/test_credentials.py bundles boto3. The PostgreSQL
at 127.0.0.1:5432 trusts 127.0.0.1 (passwords unchecked) and may admit nothing else: a jailed environment's
connection, DNATed from its gateway, comes from the environment's own address, which that server's
pg_hba.conf need not admit. What the function is handed is checked in any case (the password is the one
whose SCRAM verifier PostgreSQL keeps); the rows it reads need a pg_hba.conf that admits silo's address
pool, and are checked when it does.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from silo.credentials import identifiers, tenant_db
from tests.postgres_support import ADMIN, Db, needs_postgres, scram_matches, tenant_database
from tests.support import ROLE, SiloServer, api_client, make_client, payload_of, python_runtime, zip_files

pytestmark = needs_postgres

SITE_PACKAGES = Path(psycopg.__file__).resolve().parent.parent
BUNDLED = ("psycopg", "psycopg_binary", "psycopg_binary.libs", "typing_extensions.py")

HANDLER = """
import os, psycopg


def handler(event, context):
    out = {name: os.environ.get(name) for name in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD")}
    try:
        with psycopg.connect(connect_timeout=10, autocommit=True) as conn:
            out["session_user"] = conn.execute("SELECT session_user").fetchone()[0]
            if event.get("write"):
                conn.execute("INSERT INTO notes (tenant, body) VALUES (%s, %s)", (context.tenant_id, event["write"]))
            out["rows"] = sorted(r[0] for r in conn.execute("SELECT tenant || ':' || body FROM notes"))
    except psycopg.OperationalError as exc:
        out["refused"] = str(exc)
    return out
"""


def bundled_code() -> bytes:
    files: dict[str, str | bytes] = {"app.py": HANDLER}
    for name in BUNDLED:
        root = SITE_PACKAGES / name
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in paths:
            rel = path.relative_to(SITE_PACKAGES).as_posix()
            if "__pycache__" not in rel:
                files[rel] = path.read_bytes()
    return zip_files(files)


@pytest.fixture(scope="module")
def db() -> Iterator[Db]:
    with tenant_database() as made:
        tenant_db.init(made.dsn, made.base_role, "notes", "tenant")
        yield made


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db: Db) -> Iterator[SiloServer]:
    server = SiloServer(tmp_path_factory.mktemp("postgres") / "data", "--tenant-db-admin", ADMIN)
    server.start()
    yield server
    server.stop()


def settings_path(name: str) -> str:
    return f"/silo/v1/functions/{urllib.parse.quote(name, safe='')}/settings"


def invoke(client: Any, name: str, tenant: str, **event: Any) -> tuple[dict[str, Any], str]:
    response = client.invoke(FunctionName=name, TenantId=tenant, LogType="Tail", Payload=json.dumps(event).encode())
    body = payload_of(response)
    assert "FunctionError" not in response, body
    return body, base64.b64decode(response["LogResult"]).decode()


def deploy(server: SiloServer, name: str, db: Db, network: dict[str, Any]) -> tuple[Any, str]:
    """The function, with the Postgres provider and `network`; the client and the function's ARN."""
    client = make_client(server.endpoint)
    client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": bundled_code()},
        Timeout=30,
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    setting = {"Database": db.name, "BaseRole": db.base_role, "ConnectionLimit": 3, "DurationSeconds": 600}
    answer = api_client(server.endpoint).json(
        "PUT", settings_path(name), {**network, "Credentials": {"Postgres": setting}}
    )
    assert answer["Credentials"] == {"Postgres": setting}
    return client, client.get_function(FunctionName=name)["Configuration"]["FunctionArn"]


def test_a_jailed_function_connecting_with_no_arguments_is_its_tenant_at_its_gateway(
    server: SiloServer, db: Db
) -> None:
    name = "pg-notes"
    client, arn = deploy(server, name, db, {"Network": "outbound", "HostServices": ["127.0.0.1:5432"]})

    acme, acme_tail = invoke(client, name, "acme", write="acme from silo")
    globex, globex_tail = invoke(client, name, "globex")
    for tenant, seen in (("acme", acme), ("globex", globex)):
        assert seen["PGUSER"] in identifiers.role_names(arn, tenant), seen
        assert seen["PGDATABASE"] == db.name and seen["PGPORT"] == "5432"
        # At its gateway's address (not the host's loopback, which it cannot reach): the HostServices DNAT.
        assert seen["PGHOST"] not in ("127.0.0.1", "localhost", None), seen
        # The password handed out is the one PostgreSQL will check (its SCRAM verifier), though this server
        # trusts connections from 127.0.0.1 and checks none.
        assert scram_matches(db.verifier(seen["PGUSER"]), seen["PGPASSWORD"])
    assert acme["PGPASSWORD"] != globex["PGPASSWORD"]

    if "refused" in acme:
        # This server's pg_hba.conf admits only 127.0.0.1; the environment reached it (a refusal, not a
        # timeout) from its own address. The rows are checked below through 127.0.0.1 with the same login.
        assert "pg_hba.conf" in acme["refused"], acme
        for seen, expected in ((acme, ["acme:acme 1", "acme:acme 2"]), (globex, ["globex:g 1"])):
            with psycopg.connect(
                host="127.0.0.1", dbname=db.name, user=seen["PGUSER"], password=seen["PGPASSWORD"]
            ) as conn:
                assert sorted(r[0] for r in conn.execute("SELECT tenant || ':' || body FROM notes")) == expected
    else:
        assert acme["session_user"] == acme["PGUSER"] and globex["session_user"] == globex["PGUSER"]
        assert acme["rows"] == ["acme:acme 1", "acme:acme 2", "acme:acme from silo"], acme
        assert globex["rows"] == ["globex:g 1"], globex

    assert_nowhere(server, client, name, [acme["PGPASSWORD"], globex["PGPASSWORD"]], acme_tail + globex_tail)


def test_a_function_connecting_with_no_arguments_reads_and_writes_only_its_tenants_rows(tmp_path: Path, db: Db) -> None:
    """The development backend shares the host's network, so the function connects from 127.0.0.1, which this
    PostgreSQL admits: the whole path, from silo's headers to the rows under row-level security, in the
    function itself."""
    server = SiloServer(tmp_path / "data", "--sandbox", "process", "--tenant-db-admin", ADMIN)
    server.start()
    try:
        name = "pg-notes-process"
        client, arn = deploy(server, name, db, {})
        acme, acme_tail = invoke(client, name, "acme", write="acme via process")
        globex, globex_tail = invoke(client, name, "globex", write="globex via process")
        again, again_tail = invoke(client, name, "acme")
        assert "refused" not in acme and "refused" not in globex, (acme.get("refused"), globex.get("refused"))
        assert acme["PGHOST"] == "127.0.0.1" and acme["session_user"] == acme["PGUSER"]
        assert globex["session_user"] == globex["PGUSER"] and globex["PGUSER"] in identifiers.role_names(arn, "globex")
        assert acme["rows"] == ["acme:acme 1", "acme:acme 2", "acme:acme via process"], acme
        assert globex["rows"] == ["globex:g 1", "globex:globex via process"], globex
        assert again["rows"] == acme["rows"] and again["PGPASSWORD"] == acme["PGPASSWORD"]
        assert scram_matches(db.verifier(acme["PGUSER"]), acme["PGPASSWORD"])
        tails = acme_tail + globex_tail + again_tail
        assert_nowhere(server, client, name, [acme["PGPASSWORD"], globex["PGPASSWORD"]], tails)
    finally:
        server.stop()


def assert_nowhere(server: SiloServer, client: Any, name: str, passwords: list[str], tails: str) -> None:
    """None of the tenants' database passwords in the server's log, a Tail, the logs, /metrics or the API."""
    api = api_client(server.endpoint)
    places = {
        "the server's log": server.log(),
        "a Tail": tails,
        "the logs": json.dumps(api.json("GET", f"/silo/v1/functions/{name}/logs")),
        "/metrics": requests.get(server.endpoint + "/metrics", timeout=30).text,
        "the settings": json.dumps(api.json("GET", settings_path(name))),
        "GetFunction": json.dumps(client.get_function(FunctionName=name), default=str),
        "the tenants": json.dumps(api.json("GET", f"/silo/v1/functions/{name}/tenants")),
    }
    for password in passwords:
        assert len(password) >= 32
        for where, text in places.items():
            assert password not in text, f"a tenant's database password appears in {where}"
