"""The interface every environment backend implements.

A backend turns a `LaunchSpec` into a running runtime process (`SandboxProcess`) that talks to silo
only through the Runtime API on the listening socket the backend hands back. The router and the api
never see more than this, so the jail, gVisor and the development backend plug in alike.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class SandboxUnavailable(Exception):
    """This machine cannot run the backend; the message says why and what to do."""


class LaunchFailed(OSError):
    """The platform could not build an environment (a cgroup, a namespace, a mount, the seccomp filter, a
    template): silo's failure, never the function's. The message names the step that failed."""


class RuntimeUnstartable(Exception):
    """The function's own runtime could not be started (its bootstrap cannot be executed): the function's
    fault, which its caller sees as `Runtime.InvalidEntrypoint`."""


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    """Everything a backend needs to start one environment.

    `environ` holds the function's variables and Lambda's reserved ones; the backend adds those that
    depend on where things are inside the environment (`LAMBDA_TASK_ROOT`, `LAMBDA_RUNTIME_DIR`,
    `AWS_LAMBDA_RUNTIME_API`, `PATH`) and chooses the runtime's argv. `runtime_api_urls` names variables
    to set to a URL of the environment's own Runtime API (the per-tenant credentials' endpoint): the
    backend sets each to `http://<the address it serves the Runtime API at><path>`.
    """

    env_id: str
    runtime: str
    environ: dict[str, str]
    code_dir: Path
    memory_mb: int
    ephemeral_mb: int
    network: str = "none"  # "none": loopback only; "outbound": may connect out, never to the host itself
    # "127.0.0.1:5432": ports of the host's loopback an outbound environment reaches at its gateway's address
    host_services: tuple[str, ...] = ()
    runtime_api_urls: dict[str, str] = field(default_factory=dict)  # variable -> path on the Runtime API
    # Variables (PGHOST) to set to the address at which the environment reaches its host_services: its
    # gateway's, when it has a network of its own; otherwise they keep their value in `environ`.
    host_address_variables: tuple[str, ...] = ()
    opt_dir: Path | None = None  # the function's layers merged in order, to be shown read-only at /opt
    # The Python runtime's boto3 and botocore (silo.store.sdk), to be shown read-only at Lambda's place of them
    sdk_dir: Path | None = None


class SandboxProcess(Protocol):
    """A started environment, as the daemon holds it."""

    @property
    def env_id(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def runtime_api_socket(self) -> socket.socket:
        """A listening socket; the daemon serves the environment's Runtime API on it."""
        ...

    @property
    def runtime_api_connection(self) -> socket.socket | None:
        """A connection the runtime already made to its Runtime API (silo's in-process runtime), if any."""
        ...

    @property
    def output_fd(self) -> int:
        """Read end of the environment's stdout and stderr, non-blocking."""
        ...

    @property
    def exit_code(self) -> int | None: ...

    @property
    def forked(self) -> bool:
        """Whether a template forked it (a "fork" cold start) rather than a runtime started from nothing."""
        ...

    def memory_mb(self) -> float | None:
        """Memory the environment holds now in MiB (not rounded), when the backend can measure it."""
        ...

    def max_memory_mb(self) -> int | None:
        """Peak memory of the environment so far, when the backend can measure it."""
        ...

    def oom_killed(self) -> bool:
        """Whether the kernel killed something of the environment for running out of memory."""
        ...

    def revalidate(self) -> None:
        """Raise OSError if the environment, started earlier, may no longer be handed to a call."""
        ...

    def freeze(self) -> None:
        """Stop every process of the environment until `thaw`: between calls nothing of it may run, as on
        Lambda. A backend that cannot freeze (the development one) does nothing."""
        ...

    def thaw(self) -> None:
        """Let a frozen environment run again, before its next call."""
        ...

    def divide_cpu(self, divisor: int) -> None:
        """Give the environment 1/`divisor` of the CPU weight its MemorySize gives: its tenant runs that many
        environments at once, which share one tenant's weight. Backends without weights do nothing."""
        ...

    async def wait(self) -> int:
        """Wait until the runtime process has exited; return its exit status (negative: killed by signal)."""
        ...

    def kill(self) -> None:
        """Kill everything of the environment at once. Safe to call many times."""
        ...

    async def cleanup(self) -> None:
        """After exit: remove what the environment left (its directory, descriptors, mounts)."""
        ...


class Sandbox(Protocol):
    """An environment backend."""

    name: str
    isolates: bool

    async def launch(self, spec: LaunchSpec) -> SandboxProcess:
        """Start an environment. Raises `RuntimeUnstartable` when the function's runtime cannot be started;
        anything else it raises (`LaunchFailed`, OSError, ...) is a failure of the platform."""
        ...

    def warm(self, runtimes: set[str]) -> None:
        """Start ahead, off any call's path, what environments of these runtimes start from (templates)."""
        ...

    def ready(self) -> str | None:
        """None once the backend starts environments as it will from now on (what `warm` asked for is up);
        else why not yet, for an operator. Answered from memory: the readiness probe asks it."""
        ...

    async def close(self) -> None:
        """Once every environment is gone: stop what the backend runs besides them (templates)."""
        ...
