"""`silo serve`: wire the layers together and run the HTTP server until told to stop."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import resource
import signal
import sys
from dataclasses import replace

import uvicorn
import uvloop

from silo.api import invoke as invoke_routes
from silo.api.app import build_app
from silo.api.auth import Authentication, UrlSigner, body_limit, check_auth_setting
from silo.api.front import Front, FrontLimits, descriptor_room
from silo.api.function_urls import FunctionUrlEndpoint
from silo.api.functions import MAX_REQUEST_BYTES
from silo.api.gateway import GatewayEndpoint
from silo.api.health import Readiness
from silo.api.protocol import bound_to
from silo.api.routes import api_routes
from silo.cli import credentials, log_format, systemd
from silo.config import Settings, load_settings, read_config
from silo.control.event_config import EventInvokeConfigService
from silo.control.functions import FunctionService
from silo.control.keys import KeyService
from silo.control.s3_code import S3Code, check_s3_endpoint
from silo.credentials.postgres import PostgresProvider
from silo.credentials.sts import StsProvider
from silo.credentials.tokens import TokenSigner
from silo.credentials.vendor import CredentialVendor
from silo.errors import ResourceNotFoundException
from silo.events.dispatcher import Dispatcher, DispatchSettings
from silo.router.limits import AccountLimits
from silo.router.pool import Router
from silo.router.stems import StemPolicy
from silo.runtimes import catalog
from silo.sandbox.choice import make_sandbox, other_sandboxes
from silo.store import sdk
from silo.store.code import CodeStore
from silo.store.db import Database, open_db
from silo.store.events import EventInvokeConfigRepository, EventQueue
from silo.store.keys import KeyRepository
from silo.store.logs import LogStore
from silo.store.sealing import Sealer, SealingKeyError
from silo.telemetry.metrics import EnvironmentView
from silo.telemetry.recorder import Telemetry

log = logging.getLogger("silo")


SWITCH_INTERVAL_S = 0.0005


def memory_budget_mb(settings: Settings) -> int:
    """The memory all live environments may use together: as set, else three quarters of the host's."""
    if settings.memory_budget_mb > 0:
        return settings.memory_budget_mb
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * 0.75) // (1024 * 1024)


# Each live environment holds five descriptors in the daemon (its Runtime API socket and connection, its
# output, its peak-memory counter, its freezer); thousands of environments need more than a shell's default. Only
# the hard limit's owner (CAP_SYS_RESOURCE) may go past it: without, the soft limit rises to the hard.
WANTED_OPEN_FILES = 1 << 20


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (WANTED_OPEN_FILES, hard):
        if wanted <= soft:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
            soft = wanted
            break
        except (ValueError, OSError):
            continue
    if soft < WANTED_OPEN_FILES:
        log.info(
            "silo may open %d files, enough for about %d environments; raise the hard limit (ulimit -Hn) for more",
            soft,
            soft // 5,
        )


def tenant_db_provider(dsn: str) -> PostgresProvider | None:
    """The Postgres provider of --tenant-db-admin; None without one. A DSN libpq cannot read stops the server
    at start, not a tenant's first call."""
    if not dsn:
        return None
    provider = PostgresProvider(dsn)
    try:
        host, port = provider.address()
    except Exception:
        # libpq's message may quote the DSN, and with it a password: say only what to fix.
        raise SystemExit(
            "silo: --tenant-db-admin is not a connection string libpq reads: give one as "
            "'host=127.0.0.1 port=5432 user=silo_admin dbname=postgres' or postgresql://user@host:port/db"
        ) from None
    log.info("the Postgres provider makes tenants' roles at %s:%s", host, port)
    return provider


