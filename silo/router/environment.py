"""One execution environment: a sandboxed runtime process, its Runtime API channel and its log stream.

An environment is bound to at most one tenant for its whole life and runs one invocation at a time.
A timeout, a crash or an init failure kills it; a dead environment is replaced, never repaired.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from silo import errors
from silo.credentials.vendor import CredentialVendor, EnvironmentCredentials
from silo.runtime_api import paths
from silo.runtime_api.server import RuntimeChannel, RuntimeReply
from silo.runtimes import catalog
from silo.sandbox.base import LaunchSpec, RuntimeUnstartable, Sandbox, SandboxProcess
from silo.telemetry import logs
from silo.telemetry.platform import Report, status_of
from silo.types import ColdStart, EnvKey, EnvState, FunctionError, FunctionSpec, Invocation, InvocationResult

if TYPE_CHECKING:
    from silo.telemetry.recorder import Telemetry

log = logging.getLogger(__name__)

# Lambda gives the init phase of an on-demand environment 10 seconds.
INIT_TIMEOUT_S = 10.0


def _error_payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type}).encode()


def runtime_environ(spec: FunctionSpec, stream: str) -> dict[str, str]:
    """The environment variables of the runtime process: the function's own, then Lambda's reserved ones."""
    environ = dict(spec.environment)
    environ.update(
        {
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
            "_HANDLER": spec.handler,
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_EXECUTION_ENV": catalog.execution_env_name(spec.runtime),
            "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            "AWS_LAMBDA_LOG_FORMAT": spec.log_format,
        }
    )
    if spec.log_format == "JSON" and spec.application_log_level:
        # Levels exist only with JSON logs, as on Lambda; the runtime filters its own records.
        environ["AWS_LAMBDA_LOG_LEVEL"] = spec.application_log_level
    return environ


def _check_bootstrap(code_dir: Path) -> None:
    """A custom runtime starts from an executable `bootstrap` at the root of its code, as on Lambda."""
    bootstrap = code_dir / "bootstrap"
    if not bootstrap.is_file():
        raise ValueError("Couldn't find valid bootstrap(s): [/var/task/bootstrap]")
    if not os.access(bootstrap, os.X_OK):
        raise ValueError("the bootstrap at the root of the code is not executable (chmod +x before zipping)")


def credential_variables(credentials: EnvironmentCredentials | None) -> tuple[dict[str, str], dict[str, str]]:
    """The variables that lead the runtime to its per-tenant credentials: values, and paths of its Runtime API
    (the backend makes URLs of them). Set at start, before any tenant (a stem is started for nobody): they
    name the environment, not the tenant, and the endpoint serves nothing until the environment is bound.
    The AWS variables only when there are AWS credentials: an SDK that finds them asks nowhere else."""
    if credentials is None:
        return {}, {}
    urls = {}
    if credentials.serves_aws:
        urls["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = paths.CREDENTIALS
    if credentials.serves_token:
        urls["SILO_TENANT_TOKEN_URI"] = paths.TENANT_TOKEN
    if credentials.serves_postgres:
        urls["SILO_POSTGRES_URI"] = paths.POSTGRES
    return {"AWS_CONTAINER_AUTHORIZATION_TOKEN": credentials.authorization}, urls


class TenantMismatch(errors.PlatformError):
    """An environment was asked to serve a tenant other than its own, or a bound stem to be bound again.
    Never the caller's doing: a fault of silo, caught before any tenant code saw the call."""


def _platform_failure(request_id: str) -> errors.PlatformError:
    # What the caller learns: the failure is silo's and the function did not run. The cause (paths of the
    # host, cgroups, other tenants) stays in the daemon's log.
    return errors.PlatformError(
        f"RequestId: {request_id} Error: silo could not provide an execution environment for this call, so "
        "the function did not run. This is a failure of the server, not of the function: retry the call; "
        "the server's log says which step failed."
    )


class _Expired(Exception):
    """The invocation's timeout passed before its runtime answered."""


class _ProcessEnded(Exception):
    """The environment's process ended before its runtime answered."""


class EndedBetweenCalls(Exception):
    """The environment's runtime ended after its previous call, before it took this one, so this call never
    ran and may run in another environment. Node.js runtimes end so after reporting an uncaught exception
    (as on Lambda): the answer is posted, the environment is frozen, and the exit comes once it is thawed."""


