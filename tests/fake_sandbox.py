"""Backends for tests below the server: one that breaks on demand, the way a host breaks, and one whose
environments are measured, as the jail's are.

`BrokenHost` runs environments as the development backend does (real processes, silo's own runtime), and
while `failing` names one of the jail's steps every launch raises LaunchFailed as the jail does when that
step fails. Setting `failing` to None heals it.
"""

from __future__ import annotations

import socket
from pathlib import Path

from silo.sandbox.base import LaunchFailed, LaunchSpec, SandboxProcess
from silo.sandbox.process import ProcessSandbox


class BrokenHost:
    name = "broken-host"
    isolates = True  # it stands for the jail; what it runs is not isolated, which no test here needs

    def __init__(self, env_root: Path, failing: str | None = "join cgroups") -> None:
        self.failing = failing
        self.launches = 0
        self._real = ProcessSandbox(env_root)

    async def launch(self, spec: LaunchSpec) -> SandboxProcess:
        self.launches += 1
        if self.failing is not None:
            raise LaunchFailed(
                f"environment {spec.env_id}: error {self.failing}: [Errno 28] No space left on device: "
                f"'/sys/fs/cgroup/memory/silo/0/{spec.env_id}/tasks'"
            )
        return await self._real.launch(spec)

    def warm(self, runtimes: set[str]) -> None:
        """No templates: nothing to start ahead."""

    def ready(self) -> str | None:
        return None

    async def close(self) -> None:
        await self._real.close()


class MeasuredProcess:
    """An environment of the development backend that reports holding `mib`, as its cgroup would."""

    def __init__(self, process: SandboxProcess, mib: float) -> None:
        self._process = process
        self.mib = mib

    @property
    def env_id(self) -> str:
        return self._process.env_id

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def runtime_api_socket(self) -> socket.socket:
        return self._process.runtime_api_socket

    @property
    def runtime_api_connection(self) -> socket.socket | None:
        return self._process.runtime_api_connection

    @property
    def output_fd(self) -> int:
        return self._process.output_fd

    @property
    def exit_code(self) -> int | None:
        return self._process.exit_code

    @property
    def forked(self) -> bool:
        return self._process.forked

    def memory_mb(self) -> float | None:
        return self.mib

    def max_memory_mb(self) -> int | None:
        return int(self.mib) + 1

    def oom_killed(self) -> bool:
        return False

    def revalidate(self) -> None:
        self._process.revalidate()

    def freeze(self) -> None:
        self._process.freeze()

    def thaw(self) -> None:
        self._process.thaw()

    def divide_cpu(self, divisor: int) -> None:
        self._process.divide_cpu(divisor)

    async def wait(self) -> int:
        return await self._process.wait()

    def kill(self) -> None:
        self._process.kill()

    async def cleanup(self) -> None:
        await self._process.cleanup()


class MeasuredHost:
    """The development backend, its environments measured as the jail's are: each holds `mib` (an idle
    one's cgroup usage), so the router charges idle environments and stems what they hold."""

    name = "measured-host"
    isolates = True  # it stands for the jail; what it runs is not isolated, which no test here needs

    def __init__(self, env_root: Path, mib: float = 6.0) -> None:
        self.mib = mib
        self.launches = 0
        self._real = ProcessSandbox(env_root)

    async def launch(self, spec: LaunchSpec) -> SandboxProcess:
        self.launches += 1
        return MeasuredProcess(await self._real.launch(spec), self.mib)

    def warm(self, runtimes: set[str]) -> None:
        """No templates: nothing to start ahead."""

    def ready(self) -> str | None:
        return None

    async def close(self) -> None:
        await self._real.close()