def caller_keys(settings: Settings, db: Database) -> KeyService:
    """The caller keys, and under SigV4 an administrator key in the data directory's credentials file,
    made when the file holds none that works (the first start, or after it was revoked or removed)."""
    try:
        keys = KeyService(KeyRepository(db, Sealer.in_directory(settings.data_dir)))
    except SealingKeyError as exc:
        raise SystemExit(f"silo: {exc}") from None
    if settings.auth == "none":
        log.warning(
            "authentication is off (--auth none): anyone who can reach http://%s:%d may do anything, as any "
            "tenant. For local development only; leave --auth at sigv4 (the default) anywhere else",
            settings.host,
            settings.port,
        )
        return keys
    path = settings.data_dir / credentials.FILE_NAME
    new = keys.credentials_key(credentials.read(path, credentials.PROFILE))
    if new is not None:
        credentials.write(path, credentials.PROFILE, new.key_id, new.secret, settings.region)
        log.info("created the administrator key %s, written to %s (profile %s)", new.key_id, path, credentials.PROFILE)
    log.info(
        "callers sign their requests (SigV4) with silo keys; an administrator key is in %s: export "
        "AWS_SHARED_CREDENTIALS_FILE=%s AWS_PROFILE=%s",
        path,
        path,
        credentials.PROFILE,
    )
    return keys


def token_issuer(settings: Settings) -> str:
    """The `iss` of the tenant tokens: as set, else the URL the server listens at."""
    if settings.token_issuer:
        return settings.token_issuer.rstrip("/")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"


def runtime_sdk(settings: Settings) -> sdk.RuntimeSdk:
    """The boto3 and botocore the Python runtimes ship, from silo's own install."""
    interpreters = {runtime: i.executable for runtime, i in catalog.python_interpreters().items()}
    try:
        return sdk.RuntimeSdk(settings.sdk_root, interpreters)
    except (sdk.SdkError, OSError) as exc:
        message = f"silo: the Python runtimes' boto3 could not be prepared in {settings.sdk_root}: {exc}"
        raise SystemExit(message) from None


