"""The `silo` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from silo.cli.client import ApiError, Client, Unreachable

DEFAULT_ENDPOINT = "http://127.0.0.1:9700"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="silo", description="silo: a self-hosted serverless platform that speaks the AWS Lambda API."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="start the platform (API, router, environments)")
    serve.add_argument("--host", help="address to listen on (SILO_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (SILO_PORT, default 9700)")
    serve.add_argument("--data-dir", type=Path, help="where state lives (SILO_DATA_DIR, default ./.silo)")
    serve.add_argument(
        "--sandbox",
        help="environment backend: auto (default: jail when run as root), jail, gvisor (a gVisor "
        "sandbox per environment, needs runsc), or process (development only, no isolation) (SILO_SANDBOX)",
    )

    serve.add_argument(
        "--account-concurrency",
        type=int,
        help="concurrent invocations of all functions together (SILO_ACCOUNT_CONCURRENCY, default 1000)",
    )
    serve.add_argument(
        "--memory-budget-mb",
        type=int,
        help="memory all live environments may use together (SILO_MEMORY_BUDGET_MB, "
        "default: three quarters of the host's)",
    )
    serve.add_argument(
        "--keep-alive-s", type=int, help="seconds an idle environment lives (SILO_KEEP_ALIVE_S, default 600)"
    )
    serve.add_argument(
        "--queue-wait-ms",
        type=int,
        help="how long a call waits its turn when all concurrency is in use, before it is "
        "throttled (SILO_QUEUE_WAIT_MS, default 2000)",
    )
    serve.add_argument(
        "--stems-per-function",
        type=int,
        help="environments each tenant-isolated function keeps initialised ahead for new tenants "
        "(SILO_STEMS_PER_FUNCTION, default 8; 0: none)",
    )
    serve.add_argument(
        "--template-max-forks",
        type=int,
        help="environments one template forks before a fresh one replaces it "
        "(SILO_TEMPLATE_MAX_FORKS, default 256; 0: no templates, every environment starts from nothing)",
    )
    serve.add_argument(
        "--http-max-connections",
        type=int,
        help="HTTP connections open at once, in all (SILO_HTTP_MAX_CONNECTIONS, default 10000)",
    )
    serve.add_argument(
        "--http-max-connections-per-address",
        type=int,
        help="HTTP connections open at once from one client address, loopback included "
        "(SILO_HTTP_MAX_CONNECTIONS_PER_ADDRESS, default 256; 0: no cap, e.g. behind a proxy)",
    )

    endpoint = argparse.ArgumentParser(add_help=False)
    endpoint.add_argument(
        "--endpoint",
        default=os.environ.get("SILO_ENDPOINT", DEFAULT_ENDPOINT),
        help=f"silo's API (SILO_ENDPOINT, default {DEFAULT_ENDPOINT})",
    )

    deploy = sub.add_parser("deploy", parents=[endpoint], help="zip a directory and create or update a function")
    deploy.add_argument("directory", type=Path)
    deploy.add_argument("--name", required=True, help="function name")
    deploy.add_argument("--handler", help="module.function (default app.handler)")
    deploy.add_argument("--runtime", help="python3.x or provided.al2023 (default: this Python's version)")
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
        help="show or change silo's own settings of a function: sandbox, network, per-tenant limits",
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
    return parser


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
    from silo.cli import functions

    try:
        client = Client(args.endpoint)
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
            return functions.settings(client, args.name, given)
        return functions.invoke(client, args.name, args.tenant, args.payload, args.logs)
    except ApiError as exc:
        print(f"silo: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (Unreachable, ValueError) as exc:
        print(f"silo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
