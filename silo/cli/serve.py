"""`silo serve`: wire the layers together and run the HTTP server until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import uvicorn
import uvloop

from silo.api import functions as function_routes
from silo.api import invoke as invoke_routes
from silo.api.app import build_app
from silo.config import Settings, load_settings
from silo.control.functions import FunctionService
from silo.router.pool import Router
from silo.sandbox.base import Sandbox
from silo.sandbox.process import ProcessSandbox
from silo.store.code import CodeStore
from silo.store.db import open_db

log = logging.getLogger("silo")


def make_sandbox(settings: Settings) -> Sandbox:
    if settings.sandbox == "process":
        return ProcessSandbox(settings.env_dir)
    raise SystemExit(f"silo: unknown sandbox backend {settings.sandbox!r}; choose one of: process")


async def run(settings: Settings) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_db(settings.db_path)
    router = Router(make_sandbox(settings))
    service = FunctionService(settings, db, CodeStore(settings.code_dir), on_change=router.retire)
    app = build_app([*function_routes.routes(service), *invoke_routes.routes(service, router)])
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, http="httptools", loop="none",
        log_level=settings.log_level, access_log=False, server_header=False, date_header=False,
    )
    server = uvicorn.Server(config)
    log.info("silo serving the Lambda API on http://%s:%d with state in %s",
             settings.host, settings.port, settings.data_dir)
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
