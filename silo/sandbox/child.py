"""Watching a child process from the event loop without threads: a pidfd becomes readable when it exits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from typing import Protocol

from silo.jail.cgroups import Group


class ProcessWatch(Protocol):
    """The first process of an environment, as the daemon watches it: its own child (`ChildWatch`), or
    one a template forked for it (`silo.sandbox.template.ForkedChild`)."""

    exited: asyncio.Future[int]

    @property
    def pid(self) -> int: ...

    @property
    def exit_code(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None:
        """SIGKILL the process (and, for the daemon's own child, its process group) unless it has ended."""
        ...


class ExitWatch:
    """What every watch derives from `exited`, the future of the process's exit status."""

    exited: asyncio.Future[int]

    @property
    def exit_code(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self.exited)


class ChildWatch(ExitWatch):
    """Reaps one child as soon as it exits and resolves `exited` with its exit status."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pidfd = os.pidfd_open(popen.pid)
        asyncio.get_running_loop().add_reader(self._pidfd, self._reap)

    def _reap(self) -> None:
        pid, status = os.waitpid(self.popen.pid, os.WNOHANG)
        if pid == 0:
            return
        code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = code  # tells Popen it was reaped, so it does not warn later
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        if not self.exited.done():
            self.exited.set_result(code)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def kill(self) -> None:
        # Not once reaped: its pid (and so its group id) may belong to another process by now.
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)


class RunningEnvironment:
    """What every backend's running environment has: its id, its first process, the listening socket
    its Runtime API is served on, and the read end of its output. Backends add how to kill it, what to
    clean up and what to measure."""

    # Whether a template forked it (a "fork" cold start) rather than a runtime started from nothing.
    forked = False

    def __init__(self, env_id: str, child: ProcessWatch, listen_sock: socket.socket, output_fd: int) -> None:
        self._env_id = env_id
        self._child = child
        self._sock = listen_sock
        self._output_fd = output_fd
        # A Runtime API connection the environment made itself (silo's in-process runtime), if any.
        self.runtime_api_connection: socket.socket | None = None

    @property
    def env_id(self) -> str:
        return self._env_id

    @property
    def pid(self) -> int:
        return self._child.pid

    @property
    def runtime_api_socket(self) -> socket.socket:
        return self._sock

    @property
    def output_fd(self) -> int:
        return self._output_fd

    @property
    def exit_code(self) -> int | None:
        return self._child.exit_code

    async def wait(self) -> int:
        return await self._child.wait()

    def freeze(self) -> None:
        """Nothing to freeze with: only environments in cgroups of their own can be (CgroupedEnvironment)."""

    def thaw(self) -> None:
        """See `freeze`."""

    def divide_cpu(self, divisor: int) -> None:
        """No weights without a cpu cgroup of its own."""

    def _close_handles(self) -> None:
        self._sock.close()
        if self.runtime_api_connection is not None:
            self.runtime_api_connection.close()
        with contextlib.suppress(OSError):
            os.close(self._output_fd)


class CgroupedEnvironment(RunningEnvironment):
    """A running environment whose every process lives in cgroups of its own (the jail, gVisor): killed
    and measured through them, so nothing it forked, however it detached, escapes either."""

    def __init__(
        self, env_id: str, child: ProcessWatch, listen_sock: socket.socket, output_fd: int, groups: Group
    ) -> None:
        super().__init__(env_id, child, listen_sock, output_fd)
        self.cgroups = groups
        # Usage is read every few seconds at most, the peak on every call.
        self._usage = groups.usage_gauge()
        self._peak = groups.peak_gauge()
        self._freezer = groups.freezer()

    def freeze(self) -> None:
        self._freezer.freeze()

    def thaw(self) -> None:
        self._freezer.thaw()

    def divide_cpu(self, divisor: int) -> None:
        self.cgroups.divide_cpu(divisor)

    def kill(self) -> None:
        self.cgroups.kill_all()
        self._freezer.forget()
        self._child.kill()

    def memory_mb(self) -> float | None:
        return self._usage.mib()

    def max_memory_mb(self) -> int | None:
        # All of it counts: for gVisor, the Sentry's own memory too, since MemorySize bounds its whole cost.
        return self._peak.mb()

    def _close_handles(self) -> None:
        super()._close_handles()
        self._usage.close()
        self._peak.close()
        self._freezer.close()

    def oom_killed(self) -> bool:
        return self.cgroups.oom_killed()
