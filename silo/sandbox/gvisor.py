"""The stronger backend: every environment in its own gVisor sandbox, a separate kernel per environment.

Each environment is one `runsc run` of an OCI bundle generated for it: a read-only root with the
same tree as the jail (silo.sandbox.layout), a tmpfs /tmp of EphemeralStorage, the environment's own
non-root uid, no capabilities, no_new_privs, loopback-only networking and silo's seccomp policy, all
inside gVisor's kernel (the Sentry), which itself runs on the host under gVisor's own seccomp filter.
The daemon creates the environment's cgroups (the jail's, so limits and accounting are the same) and
runsc places the whole sandbox in them: Sentry, gofer and the ptrace stubs that run the tenant's code.

The Runtime API: gVisor's network stack is not the host's, so the daemon listens on a unix socket
file bound into the sandbox (runsc `--host-uds=open` lets sandboxed code connect to it), and
`silo/runtimes/relay.py`, pid 1 of the sandbox, listens on 127.0.0.1:9001 and relays each connection.

Tearing a sandbox down takes runsc over a second, so `cleanup` runs it in the executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from silo.jail import cgroups
from silo.jail.cgroups import CgroupUnavailable, Group, Limits
from silo.runtimes import catalog
from silo.sandbox import identity
from silo.sandbox.base import LaunchFailed, LaunchSpec, SandboxUnavailable
from silo.sandbox.child import CgroupedEnvironment, ChildWatch
from silo.sandbox.identity import UidPool
from silo.sandbox.layout import RUNTIME_API_PORT, TASK_ROOT, USR_LINKS, RuntimeLayout, etc_files, runtime_layout

log = logging.getLogger(__name__)

RELAY_SOURCE = Path(catalog.__file__).resolve().parent / "relay.py"
# Where the relay and the daemon's Runtime API socket appear inside.
SILO_DIR = "/var/silo"
UDS_DIR = f"{SILO_DIR}/uds"
UDS_NAME = "api.sock"
# The ptrace platform: KVM is not usable on the machines silo targets. The sandbox gets no network
# device at all, only its own loopback, and may connect to host unix sockets bound into it (the
# Runtime API's) but never create one on the host.
#
# Every mount is read-only to the sandbox and its host side does not change while the environment
# lives (code trees are content-addressed), so gVisor may cache what it looked up instead of asking
# the gofer again on every access: that takes a third off the runtime's start.
RUNSC_FLAGS = (
    "--platform=ptrace",
    "--network=none",
    "--rootless=false",
    "--host-uds=open",
    "--file-access-mounts=exclusive",
)
# Lambda allows 1,024 processes and threads and 1,024 open files per environment. Inside gVisor they
# are the Sentry's tasks, so RLIMIT_NPROC (per uid, and the uid is the environment's own) caps them.
NPROC = 1024
NOFILE = 1024
# Host tasks of one sandbox: Sentry and gofer threads plus a ptrace stub per tenant thread.
HOST_PIDS_MAX = 4096
# A unix socket's path must fit in sun_path (108 bytes), and runsc's gofer connects by host path.
SUN_PATH_MAX = 107
RUNSC_TIMEOUT_S = 30.0
# A uid range of its own, right after the jail's: no jailed process on the host ever shares a uid
# with the owner of a gVisor environment's Runtime API socket.
# The environments' cgroups, apart from the jail's: the jail's start-up sweep empties its own parent.
CGROUP_PARENT = "silo-gvisor"


def runsc_binary() -> str | None:
    """The runsc on PATH (Debian's `runsc` package), or None."""
    return shutil.which("runsc")


def _exit_status(code: int) -> int:
    # `runsc run` exits with 128+N when the sandbox's init died of signal N, as a shell reports it.
    return -(code - 128) if 128 < code < 128 + 65 else code


class GvisorProcess(CgroupedEnvironment):
    """One running gVisor environment, as the daemon holds it."""

    def __init__(
        self,
        env_id: str,
        child: ChildWatch,
        bundle: Path,
        groups: Group,
        listen_sock: socket.socket,
        output_fd: int,
        teardown: Callable[[str, Group, Path], bool],
        release_uid: Callable[[], None],
    ) -> None:
        super().__init__(env_id, child, listen_sock, output_fd, groups)
        self._bundle = bundle
        self._teardown = teardown
        self._release_uid = release_uid

    @property
    def exit_code(self) -> int | None:
        code = self._child.exit_code
        return None if code is None else _exit_status(code)

    async def wait(self) -> int:
        return _exit_status(await self._child.wait())

    def revalidate(self) -> None:
        """Nothing to check: a gVisor environment has no network beyond its loopback."""

    async def cleanup(self) -> None:
        self.kill()
        await self.wait()
        self._close_handles()
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, self._teardown, self._env_id, self.cgroups, self._bundle):
            # Only now is nothing left running as this uid, so another environment may have it.
            self._release_uid()
        else:
            log.error("environment %s: its sandbox could not be removed; its uid stays reserved", self._env_id)


