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
        help="environment backend: auto (default: jail when run as root), jail, "
        "or process (development only, no isolation) (SILO_SANDBOX)",
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from silo.cli.serve import serve

        return serve(args)
    from silo.cli import functions

    try:
        client = Client(args.endpoint)
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
        return functions.invoke(client, args.name, args.tenant, args.payload, args.logs)
    except ApiError as exc:
        print(f"silo: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (Unreachable, ValueError) as exc:
        print(f"silo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
