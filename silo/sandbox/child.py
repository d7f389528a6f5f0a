"""Watching a child process from the event loop without threads: a pidfd becomes readable when it exits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path

from silo.jail import cgroups


class ChildWatch:
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
    def exit_code(self) -> int | None:
        return self.exited.result() if self.exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self.exited)


class RunningEnvironment:
    """What every backend's running environment has: its id, its first process, the listening socket
    its Runtime API is served on, and the read end of its output. Backends add how to kill it, what to
    clean up and what to measure."""

    def __init__(self, env_id: str, child: ChildWatch, listen_sock: socket.socket, output_fd: int) -> None:
        self._env_id = env_id
        self._child = child
        self._sock = listen_sock
        self._output_fd = output_fd

    @property
    def env_id(self) -> str:
        return self._env_id

    @property
    def pid(self) -> int:
        return self._child.popen.pid

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

    def _close_handles(self) -> None:
        self._sock.close()
        with contextlib.suppress(OSError):
            os.close(self._output_fd)


class CgroupedEnvironment(RunningEnvironment):
    """A running environment whose every process lives in cgroups of its own (the jail, gVisor): killed
    and measured through them, so nothing it forked, however it detached, escapes either."""

    def __init__(
        self, env_id: str, child: ChildWatch, listen_sock: socket.socket, output_fd: int, groups: dict[str, Path]
    ) -> None:
        super().__init__(env_id, child, listen_sock, output_fd)
        self.cgroups = groups

    def kill(self) -> None:
        cgroups.kill_all(self.cgroups)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def memory_mb(self) -> int | None:
        return cgroups.memory_mb(self.cgroups)

    def max_memory_mb(self) -> int | None:
        # All of it counts: for gVisor, the Sentry's own memory too, since MemorySize bounds its whole cost.
        return cgroups.max_memory_mb(self.cgroups)

    def oom_killed(self) -> bool:
        return cgroups.oom_killed(self.cgroups)
