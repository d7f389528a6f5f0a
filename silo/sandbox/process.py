"""The development backend: each environment is a plain process. IT DOES NOT ISOLATE TENANTS.

It exists for machines where silo cannot run as root. Each environment still gets its own
directory and its own private `/tmp` (a bind mount in a mount namespace of its own: as root
directly, otherwise inside an unprivileged user namespace), so that per-tenant `/tmp` state behaves
as on Lambda. Processes, network, memory and the rest of the filesystem are shared with the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from silo.jail import syscalls
from silo.runtimes import catalog
from silo.sandbox.base import LaunchFailed, LaunchSpec, RuntimeUnstartable
from silo.sandbox.child import ChildWatch, RunningEnvironment

log = logging.getLogger(__name__)


def _private_tmp_setup(tmp_dir: str, keep: list[str], as_root: bool, uid: int, gid: int) -> Callable[[], None]:
    """Runs in the child between fork and exec: give it a mount namespace with `/tmp` bound to its own dir.

    Paths of `keep` that live under the host's /tmp (a data directory or an install there) are bound
    into the private /tmp at the same path first, or the new /tmp would hide them.
    """

    def setup() -> None:
        if as_root:
            syscalls.unshare(syscalls.CLONE_NEWNS)
        else:
            # An unprivileged user may create a mount namespace only inside a user namespace of its own,
            # where it maps itself to itself so that files keep their real owner.
            syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS)
            with open("/proc/self/setgroups", "w") as f:
                f.write("deny")
            with open("/proc/self/uid_map", "w") as f:
                f.write(f"{uid} {uid} 1")
            with open("/proc/self/gid_map", "w") as f:
                f.write(f"{gid} {gid} 1")
        # Private propagation first, or the bind below would leak back into the host's namespace.
        syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
        for path in keep:
            if path.startswith("/tmp/"):
                inner = tmp_dir + path[len("/tmp") :]
                os.makedirs(inner, exist_ok=True)
                syscalls.mount(path, inner, None, syscalls.MS_BIND)
        syscalls.mount(tmp_dir, "/tmp", None, syscalls.MS_BIND | syscalls.MS_REC)

    return setup


def _needed_paths(spec: LaunchSpec, runtime_dir: str) -> list[str]:
    """What the runtime must still see after the private /tmp covers the host's: code, runtime, interpreter."""
    paths = [str(spec.code_dir), runtime_dir, *([str(spec.sdk_dir)] if spec.sdk_dir is not None else [])]
    interpreter = catalog.interpreter_of(spec.runtime)
    if interpreter is not None:
        paths.append(str(interpreter.prefix))
    return paths


def _start(argv: list[str], custom: bool, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Popen, telling the function's fault from the platform's: a custom runtime's bootstrap that cannot
    be executed (no interpreter for its #! line, not an executable format) is the function's."""
    try:
        return subprocess.Popen(argv, **kwargs)
    except OSError as exc:
        # Popen names the program when exec itself failed (a failure before it, such as chdir, names another).
        if custom and exc.filename == argv[0]:
            raise RuntimeUnstartable(f"could not start the runtime {argv[0]}: {exc.strerror}") from exc
        raise


class PlainProcess(RunningEnvironment):
    """One running environment of the development backend."""

    def __init__(
        self, env_id: str, popen: subprocess.Popen[bytes], env_dir: Path, listen_sock: socket.socket, output_fd: int
    ) -> None:
        super().__init__(env_id, ChildWatch(popen), listen_sock, output_fd)
        self._env_dir = env_dir

    def memory_mb(self) -> float | None:
        return None  # no cgroup of its own to measure

    def max_memory_mb(self) -> int | None:
        return None

    def oom_killed(self) -> bool:
        return False

    def revalidate(self) -> None:
        """Nothing to check: this backend isolates nothing."""

    def kill(self) -> None:
        if self._child.exited.done():
            return
        # The runtime leads its own session, so its group holds whatever it started too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def cleanup(self) -> None:
        self.kill()
        await self.wait()
        self._close_handles()
        await asyncio.get_running_loop().run_in_executor(None, lambda: shutil.rmtree(self._env_dir, ignore_errors=True))


class ProcessSandbox:
    """Development backend: plain processes with a private /tmp each. Not an isolation boundary."""

    name = "process"
    isolates = False

    def __init__(self, env_root: Path) -> None:
        self._env_root = env_root
        self._env_root.mkdir(parents=True, exist_ok=True)
        self._as_root = os.geteuid() == 0

    def warm(self, runtimes: set[str]) -> None:
        """No templates: nothing to start ahead."""

    def ready(self) -> str | None:
        return None

    async def close(self) -> None:
        """Nothing runs besides the environments."""

    async def launch(self, spec: LaunchSpec) -> PlainProcess:
        if spec.opt_dir is not None:
            # Layers live at /opt, and an unisolated process sees the host's /opt: it cannot be shown
            # the function's. Refused rather than run without them.
            raise LaunchFailed(
                "the process backend cannot show a function's layers at /opt; run functions with layers in "
                "the jail or gvisor backend (silo serve --sandbox jail)"
            )
        env_dir = self._env_root / spec.env_id
        tmp_dir = env_dir / "tmp"
        tmp_dir.mkdir(parents=True)
        os.chmod(tmp_dir, 0o1777)
        listen_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        read_fd, write_fd = os.pipe()
        try:
            listen_sock.bind(("127.0.0.1", 0))
            listen_sock.listen(16)
            listen_sock.setblocking(False)
            host, port = listen_sock.getsockname()
            runtime_dir = str(catalog.builtin_runtime_dir(spec.runtime))
            extra = (
                {"NODE_PATH": catalog.node_path(spec.runtime, str(spec.code_dir))}
                if catalog.is_node(spec.runtime) and "NODE_PATH" not in spec.environ
                else {}
            )
            if spec.sdk_dir is not None and catalog.is_python(spec.runtime):
                # Not mounted at Lambda's path here: the runtime is told where the SDK is on the host.
                extra[catalog.SDK_VARIABLE] = str(spec.sdk_dir)
            environ = dict(
                spec.environ,
                **extra,
                **{name: f"http://{host}:{port}{path}" for name, path in spec.runtime_api_urls.items()},
                AWS_LAMBDA_RUNTIME_API=f"{host}:{port}",
                LAMBDA_TASK_ROOT=str(spec.code_dir),
                LAMBDA_RUNTIME_DIR=runtime_dir,
                PATH="/usr/local/bin:/usr/bin:/bin",
            )
            argv = catalog.launch_command(spec.runtime, str(spec.code_dir), runtime_dir, memory_mb=spec.memory_mb)
            popen = _start(
                argv,
                catalog.is_custom(spec.runtime),
                env=environ,
                cwd=spec.code_dir,
                stdin=subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_private_tmp_setup(
                    str(tmp_dir), _needed_paths(spec, runtime_dir), self._as_root, os.getuid(), os.getgid()
                ),
            )
        except BaseException:
            listen_sock.close()
            os.close(read_fd)
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        return PlainProcess(spec.env_id, popen, env_dir, listen_sock, read_fd)
