"""`silo serve`: wire the layers together and run the HTTP server until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

import uvicorn
import uvloop

from silo.api import functions as function_routes
from silo.api import invoke as invoke_routes
from silo.api.app import build_app
from silo.config import Settings, load_settings
from silo.control.functions import FunctionService
from silo.jail import seccomp
from silo.router.pool import Router
from silo.sandbox.base import Sandbox
from silo.sandbox.jail import JailSandbox, SandboxUnavailable
from silo.sandbox.process import ProcessSandbox
from silo.store.code import CodeStore
from silo.store.db import open_db

log = logging.getLogger("silo")


SANDBOXES = ("auto", "jail", "process")


def make_sandbox(settings: Settings) -> Sandbox:
    """The environment backend: the jail when this machine can run it, else only if asked, the process one."""
    choice = settings.sandbox
    if choice not in SANDBOXES:
        raise SystemExit(f"silo: unknown sandbox backend {choice!r}; choose one of: {', '.join(SANDBOXES)}")
    if choice in ("auto", "jail"):
        try:
            return JailSandbox(settings.env_dir, seccomp.compile_filter(seccomp.load_policy()))
        except SandboxUnavailable as exc:
            if choice == "jail":
                raise SystemExit(f"silo: {exc}") from None
            log.warning("the jail is not available (%s); falling back to the development backend", exc)
    return ProcessSandbox(settings.env_dir)


async def run(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_db(settings.db_path)
    sandbox = make_sandbox(settings)
    log.info(
        "environments run in the %s backend%s",
        sandbox.name,
        "" if sandbox.isolates else " (no isolation between tenants: development only)",
    )
    router = Router(sandbox)
    loop = asyncio.get_running_loop()

    def retire(function_arn: str) -> None:
        # The control plane applies changes in worker threads; the router lives on the event loop.
        loop.call_soon_threadsafe(router.retire, function_arn)

    service = FunctionService(settings, db, CodeStore(settings.code_dir), on_change=retire)
    app = build_app([*function_routes.routes(service), *invoke_routes.routes(service, router)])
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http="httptools",
        loop="none",
        log_level=settings.log_level,
        access_log=False,
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    log.info(
        "silo serving the Lambda API on http://%s:%d with state in %s", settings.host, settings.port, settings.data_dir
    )
    # uvicorn handles SIGTERM/SIGINT during serve() and raises the signal again once it has stopped;
    # these handlers catch that second delivery, so the environments below are cleaned up, not orphaned.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: log.info("stopping: cleaning up environments"))
    try:
        await server.serve()
    finally:
        await router.close()
        db.close()


def serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(vars(args))
    except ValueError as exc:
        print(f"silo: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvloop.run(run(settings))
    return 0