def _expire(reply: asyncio.Future[RuntimeReply]) -> None:
    if not reply.done():
        reply.set_exception(_Expired())


async def _first(*aws: asyncio.Future[Any], timeout: float) -> asyncio.Future[Any] | None:
    """The first of `aws` to finish, or None when `timeout` passes first. Leaves the others running."""
    done, _ = await asyncio.wait(aws, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for fut in aws:
        if fut in done:
            return fut
    return None


# The states of an environment bound to its tenant.
_BOUND = (EnvState.IDLE, EnvState.BUSY)

# Memory an environment holds beyond what its cgroup is charged (measured during development: each idle
# environment took 4.6 MiB off the host's available memory while its cgroup's usage was 2.7 MiB), and what
# the daemon holds for it while it is idle (its channel, stream and descriptors: 26 KiB each over 400 idle
# environments, measured from the daemon's resident memory).
UNCHARGED_MB = 1.9
DAEMON_IDLE_MB = 0.03


class Environment:
    """A live environment. The router decides who uses it; this class runs what it is given."""

    def __init__(
        self,
        key: EnvKey,
        spec: FunctionSpec,
        telemetry: Telemetry | None = None,
        *,
        stem: bool = False,
        on_exit: Callable[[Environment], None] | None = None,
        credentials: CredentialVendor | None = None,
        init_timeout_s: float = INIT_TIMEOUT_S,
    ) -> None:
        """`stem`: started ahead for no tenant, to be bound to the tenant whose first call takes it.
        `on_exit`: told when the runtime process has ended, whatever the environment was doing.
        `credentials`: where the per-tenant credentials of the function's Credentials setting come from.
        `init_timeout_s`: how long the init phase may take (Lambda's 10 s by default)."""
        self._on_exit = on_exit
        self.init_timeout_s = init_timeout_s
        self.id = uuid.uuid4().hex
        self.origin = ColdStart.STEM if stem else ColdStart.FULL
        # What the router counts against the host memory budget for this environment (see Router._charge).
        self.charged_mb: float = spec.memory_mb
        self._measured: tuple[float, float] | None = None
        self._telemetry = telemetry
        self.key = key
        self.spec = spec
        self.state = EnvState.STARTING
        self.retired = False
        self.last_used = time.monotonic()
        self.invocations = 0
        self._process: SandboxProcess | None = None
        self._channel = RuntimeChannel()
        self._credentials = credentials.for_environment(spec, self.id) if credentials is not None else None
        if self._credentials is not None:
            self._channel.credentials = self._credentials
            if key.tenant_id is not None:
                self._credentials.bind(key.tenant_id)
        self._stream: logs.LogStream | None = None
        self._exited: asyncio.Future[int] | None = None
        # The answer of the invocation in flight, failed with _ProcessEnded if the process ends first.
        self._reply: asyncio.Future[RuntimeReply] | None = None
        self._started_at = 0.0
        self._init_done_at = 0.0
        self._init_ms: float | None = None
        # Why the environment cannot serve: the function's fault (its bootstrap), or the platform's.
        self._launch_error: str | None = None
        self._platform_error: str | None = None
        # Whether the backend isolates it from other tenants and the host (the REPORT line says when not).
        self.isolated = True
        # Set when start() has finished, well or not: a stem may be bound while it is still launching.
        self._launched = asyncio.Event()
        self._starting = False
        self._cpu_divisor = 1

    # Small questions the router asks.
    def is_idle(self) -> bool:
        return self.state is EnvState.IDLE and not self.retired and self.alive

    def is_dead(self) -> bool:
        return self.state is EnvState.DEAD

    def idle_memory_mb(self) -> float:
        """What the environment holds now, measured at most every 5 s (idle, it does not grow); MemorySize
        if unmeasurable.

        Its cgroup does not see all of it: kernel objects (namespaces, page tables) and pages its first
        process copied before joining the group are charged elsewhere; `UNCHARGED_MB` stands for them."""
        now = time.monotonic()
        if self._measured is None or now - self._measured[0] > 5.0:
            used = self._process.memory_mb() if self._process is not None else None
            held = (
                self.spec.memory_mb if used is None else min(used + UNCHARGED_MB + DAEMON_IDLE_MB, self.spec.memory_mb)
            )
            # In 1/64 MiB: binary fractions add and subtract exactly, so the router's running total of
            # charges never drifts away from the sum of what it charged.
            self._measured = (now, math.ceil(held * 64) / 64)
        return self._measured[1]

    def is_unbound_stem(self) -> bool:
        return self.origin is ColdStart.STEM and self.state in (EnvState.STARTING, EnvState.STEM)

    @property
    def revision_id(self) -> str:
        return self.spec.revision_id

    async def start(self, sandbox: Sandbox) -> None:
        """Launch the runtime; init runs in the background and `invoke` waits for it."""
        self._starting = True
        try:
            if self.state is not EnvState.DEAD:  # killed before it began: nothing to launch
                await self._start(sandbox)
        finally:
            self._launched.set()

    async def _start(self, sandbox: Sandbox) -> None:
        self._started_at = time.monotonic()
        self.isolated = sandbox.isolates
        stream = logs.stream_name(self.spec.version)
        variables, urls = credential_variables(self._credentials)
        postgres, at_gateway = self._credentials.postgres_variables() if self._credentials else ({}, False)
        spec = LaunchSpec(
            env_id=self.id,
            runtime=self.spec.runtime,
            environ={**runtime_environ(self.spec, stream), **variables, **postgres},
            code_dir=self.spec.code_dir,
            memory_mb=self.spec.memory_mb,
            ephemeral_mb=self.spec.ephemeral_mb,
            network=self.spec.network,
            host_services=self.spec.host_services,
            runtime_api_urls=urls,
            host_address_variables=("PGHOST",) if at_gateway else (),
            opt_dir=self.spec.opt_dir,
        )
        try:
            if catalog.is_custom(self.spec.runtime):
                _check_bootstrap(self.spec.code_dir)
            if self.spec.sdk is not None:
                # Built at the first start of the runtime's environments (a second or so), off the event loop.
                loop = asyncio.get_running_loop()
                sdk_dir = await loop.run_in_executor(None, self.spec.sdk.directory, self.spec.runtime)
                spec = dataclasses.replace(spec, sdk_dir=sdk_dir)
            self._process = await sandbox.launch(spec)
        except (ValueError, RuntimeUnstartable) as exc:
            # The function's runtime could not even be started: a custom runtime without an executable bootstrap.
            self._launch_error = str(exc)
            self.state = EnvState.DEAD
            return
        except Exception as exc:
            # Everything else is the platform's (LaunchFailed names the jail's step that failed): the caller
            # gets silo's error, never the function's.
            self._platform_failed(f"could not be started by the {sandbox.name} backend: {exc}", exc)
            return
        if self._process.forked and self.origin is ColdStart.FULL:
            self.origin = ColdStart.FORK
        if self._cpu_divisor != 1:
            self._apply_cpu_divisor()
        if self._telemetry is not None:
            self._stream = self._telemetry.log_stream(stream, self._process.output_fd, self.spec, self.key.tenant_id)
            if self.origin is not ColdStart.STEM:
                # A stem becomes a tenant environment (what is metered) only when it is bound.
                self._telemetry.environment_created(self.id, self.spec, self.key.tenant_id)
        else:
            self._stream = logs.open_stream(stream, self._process.output_fd, self.spec, self.key.tenant_id)
        self._channel.on_output_flush = self._stream.answered
        await self._channel.start(self._process.runtime_api_socket, self._process.runtime_api_connection)
        self._exited = asyncio.ensure_future(self._process.wait())
        self._exited.add_done_callback(self._process_ended)
        if self._on_exit is not None:
            on_exit = self._on_exit
            self._exited.add_done_callback(lambda _: on_exit(self))

    async def prepare(self) -> bool:
        """A stem's init, ahead of any call: wait until the runtime asks for its first event.

        False when the stem is of no use (it failed to start, failed its init or did not finish it);
        the router then drops it, and the next call's own start reports what went wrong.
        """
        if self._exited is None:
            return False
        first = await _first(self._channel.initialized, self._exited, timeout=self.init_timeout_s)
        # A channel closed under it (the stem was retired as it grew) is a stem of no use, not an error.
        ok = first is not None and first is not self._exited and first.exception() is None and first.result() is None
        if self.state is not EnvState.STARTING:
            # Bound while it grew: its first call waits for the init itself and reports how it went.
            return ok
        if not ok:
            self.kill()
            return False
        self._init_ms = (time.monotonic() - self._started_at) * 1000
        self.state = EnvState.STEM
        self._freeze()
        return True

    def bind(self, key: EnvKey) -> None:
        """Give a stem to its tenant, for life; the runtime learns the tenant with its first event.

        Raises OSError when the backend says the stem, grown earlier, may no longer be used, and
        TenantMismatch, having ended the environment, when it is not an unbound stem of that version: an
        environment never changes tenant."""
        bound = self.origin is not ColdStart.STEM or self.key.tenant_id is not None or self.state in _BOUND
        if bound or (key.function_arn, key.version) != (self.key.function_arn, self.key.version):
            log.error(
                "TENANT ISOLATION CHECK FAILED: environment %s of %s (%s, tenant %r, %s) was to be bound to "
                "%s for tenant %r; it is not an unbound stem of that version, so it was ended",
                self.id,
                self.spec.function_name,
                self.key.version,
                self.key.tenant_id,
                self.state.value,
                key.version,
                key.tenant_id,
            )
            self.kill()
            if self._telemetry is not None:
                self._telemetry.platform_error(self.spec.function_name, "tenant_isolation")
            raise TenantMismatch(
                "silo refused to hand an execution environment to this call: an internal check of tenant "
                "isolation failed, so the function did not run. This is a fault of the server, not of the "
                "function; the server's log has the details."
            )
        if self._process is not None:
            self._process.revalidate()
        self.key = key
        self.state = EnvState.BUSY
        if self._credentials is not None and key.tenant_id is not None:
            self._credentials.bind(key.tenant_id)
        if self._stream is not None:
            self._stream.bind_tenant(key.tenant_id)
        if self._telemetry is not None:
            self._telemetry.environment_created(self.id, self.spec, key.tenant_id)

    async def invoke(self, inv: Invocation, hand_back: bool = False) -> InvocationResult:
        """Run one invocation to its end: an answer, a function error, a timeout or a crash.

        Raises PlatformError when silo cannot provide the environment (it could not be built, or be thawed),
        and TenantMismatch, having ended the environment, when `inv` is not of its tenant. With `hand_back`,
        raises EndedBetweenCalls, the environment dead, when its runtime had ended before it took `inv`."""
        if inv.tenant_id != self.key.tenant_id:
            self._refuse_tenant(inv)
        # The tenant's credentials before anything of the call: a call whose credentials cannot be had fails
        # here (CredentialsUnavailable), the function not run and the environment as it was.
        tenant_token = await self._credentials.prepare(inv.request_id) if self._credentials is not None else None
        postgres = self._credentials.postgres_login() if self._credentials is not None else None
        self.invocations += 1
        await self._launched.wait()
        self.last_used = time.monotonic()
        unusable = False
        if self._process is not None and self.origin is ColdStart.STEM and self.invocations == 1:
            # A stem bound while it was still launching skipped bind()'s check; make it now, once.
            try:
                self._process.revalidate()
            except OSError as exc:
                self._platform_failed(f"may no longer be used: {exc}", exc)  # close() still cleans it up
                unusable = True
        if not unusable and self._process is not None and not self._thawed():
            unusable = True
        if self._launch_error is None and (self._process is None or self._stream is None or self._exited is None):
            # Not the function's doing either: ended before its launch began, or a launch that raised.
            self._platform_error = self._platform_error or "was ended before it could serve"
        if self._platform_error is not None:
            raise _platform_failure(inv.request_id)
        if unusable or self._process is None or self._stream is None or self._exited is None:
            failed = InvocationResult(
                _error_payload(
                    "Runtime.InvalidEntrypoint",
                    f"RequestId: {inv.request_id} Error: could not start the runtime: {self._launch_error}",
                ),
                FunctionError.UNHANDLED,
                executed_version=self.spec.version,
                cold_start=ColdStart.FULL,
            )
            if self._telemetry is not None:
                self._telemetry.invocation_done(self.spec, self.key.tenant_id, failed)
            return failed
        # The first call of an environment pays its init: now (full start) or ahead of time (stem).
        cold = self.invocations == 1
        self._stream.begin(inv.request_id, inv.caller_key)
        t0 = time.monotonic()
        try:
            payload, error = await self._run(inv, tenant_token, hand_back, postgres)
        except EndedBetweenCalls:
            self._stream.platform(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z {inv.request_id} The runtime had exited "
                "after its previous call, before it took this one; the call runs in a new environment\n"
            )
            raise
        self._freeze()
        # Duration is the invoke phase only: from the event's hand-over (after init, when init ran in this
        # call) to the answer, as Lambda reports it apart from Init Duration.
        duration_ms = (time.monotonic() - max(t0, self._init_done_at)) * 1000
        report = Report(
            inv.request_id,
            duration_ms,
            self.spec.memory_mb,
            self._process.max_memory_mb(),
            self._init_ms if cold else None,
            status_of(error, self.state is EnvState.DEAD, payload),
            self.origin.value if cold and self.origin is not ColdStart.FULL else None,
            isolated=self.isolated,
        )
        record = self._stream.end(report)
        result = InvocationResult(
            payload,
            error,
            executed_version=self.spec.version,
            log_tail=logs.tail(record) if inv.want_log_tail else b"",
            cold_start=self.origin if cold else ColdStart.WARM,
            init_duration_ms=self._init_ms if cold else None,
            duration_ms=duration_ms,
        )
        if self._telemetry is not None:
            self._telemetry.invocation_done(self.spec, self.key.tenant_id, result)
        return result

    def _hand_back(self, hand_back: bool) -> None:
        """The process ended with `inv` submitted: when it never reached the runtime of an environment that
        served before, raise EndedBetweenCalls for the call to run elsewhere (the function never saw it)."""
        if hand_back and self.invocations > 1 and not self._channel.delivered:
            self.state = EnvState.DEAD
            raise EndedBetweenCalls(self.id)

    async def _run(
        self,
        inv: Invocation,
        tenant_token: str | None,
        hand_back: bool = False,
        postgres: tuple[str, str] | None = None,
    ) -> tuple[bytes, FunctionError | None]:
        assert self._exited is not None and self._stream is not None  # checked by invoke()
        if self._init_ms is None:
            first = await _first(self._channel.initialized, self._exited, timeout=self.init_timeout_s)
            if first is None:
                self.kill()
                return _error_payload(
                    "Runtime.InitTimeout",
                    f"RequestId: {inv.request_id} Error: init did not finish within {self.init_timeout_s:.0f} seconds",
                ), FunctionError.UNHANDLED
            self._init_done_at = time.monotonic()
            self._init_ms = (self._init_done_at - self._started_at) * 1000
            if first is self._exited:
                return self._exit_error(inv), FunctionError.UNHANDLED
            init_reply: RuntimeReply | None = first.result()
            if init_reply is not None:
                # The runtime reported a failed init; it is of no further use.
                self.kill()
                return init_reply.body, FunctionError.UNHANDLED
        deadline_ms = int(time.time() * 1000) + self.spec.timeout_s * 1000
        reply_fut = self._channel.submit(inv, deadline_ms, tenant_token, postgres)
        if self._exited.done():
            reply_fut.cancel()
            self._hand_back(hand_back)
            return self._exit_error(inv), FunctionError.UNHANDLED
        # The answer is awaited alone: the timeout and the process's end fail it (see _expire and
        # _process_ended). asyncio.wait over it and the exit would cost a waiter, a set and two callbacks
        # added and removed on every call, about three times what this costs.
        self._reply = reply_fut
        timer = asyncio.get_running_loop().call_later(self.spec.timeout_s, _expire, reply_fut)
        try:
            reply: RuntimeReply = await reply_fut
        except _Expired:
            self.kill()
            self._stream.platform(
                f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}Z {inv.request_id} "
                f"Task timed out after {self.spec.timeout_s:.2f} seconds\n"
            )
            return _error_payload(
                "Sandbox.Timedout",
                f"RequestId: {inv.request_id} Error: Task timed out after {self.spec.timeout_s:.2f} seconds",
            ), FunctionError.UNHANDLED
        except _ProcessEnded:
            self._hand_back(hand_back)
            return self._exit_error(inv), FunctionError.UNHANDLED
        finally:
            timer.cancel()
            self._reply = None
        if reply.kind == "response":
            return reply.body, None
        if reply.kind == "init_error":
            self.kill()
        return reply.body, FunctionError.UNHANDLED

    def divide_cpu(self, divisor: int) -> None:
        """Run at 1/`divisor` of the CPU weight of its MemorySize (its tenant's calls share one weight)."""
        if divisor == self._cpu_divisor:
            return
        self._cpu_divisor = divisor
        self._apply_cpu_divisor()

    def _apply_cpu_divisor(self) -> None:
        if self._process is None or not self.alive:
            return  # a launch still under way applies it when it is done
        try:
            self._process.divide_cpu(self._cpu_divisor)
        except OSError as exc:
            log.warning("the CPU weight of environment %s could not be changed: %s", self.id, exc)

    def _freeze(self) -> None:
        """Between calls nothing of the environment runs (as on Lambda): what a call left running, a thread or
        a process, gets no CPU it is not billed for. One that cannot be frozen is ended instead."""
        if self._process is None or not self.alive:
            return
        try:
            self._process.freeze()
        except OSError as exc:
            log.error("environment %s of %s could not be frozen (%s); ending it", self.id, self.spec.function_name, exc)
            self.kill()

    def _thawed(self) -> bool:
        assert self._process is not None
        try:
            self._process.thaw()
        except OSError as exc:
            self._platform_failed(f"could not be thawed: {exc}", exc)
            return False
        return True

    def _platform_failed(self, what: str, exc: BaseException) -> None:
        """silo, not the function, failed this environment: end it, and say in the log what failed."""
        self._platform_error = what
        self.kill()
        if self._telemetry is not None:
            self._telemetry.platform_error(self.spec.function_name, "environment")
        # An OSError names its step (LaunchFailed: the jail's); anything else is a bug, worth its traceback.
        log.error(
            "environment %s of %s %s",
            self.id,
            self.spec.function_name,
            what,
            exc_info=None if isinstance(exc, OSError) else exc,
        )

    def _refuse_tenant(self, inv: Invocation) -> None:
        self.kill()
        if self._telemetry is not None:
            self._telemetry.platform_error(self.spec.function_name, "tenant_isolation")
        log.error(
            "TENANT ISOLATION CHECK FAILED: environment %s of %s belongs to tenant %r and was handed request %s "
            "of tenant %r; the environment was ended and the call refused",
            self.id,
            self.spec.function_name,
            self.key.tenant_id,
            inv.request_id,
            inv.tenant_id,
        )
        raise TenantMismatch(
            f"RequestId: {inv.request_id} Error: silo refused to run this call: an internal check of tenant "
            "isolation failed, so the function did not run. This is a fault of the server, not of the function; "
            "the server's log has the details."
        )

    def _process_ended(self, _: asyncio.Future[int]) -> None:
        reply = self._reply
        if reply is not None and not reply.done():
            reply.set_exception(_ProcessEnded())

    def _exit_error(self, inv: Invocation) -> bytes:
        assert self._exited is not None and self._process is not None
        self.state = EnvState.DEAD
        code = self._exited.result()
        if self._process.oom_killed():
            return _error_payload(
                "Runtime.OutOfMemory",
                f"RequestId: {inv.request_id} Error: Runtime exited with error: signal: killed "
                f"(the function used more than its MemorySize of {self.spec.memory_mb} MB)",
            )
        reason = (
            f"Runtime exited with error: signal: {-code}"
            if code < 0
            else f"Runtime exited with error: exit status {code}"
            if code
            else "Runtime exited without providing a reason"
        )
        return _error_payload("Runtime.ExitError", f"RequestId: {inv.request_id} Error: {reason}")

    def kill(self) -> None:
        """Mark dead and kill the process; `close` finishes the clean-up."""
        self.state = EnvState.DEAD
        if self._process is not None:
            self._process.kill()

    @property
    def alive(self) -> bool:
        return self.state is not EnvState.DEAD and (self._exited is None or not self._exited.done())

    async def close(self) -> None:
        """Kill the environment and remove everything it left."""
        self.kill()
        if self._starting:
            # Killed while its launch was under way (a stem retired as it grew): the launch still ends,
            # with a process to clean up, or with nothing.
            await self._launched.wait()
            self.kill()
        if self._stream is not None:
            self._stream.close()
        await self._channel.close()
        if self._process is not None:
            await self._process.cleanup()
        if self._exited is not None and not self._exited.done():
            self._exited.cancel()