class GvisorSandbox:
    """Stronger backend: a gVisor sandbox (separate kernel) per environment. Needs root, runsc, cgroups."""

    name = "gvisor"
    isolates = True

    def __init__(
        self, root: Path, seccomp_filter: bytes = b"", runsc: str | None = None, cgroup_base: str = ""
    ) -> None:
        """`root` holds runsc's state and the environments' bundles; it belongs to this server alone."""
        if not seccomp_filter:
            # Never a step to skip: the relay installs it before the runtime starts, inside gVisor's kernel.
            raise SandboxUnavailable(
                "the gvisor backend was given an empty seccomp filter, and environments never run without one; "
                "the policy (silo/jail/seccomp_policy.json) must compile to a filter"
            )
        runsc = runsc or runsc_binary()
        if runsc is None:
            raise SandboxUnavailable("the gvisor backend needs runsc on PATH (Debian: apt-get install runsc)")
        if os.geteuid() != 0:
            raise SandboxUnavailable("the gvisor backend needs root (runsc creates namespaces and cgroups)")
        try:
            # runsc joins the groups the daemon made and, not having made them, neither changes their limits
            # nor removes them when the sandbox ends, so its peak memory and OOM count can still be read.
            self._hierarchy = cgroups.open_hierarchy(CGROUP_PARENT, base=cgroup_base)
        except (CgroupUnavailable, OSError) as exc:
            raise SandboxUnavailable(f"the gvisor backend cannot use this host's cgroups: {exc}") from exc
        self._runsc = runsc
        self._root = root.resolve()
        self._state = self._root / "state"
        self._envs = self._root / "envs"
        longest = self._socket_path("0" * 32)
        if len(str(longest)) > SUN_PATH_MAX:
            raise SandboxUnavailable(
                f"the gvisor backend keeps unix sockets under {self._envs}, a path too long for a socket "
                f"({len(str(longest))} > {SUN_PATH_MAX} bytes); choose a shorter data directory"
            )
        self._filter_hex = seccomp_filter.hex()
        # A uid range of this daemon's own, apart from its jail's: a slot of its own (see silo.sandbox.identity).
        self._uids = UidPool(base=identity.claim(self._root).uid_base)
        self._sweep()

    def _command(self, *args: str) -> list[str]:
        return [self._runsc, f"--root={self._state}", *RUNSC_FLAGS, *args]

    def _socket_path(self, env_id: str) -> Path:
        return self._envs / env_id / "uds" / UDS_NAME

    def _sweep(self) -> None:
        """Remove what a previous run of this server left: its sandboxes, their cgroups and bundles."""
        if self._state.is_dir():
            listed = subprocess.run(
                self._command("list", "--quiet"), capture_output=True, text=True, timeout=RUNSC_TIMEOUT_S
            )
            for container in listed.stdout.split():
                log.info("removing gVisor sandbox %s left by a previous run", container)
                self._teardown(container, self._hierarchy.group(container), self._envs / container)
        if self._envs.is_dir():
            for bundle in self._envs.iterdir():
                self._teardown(bundle.name, self._hierarchy.group(bundle.name), bundle)
        shutil.rmtree(self._root, ignore_errors=True)
        self._state.mkdir(parents=True, mode=0o700)
        self._envs.mkdir(mode=0o700)

    def _teardown(self, container: str, groups: Group, bundle: Path) -> bool:
        """Blocking: delete the sandbox, its cgroups and its bundle; True when nothing of it is left."""
        groups.kill_all()
        try:
            # Kills what still runs and removes runsc's own record; fails harmlessly when `runsc run` did it.
            subprocess.run(
                self._command("delete", "--force", container),
                capture_output=True,
                timeout=RUNSC_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.error("runsc delete of %s did not finish within %.0f s", container, RUNSC_TIMEOUT_S)
        removed = groups.remove()
        shutil.rmtree(bundle, ignore_errors=True)
        return removed

    def _relay_python(self, layout: RuntimeLayout) -> str:
        """The interpreter that runs the relay: the runtime's own, or for a custom runtime the host's python3."""
        if layout.python is not None:
            return layout.python
        for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.access(candidate, os.X_OK):
                return candidate
        raise LaunchFailed("the gvisor backend runs custom runtimes with a relay that needs python3 under /usr")

    def _rootfs(self, rootfs: Path, layout: RuntimeLayout, uid: int) -> None:
        """The sandbox's root: mount points for every bind, the merged-/usr links and the /etc files."""
        for name in USR_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                (rootfs / name).symlink_to(os.readlink(host))
        for target in ("proc", "tmp", "dev", "sys", UDS_DIR.lstrip("/")):
            (rootfs / target).mkdir(parents=True, exist_ok=True)
        mount_points = [(b.source, b.target) for b in layout.binds]
        mount_points.append((str(RELAY_SOURCE), f"{SILO_DIR}/relay.py"))
        for source, target in mount_points:
            point = rootfs / target.lstrip("/")
            if os.path.isdir(source):
                point.mkdir(parents=True, exist_ok=True)
            else:
                point.parent.mkdir(parents=True, exist_ok=True)
                point.touch()
        etc = rootfs / "etc"
        etc.mkdir(exist_ok=True)
        for name, content in etc_files(uid, uid).items():
            (etc / name).write_text(content)

    def _config(self, spec: LaunchSpec, layout: RuntimeLayout, uid: int, bundle: Path, groups: Group) -> dict[str, Any]:
        """The OCI runtime configuration of one environment."""
        limits = groups.limits
        ro = ["rbind", "ro", "nosuid", "nodev"]
        mounts: list[dict[str, Any]] = [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {
                "destination": "/tmp",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", f"size={spec.ephemeral_mb}m", "mode=1777"],
            },
        ]
        for bind in layout.binds:
            options = ["rbind", "rw", "nosuid", "nodev"] if bind.writable else ro
            mounts.append({"destination": bind.target, "type": "bind", "source": bind.source, "options": options})
        mounts += [
            {"destination": f"{SILO_DIR}/relay.py", "type": "bind", "source": str(RELAY_SOURCE), "options": ro},
            {"destination": UDS_DIR, "type": "bind", "source": str(bundle / "uds"), "options": ro},
        ]
        # The relay's own environment carries nothing of the function: the runtime's comes on stdin.
        relay_env = (
            [f"LD_LIBRARY_PATH={layout.environ['LD_LIBRARY_PATH']}"] if "LD_LIBRARY_PATH" in layout.environ else []
        )
        no_caps: list[str] = []
        return {
            "ociVersion": "1.0.0",
            "process": {
                "user": {"uid": uid, "gid": uid},
                # -S: no site module, whose scan of site-packages costs the relay 150 ms under gVisor.
                "args": [self._relay_python(layout), "-s", "-S", "-B", f"{SILO_DIR}/relay.py"],
                "env": relay_env,
                "cwd": "/",
                "capabilities": {k: no_caps for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
                "noNewPrivileges": True,
                "rlimits": [
                    {"type": "RLIMIT_NPROC", "hard": NPROC, "soft": NPROC},
                    {"type": "RLIMIT_NOFILE", "hard": NOFILE, "soft": NOFILE},
                ],
            },
            "root": {"path": "rootfs", "readonly": True},
            "hostname": "silo",
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                # The groups the daemon made: runsc joins them and leaves them to us.
                "cgroupsPath": groups.runsc_path(),
                "resources": {
                    # Already in the groups; runsc reads the memory limit to size the
                    # sandbox's kernel, which reports it as its total memory.
                    "memory": {"limit": limits.memory_bytes, "swap": limits.memory_bytes},
                    "pids": {"limit": HOST_PIDS_MAX},
                    "cpu": {"shares": limits.cpu_shares},
                },
            },
        }

    def _api_socket(self, path: Path, uid: int) -> socket.socket:
        """The daemon's end of the Runtime API: a listening unix socket only the environment's uid may use."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chown(path, uid, uid)
            os.chmod(path, 0o600)
            sock.listen(16)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def warm(self, runtimes: set[str]) -> None:
        """No templates: nothing to start ahead."""

    def ready(self) -> str | None:
        return None

    async def close(self) -> None:
        """Nothing runs besides the environments."""

    async def launch(self, spec: LaunchSpec) -> GvisorProcess:
        """Start the environment's sandbox; the runtime's first GET /next says it is ready."""
        if spec.network != "none":
            # runsc runs with --network=none: the sandbox has no device that could reach out.
            raise LaunchFailed(
                f"the gvisor backend offers loopback only, not Network {spec.network!r}; "
                "set the function's Network to none or its Sandbox to jail"
            )
        layout = runtime_layout(spec)
        uid = self._uids.take()
        bundle = self._envs / spec.env_id
        groups: Group | None = None
        opened: list[int] = []
        sock: socket.socket | None = None
        child: ChildWatch | None = None
        try:
            (bundle / "rootfs").mkdir(parents=True)
            (bundle / "uds").mkdir()
            # The gofer (root) opens the socket's directory; the environment's uid connects to it.
            os.chown(bundle / "uds", uid, uid)
            self._rootfs(bundle / "rootfs", layout, uid)
            groups = self._hierarchy.create(spec.env_id, Limits(spec.memory_mb), pids_max=HOST_PIDS_MAX)
            (bundle / "config.json").write_text(json.dumps(self._config(spec, layout, uid, bundle, groups)))
            sock = self._api_socket(self._socket_path(spec.env_id), uid)
            doc = json.dumps(
                {
                    "argv": layout.argv,
                    "environ": layout.environ,
                    "cwd": TASK_ROOT,
                    "port": RUNTIME_API_PORT,
                    "upstream": f"{UDS_DIR}/{UDS_NAME}",
                    "seccomp_filter": self._filter_hex,
                }
            ).encode()
            if len(doc) > 60_000:
                raise LaunchFailed(f"the environment's description is too large ({len(doc)} bytes)")
            spec_r, spec_w = os.pipe()
            opened += [spec_r, spec_w]
            # Fits in the pipe's buffer (checked above), so this cannot block.
            os.write(spec_w, doc)
            os.close(spec_w)
            opened.remove(spec_w)
            out_r, out_w = os.pipe()
            opened += [out_r, out_w]
            popen = subprocess.Popen(
                self._command(f"--log={bundle / 'runsc.log'}", "run", f"--bundle={bundle}", spec.env_id),
                stdin=spec_r,
                stdout=out_w,
                stderr=out_w,
                start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
            child = ChildWatch(popen)
            for fd in (spec_r, out_w):
                os.close(fd)
                opened.remove(fd)
        except BaseException:
            if child is not None and not child.exited.done():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.popen.pid, signal.SIGKILL)
                await child.wait()
            if sock is not None:
                sock.close()
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
            loop = asyncio.get_running_loop()
            # Whatever got made so far: runsc's record, the cgroups (made or not), the bundle.
            made = groups or self._hierarchy.group(spec.env_id)
            if await loop.run_in_executor(None, self._teardown, spec.env_id, made, bundle):
                self._uids.give_back(uid)
            raise
        os.set_blocking(out_r, False)
        return GvisorProcess(
            spec.env_id, child, bundle, groups, sock, out_r, self._teardown, lambda: self._uids.give_back(uid)
        )
