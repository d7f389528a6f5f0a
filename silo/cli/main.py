"""The `silo` command."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from silo.cli.client import ApiError, Client, Unreachable
from silo.config import DEFAULTS, GROUPS, Settings, environment_name, flag_name

DEFAULT_ENDPOINT = "http://127.0.0.1:9700"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="silo", description="silo: a self-hosted serverless platform that speaks the AWS Lambda API."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="start the platform (API, router, environments)",
        description="Start the platform. Each setting below is a flag, an environment variable and a key of the "
        "config file; a flag wins over the variable, which wins over the file, which wins over the default.",
    )
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a TOML file of settings, keyed by the names below (e.g. keep_alive_s = 600); see deploy/silo.toml",
    )
    add_setting_flags(serve)

    endpoint = argparse.ArgumentParser(add_help=False)
    endpoint.add_argument(
        "--endpoint",
        default=os.environ.get("SILO_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_LAMBDA") or DEFAULT_ENDPOINT,
        help=f"silo's API (SILO_ENDPOINT, else AWS_ENDPOINT_URL_LAMBDA, default {DEFAULT_ENDPOINT})",
    )

    deploy = sub.add_parser("deploy", parents=[endpoint], help="zip a directory and create or update a function")
    deploy.add_argument("directory", type=Path)
    deploy.add_argument("--name", required=True, help="function name")
    deploy.add_argument("--handler", help="module.function (default app.handler; index.handler for nodejs)")
    deploy.add_argument(
        "--runtime", help="python3.x, nodejs20.x or nodejs22.x, or provided.al2023 (default: this Python's version)"
    )
    deploy.add_argument(
        "--tenant-isolation",
        action="store_true",
        help="create the function in tenant isolation mode (PER_TENANT); only at creation",
    )
    deploy.add_argument("--memory", type=int, help="MemorySize in MB")
    deploy.add_argument("--timeout", type=int, help="Timeout in seconds")

    invoke = sub.add_parser("invoke", parents=[endpoint], help="invoke a function, as a tenant")
    invoke.add_argument("name")
    invoke.add_argument("--tenant", help="tenant id (required for tenant-isolated functions)")
    invoke.add_argument("--payload", default="{}", help="JSON event (default {})")
    invoke.add_argument("--logs", action="store_true", help="print the invocation's log tail to stderr")

    logs = sub.add_parser("logs", parents=[endpoint], help="show a function's logs, by tenant or request, and follow")
    logs.add_argument("name")
    logs.add_argument("--tenant", help="only this tenant's lines")
    logs.add_argument("--request-id", help="only this invocation's lines")
    logs.add_argument("--since", help="from this time: 10m, 2h, 7d ago, epoch ms or ISO 8601 (default: the newest)")
    logs.add_argument("--limit", type=int, help="at most this many lines (default: the newest 1000)")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    limits = sub.add_parser(
        "settings",
        parents=[endpoint],
        help="show or change silo's own settings of a function: sandbox, network, host services, per-tenant "
        "limits, gateway, credentials",
    )
    limits.add_argument("name")
    limits.add_argument("--sandbox", choices=["default", "jail", "gvisor"], help="backend for its environments")
    limits.add_argument("--network", choices=["none", "outbound"], help="outbound network for its environments")
    limits.add_argument(
        "--tenant-max-concurrency", type=_cap, metavar="N|none", help="concurrent invocations one tenant may run"
    )
    limits.add_argument(
        "--tenant-max-environments", type=_cap, metavar="N|none", help="environments one tenant may have"
    )
    limits.add_argument(
        "--host-service",
        action="append",
        metavar="127.0.0.1:PORT|none",
        help="a TCP port of the host's loopback its outbound environments may reach at their gateway's address "
        "(repeat for more; the list replaces the one set before); none removes them all",
    )
    limits.add_argument(
        "--gateway",
        metavar="JSON|@FILE|none",
        help="the end users' door (/gateway/NAME/...): which issuers' tokens it accepts and which claim names "
        "the tenant, as JSON, or @file.json; none removes it (see docs/operating.md, The gateway)",
    )
    limits.add_argument(
        "--credentials",
        metavar="JSON|@FILE|none",
        help='what each tenant\'s environments get of their own, e.g. \'{"Token": {}, "Sts": {"DurationSeconds": '
        '3600}, "Postgres": {"Database": "app", "BaseRole": "app_tenant"}}\', as JSON, or @file.json; none removes '
        "it (see docs/operating.md, Per-tenant credentials)",
    )

    keys = sub.add_parser(
        "keys",
        help="create, list and revoke the keys callers sign their requests with",
        description="Caller keys (an administrator key is needed). Requests are signed with the key found in "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, else profile AWS_PROFILE (default silo) of "
        "AWS_SHARED_CREDENTIALS_FILE, else of ./.silo/credentials, else of ~/.aws/credentials.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create",
        parents=[endpoint],
        help="create a key: --admin, or --tenant T with --function F ...; prints its secret once",
    )
    kind = create.add_mutually_exclusive_group(required=True)
    kind.add_argument("--admin", action="store_true", help="an administrator key: everything, as any tenant")
    kind.add_argument("--tenant", help="bind the key to this tenant: it may only invoke, only as this tenant")
    create.add_argument(
        "--function",
        action="append",
        default=[],
        metavar="NAME",
        help="a function the tenant-bound key may invoke (repeat for more)",
    )
    create.add_argument("--expires", metavar="DURATION", help="refuse the key after this long: 90s, 30m, 24h, 7d")
    create.add_argument("--description", help="what the key is for, shown by silo keys list")
    create.add_argument("--json", action="store_true", help='print {"AccessKeyId": ..., "SecretAccessKey": ...}')
    listed = keys_sub.add_parser("list", parents=[endpoint], help="list the keys (never their secrets)")
    listed.add_argument("--json", action="store_true", help="print the keys as JSON")
    revoke = keys_sub.add_parser("revoke", parents=[endpoint], help="revoke a key: refused from its next request")
    revoke.add_argument("key_id", metavar="ID")
    profiles = sub.add_parser(
        "signing-profile",
        help="register the public keys that sign code (for code signing configurations)",
        description="Signing profiles: Ed25519 public keys registered with silo under a name (an administrator "
        "key is needed). A code signing configuration lists the profiles' version ARNs it trusts.",
    )
    profiles_sub = profiles.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    add_profile = profiles_sub.add_parser("add", parents=[endpoint], help="register a public key under a name")
    add_profile.add_argument("name", metavar="NAME")
    add_profile.add_argument(
        "keyfile",
        metavar="KEYFILE",
        type=Path,
        help="a PEM Ed25519 public key (or private key: only its public half is sent)",
    )
    list_profiles = profiles_sub.add_parser("list", parents=[endpoint], help="list the signing profiles")
    list_profiles.add_argument("--json", action="store_true", help="print the profiles as JSON")
    remove_profile = profiles_sub.add_parser("remove", parents=[endpoint], help="remove a signing profile")
    remove_profile.add_argument("name", metavar="NAME")
    sign = sub.add_parser(
        "sign",
        help="sign a zip (code or layer) with a signing profile's private key",
        description="Writes the signature into the zip's comment, where silo looks for it on deployment.",
    )
    sign.add_argument("package", metavar="ZIP", type=Path)
    sign.add_argument("--key", required=True, type=Path, metavar="KEY", help="the profile's PEM Ed25519 private key")
    sign.add_argument("--profile", metavar="NAME", help="the signing profile's name (default: KEY's file name)")
    sign.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the signed zip here (default: in place)")
    tenant_db = sub.add_parser(
        "tenant-db",
        help="set up a PostgreSQL table for the Postgres provider of per-tenant credentials",
        description="The row-level-security recipe of docs/operating.md (Per-tenant credentials): each tenant's "
        "login role sees only the rows whose tenant column is its tenant.",
    )
    tenant_db_sub = tenant_db.add_subparsers(dest="tenant_db_command", required=True, metavar="ACTION")
    init = tenant_db_sub.add_parser(
        "init",
        help="make the base role (if missing), the role-to-tenant mapping, and the table's row-level security",
    )
    init.add_argument(
        "--dsn", required=True, help="libpq connection string of the database, as its owner (a password: PGPASSFILE)"
    )
    init.add_argument("--base-role", required=True, metavar="ROLE", help="the Postgres setting's BaseRole")
    init.add_argument("--table", required=True, metavar="[SCHEMA.]TABLE", help="the table to keep apart by tenant")
    init.add_argument("--tenant-column", required=True, metavar="COLUMN", help="its column of the tenant id (text)")
    return parser


def add_setting_flags(serve: argparse.ArgumentParser) -> None:
    """A flag for every field of `Settings`, grouped as in silo.config, each saying its variable and key."""
    groups = {name: serve.add_argument_group(f"settings: {name}") for name in GROUPS}
    for f in fields(Settings):
        default = getattr(DEFAULTS, f.name)
        choices: tuple[str, ...] = f.metadata.get("choices", ())
        shown = "true" if default is True else "false" if default is False else str(default)
        # argparse formats help with %: a literal one must be doubled.
        described = f"{f.metadata.get('help', f.name)} (default {shown}; {environment_name(f.name)}; key {f.name})"
        text = described.replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": text}
        if isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif isinstance(default, int):
            kwargs.update(type=int, metavar="N")
        elif isinstance(default, Path):
            kwargs.update(type=Path, metavar="DIR")
        elif choices:
            kwargs.update(type=str.lower, choices=choices)
        groups[f.metadata.get("group", GROUPS[0])].add_argument(flag_name(f.name), **kwargs)


def _cap(raw: str) -> int | None:
    if raw.lower() in ("none", "off", "0"):
        return None
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a whole number, or none for no cap (got {raw!r})") from None


SETTING_FLAGS = {
    "sandbox": "Sandbox",
    "network": "Network",
    "tenant_max_concurrency": "TenantMaxConcurrency",
    "tenant_max_environments": "TenantMaxEnvironments",
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from silo.cli.serve import serve

        return serve(args)
    from silo.cli import credentials, functions
    from silo.cli import signing as signing_command

    if args.command == "tenant-db":
        return tenant_db_init(args.dsn, args.base_role, args.table, args.tenant_column)
    if args.command == "sign":
        try:
            return signing_command.sign(args.package, args.key, args.profile, args.output)
        except (OSError, ValueError) as exc:
            print(f"silo: {exc}", file=sys.stderr)
            return 1
    try:
        client = Client(args.endpoint, credentials=credentials.find())
        if args.command == "keys":
            from silo.cli import keys as keys_command

            if args.keys_command == "create":
                if args.admin and args.function:
                    raise ValueError("--function names what a tenant-bound key may invoke; an --admin key may do all")
                if args.tenant is not None and not args.function:
                    raise ValueError("a key bound to a --tenant needs at least one --function it may invoke")
                return keys_command.create(
                    client, args.admin, args.tenant, args.function, args.expires, args.description, args.json
                )
            if args.keys_command == "list":
                return keys_command.show(client, args.json)
            return keys_command.revoke(client, args.key_id)
        if args.command == "signing-profile":
            if args.profile_command == "add":
                return signing_command.add(client, args.name, args.keyfile)
            if args.profile_command == "list":
                return signing_command.show(client, args.json)
            return signing_command.remove(client, args.name)
        if args.command == "logs":
            from silo.cli import logs as logs_command

            return logs_command.show(
                client, args.name, args.tenant, args.request_id, args.since, args.limit, args.follow
            )
        if args.command == "deploy":
            return functions.deploy(
                client,
                args.directory,
                args.name,
                args.handler,
                args.runtime,
                args.tenant_isolation,
                args.memory,
                args.timeout,
            )
        if args.command == "settings":
            given = {SETTING_FLAGS[k]: v for k, v in vars(args).items() if k in SETTING_FLAGS and v is not None}
            # argparse gives None both for "not given" and for "none": tell them apart from the raw argv.
            raw = " ".join(argv if argv is not None else sys.argv[1:])
            for flag, key in (
                ("--tenant-max-concurrency", "TenantMaxConcurrency"),
                ("--tenant-max-environments", "TenantMaxEnvironments"),
            ):
                if flag in raw and key not in given:
                    given[key] = None
            if args.gateway is not None:
                given["Gateway"] = functions.json_setting("--gateway", args.gateway)
            if args.credentials is not None:
                given["Credentials"] = functions.json_setting("--credentials", args.credentials)
            if args.host_service is not None:
                given["HostServices"] = [s for s in args.host_service if s.lower() != "none"]
            return functions.settings(client, args.name, given)
        return functions.invoke(client, args.name, args.tenant, args.payload, args.logs)
    except ApiError as exc:
        print(f"silo: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (Unreachable, ValueError) as exc:
        print(f"silo: {exc}", file=sys.stderr)
        return 1


def tenant_db_init(dsn: str, base_role: str, table: str, tenant_column: str) -> int:
    """`silo tenant-db init`: runs silo.credentials.tenant_db's recipe and prints each statement it ran."""
    import psycopg

    from silo.credentials import identifiers, tenant_db
    from silo.credentials.postgres import PostgresError

    for what, name in (("--base-role", base_role), ("--tenant-column", tenant_column)):
        if not name or len(name.encode()) > identifiers.MAX_BYTES:
            print(f"silo: {what} must be a PostgreSQL name of 1 to {identifiers.MAX_BYTES} bytes", file=sys.stderr)
            return 2
    try:
        done = tenant_db.init(dsn, base_role, table, tenant_column)
    except (PostgresError, ValueError) as exc:
        print(f"silo: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        print(f"silo: PostgreSQL refused the recipe, and none of it was kept: {exc}", file=sys.stderr)
        return 1
    for statement in done:
        print(f"{statement};")
    print(
        f"silo: {table} is kept apart by tenant for the members of {base_role}; give functions "
        f'{{"Credentials": {{"Postgres": {{"Database": ..., "BaseRole": "{base_role}"}}}}}}',
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