async def run(settings: Settings) -> None:
    readiness = Readiness()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    raise_open_files_limit()
    db = open_db(settings.db_path)
    keys = caller_keys(settings, db)
    readiness.up("store")
    # Logs and metering have their own connection, so their batched writes never wait on the control plane.
    telemetry_db = open_db(settings.db_path)
    telemetry = Telemetry(
        LogStore(telemetry_db, settings.log_retention_mb * 1024 * 1024), tenant_labels=settings.metrics_tenant_labels
    )
    telemetry.start()
    try:
        tokens = TokenSigner.in_directory(settings.data_dir, token_issuer(settings))
    except SealingKeyError as exc:
        raise SystemExit(f"silo: {exc}") from None
    credentials = CredentialVendor(
        signer=tokens,
        sts=StsProvider(settings.region, settings.sts_endpoint or None),
        postgres=tenant_db_provider(settings.tenant_db_admin),
    )
    sandbox = make_sandbox(settings)
    readiness.watch("sandbox", sandbox.ready)
    router = Router(
        sandbox,
        others=other_sandboxes(settings, sandbox),
        account=AccountLimits(settings.account_concurrency, memory_budget_mb(settings)),
        reserved_total=lambda: service.reserved_total(),
        keep_alive_s=settings.keep_alive_s,
        init_timeout_s=settings.init_timeout_s,
        queue_wait_s=settings.queue_wait_ms / 1000,
        stems=StemPolicy(per_function=settings.stems_per_function),
        telemetry=telemetry,
        credentials=credentials,
    )
    telemetry.watch_environments(
        lambda: (
            # A stem is a stem from its start: while it grows it is nobody's environment yet.
            EnvironmentView(e.spec.function_name, e.key.tenant_id, "stem" if e.is_unbound_stem() else e.state.value)
            for e in router.environments()
        )
    )
    router.start_reaper()
    # Every call allocates a few hundred objects and frees nearly all of them; the cycle collector's
    # default of a young collection every 700 allocations, each walking ever more long-lived objects of
    # thousands of environments, showed up as latency spikes. What exists at start is never collected.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    # The event loop shares the GIL with worker threads (log batches, SQLite, cgroups made ahead). When one
    # of them holds it, the loop waits up to the switch interval (5 ms by default) before it gets it back:
    # that wait was the tail of warm calls' latency. A tenth of it keeps the loop's waits short.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    loop = asyncio.get_running_loop()

    def retire(function_arn: str, version: str | None) -> None:
        # The control plane applies changes in worker threads; the router lives on the event loop.
        loop.call_soon_threadsafe(router.retire, function_arn, version)
        if version is not None:
            return
        # A deleted function's pending async events go to its dead-letter list now, before a new
        # function of the same name could take them (this runs in the worker thread that deleted it).
        name = function_arn.rsplit(":", 1)[-1]
        try:
            service.resolve(name, None)
        except ResourceNotFoundException:
            dispatcher.function_removed(name)

    service = FunctionService(
        settings,
        db,
        CodeStore(settings.code_dir),
        on_change=retire,
        concurrency_limit=settings.account_concurrency,
        packages=S3Code(settings.s3_endpoint, settings.region) if settings.s3_endpoint else None,
        sdk=runtime_sdk(settings),
    )
    # The templates the deployed functions fork from start now; /readyz waits for them.
    sandbox.warm({spec.runtime for spec in service.functions()})
    event_configs = EventInvokeConfigService(service, EventInvokeConfigRepository(db))
    dispatcher = Dispatcher(
        EventQueue(db),
        service,
        event_configs,
        router,
        DispatchSettings(max_in_flight=settings.async_concurrency, retry_base_s=settings.async_retry_base_ms / 1000),
    )
    dispatcher.start()
    invoke = invoke_routes.InvokeEndpoint(service, router, dispatcher)
    signing = settings.auth == "sigv4"
    routes = api_routes(
        service,
        event_configs,
        dispatcher,
        telemetry,
        invoke,
        readiness,
        keys,
        service.layers,
        service.code_signing,
        presign=UrlSigner(keys, settings.region) if signing else None,
        gateway=GatewayEndpoint(service, router),
        tokens=tokens,
        function_urls=FunctionUrlEndpoint(service, router, settings.account_id, signed=signing),
    )
    limit = body_limit(MAX_REQUEST_BYTES, invoke_routes.SYNC_PAYLOAD_LIMIT)
    app = build_app(
        routes,
        hot=invoke,
        authenticate=(
            lambda inner: Authentication(
                inner, keys, region=settings.region, body_limit=limit, url_auth=service.function_url_auth_type
            )
        )
        if signing
        else None,
    )
    limits = FrontLimits.from_settings(settings)
    front = Front(replace(limits, max_connections=descriptor_room(limits.max_connections)))
    front.start(loop)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=bound_to(front),
        timeout_keep_alive=limits.idle_s,
        loop="none",
        log_level=settings.log_level,
        log_config=None,  # uvicorn's records go to the daemon's log, in its format (silo.cli.log_format)
        access_log=False,
        server_header=False,
        date_header=False,
        # No proxy in front is assumed, and nothing reads the client's address: skip that middleware.
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    log.info(
        "silo serving the Lambda API on http://%s:%d with state in %s", settings.host, settings.port, settings.data_dir
    )
    # uvicorn handles SIGTERM/SIGINT during serve() and raises the signal again once it has stopped;
    # these handlers catch that second delivery, so the environments below are cleaned up, not orphaned.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: log.info("stopping: cleaning up environments"))
    announcer = loop.create_task(systemd.announce(readiness, lambda: server.started, lambda: server.should_exit))
    try:
        await server.serve()
    finally:
        if not announcer.done():
            announcer.cancel()
            systemd.notify("STOPPING=1")
        front.close()
        await dispatcher.stop()
        await router.close()
        await telemetry.close()
        telemetry_db.close()
        db.close()


# sysexits.h's EX_CONFIG: silo refused to start as configured on this host (and says why).
REFUSED = 78


def serve(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(vars(args), file=read_config(args.config) if args.config else None)
        FrontLimits.from_settings(settings)  # refuse limits that make no sense before anything starts
        check_auth_setting(settings.auth, settings.host)
        check_s3_endpoint(settings.s3_endpoint)
    except ValueError as exc:
        print(f"silo: {exc}", file=sys.stderr)
        return 2
    log_format.configure(settings.log_level, settings.log_format)
    try:
        uvloop.run(run(settings))
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # A refusal to start (the sandbox cannot isolate, ...) is a line of the log like any other, so a
        # collector reading JSON lines gets it whole; its status tells a supervisor not to try again
        # (deploy/silo.service: RestartPreventExitStatus), since nothing changes until a person acts.
        if settings.log_format == "json":
            log.critical("%s", exc.code.removeprefix("silo: "))
        else:
            print(exc.code, file=sys.stderr)
        return REFUSED
    except Exception:
        log.critical("silo stopped on an internal error", exc_info=True)
        return 1
    return 0
