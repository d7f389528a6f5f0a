"""The default backend: every environment in its own jail (namespaces, cgroups, read-only root, own uid, seccomp).

The daemon prepares what needs no privilege inside the environment (its cgroups with their limits,
its uid, the list of read-only binds) and starts `silo.jail.enter`, which applies the jail's steps in
order and execs the runtime. The environment's Runtime API socket comes back over a control socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from silo.jail import cgroups
from silo.jail.cgroups import CgroupUnavailable, Group
from silo.jail.netlink import NetworkUnavailable
from silo.jail.network import Lease, OutboundNetwork, resolv_conf
from silo.jail.spec import JailSpec
from silo.jail.template import HONOURED_PYTHON_VARIABLES
from silo.runtimes import catalog
from silo.sandbox import identity
from silo.sandbox.base import LaunchFailed, LaunchSpec, SandboxUnavailable
from silo.sandbox.child import CgroupedEnvironment, ChildWatch, ProcessWatch
from silo.sandbox.identity import UidPool
from silo.sandbox.layout import RUNTIME_API_PORT, TASK_ROOT, etc_files, lang_prefix, runtime_layout
from silo.sandbox.spares import SpareGroups
from silo.sandbox.template import DEFAULT_MAX_FORKS, ForkedChild, TemplateCommand, Templates, TemplateUnavailable

log = logging.getLogger(__name__)

# Building a jail is the platform's work, not the function's init (which has its own 10 s). It is
# usually milliseconds, but creating a network namespace waits on the kernel while it tears down many
# others (after hundreds of environments end at once), which has taken longer than 10 s under load.
READY_TIMEOUT_S = 30.0
# The jail runs without the site module (isolated, -S): site-packages and their .pth files cost tens of
# milliseconds of every start, and the jail needs only silo's own package, found where this one is.
SILO_ROOT = str(Path(__file__).resolve().parents[2])
JAIL_ENTRY = f"import sys; sys.path.insert(0, {SILO_ROOT!r}); from silo.jail.enter import main; main()"
TEMPLATE_ENTRY = f"import sys; sys.path.insert(0, {SILO_ROOT!r}); from silo.jail.template import main; main()"
# The template of custom runtimes: it only jails and execs the function's bootstrap.
EXEC_TEMPLATE = "exec"
# The jail's code runs in the template's interpreter; it needs 3.9 (pidfd_open, send_fds, waitstatus).
TEMPLATE_MIN_PYTHON = (3, 9)


def template_key(spec: LaunchSpec) -> str | None:
    """Which template may fork an environment of `spec`; None when only a start from nothing is faithful.

    A custom runtime execs its bootstrap, so any template that jails will do; so does Node.js, whose
    process is never forked (a forked V8 is not safe to run): the template forks only the jail, which
    then execs a fresh node, a plain start of the runtime. silo's Python runtime runs
    in the template's interpreter, which has already started: variables that change how an interpreter
    starts (PYTHON*, beyond the ones the fork honours) or how libraries load (LD_*) need a fresh one, and
    so do layers with shared libraries in /opt/lib: the dynamic loader reads LD_LIBRARY_PATH once, when a
    process starts, so a forked interpreter would never find them."""
    if _execs(spec.runtime):
        return EXEC_TEMPLATE
    if spec.opt_dir is not None and (spec.opt_dir / "lib").is_dir():
        return None
    for name in spec.environ:
        if name.startswith("LD_") or (name.startswith("PYTHON") and name not in HONOURED_PYTHON_VARIABLES):
            return None
    return spec.runtime


def _execs(runtime: str) -> bool:
    """True when the jail execs the runtime (a custom runtime's bootstrap, node) instead of running it in-process."""
    return catalog.is_custom(runtime) or catalog.is_node(runtime)


def template_command(key: str) -> TemplateCommand | None:
    if key == EXEC_TEMPLATE:
        return TemplateCommand([sys.executable, "-S", "-B", "-c", TEMPLATE_ENTRY])
    interpreter = catalog.python_interpreters().get(key)
    if interpreter is None:
        return None
    version = tuple(int(n) for n in key.removeprefix("python").split("."))
    if version < TEMPLATE_MIN_PYTHON:
        log.info("%s environments start from nothing: templates need Python 3.9 or later", key)
        return None
    return TemplateCommand(
        [str(interpreter.executable), "-S", "-B", "-c", TEMPLATE_ENTRY],
        runtime_dir=str(catalog.BUILTIN_PYTHON_BOOTSTRAP.parent),
        lang_prefix=lang_prefix(interpreter),
    )


def _host_resolv() -> str:
    try:
        return resolv_conf(Path("/etc/resolv.conf").read_text())
    except OSError:
        return ""


class JailedProcess(CgroupedEnvironment):
    """One running jailed environment, as the daemon holds it."""

    def __init__(
        self,
        env_id: str,
        child: ProcessWatch,
        env_dir: Path,
        groups: Group,
        listen_sock: socket.socket,
        output_fd: int,
        release_uid: Callable[[], None],
        give_back_groups: Callable[[Group], Awaitable[bool]],
        release_network: Callable[[], None] = lambda: None,
        check_network: Callable[[], None] = lambda: None,
    ) -> None:
        """`give_back_groups`: takes the groups once the environment is gone; True when nothing runs in them."""
        super().__init__(env_id, child, listen_sock, output_fd, groups)
        self._env_dir = env_dir
        self._release_uid = release_uid
        self._give_back_groups = give_back_groups
        self._release_network = release_network
        self._check_network = check_network

    def revalidate(self) -> None:
        """Before a stem grown earlier is bound: its outbound network's firewall must still be in place
        (something may have flushed it since); reloads it, or raises if it cannot."""
        try:
            self._check_network()
        except NetworkUnavailable as exc:
            raise LaunchFailed(str(exc)) from exc

    async def cleanup(self) -> None:
        self.kill()
        await self.wait()
        self._close_handles()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._release_network)
        except NetworkUnavailable as exc:
            log.error("environment %s: %s; its address stays reserved", self._env_id, exc)
        if await self._give_back_groups(self.cgroups):
            # Only now is nothing left running as this uid, so another environment may have it.
            self._release_uid()
        else:
            log.error("environment %s: its cgroups could not be emptied; its uid stays reserved", self._env_id)
        await loop.run_in_executor(None, lambda: shutil.rmtree(self._env_dir, ignore_errors=True))


class JailSandbox:
    """Default backend: real kernel isolation for every environment. Needs root and cgroups (v1 or v2)."""

    name = "jail"
    isolates = True

    def __init__(
        self,
        env_root: Path,
        seccomp_filter: bytes = b"",
        network_pool: str | None = None,
        template_max_forks: int = DEFAULT_MAX_FORKS,
        cgroup_base: str = "",
    ) -> None:
        """`template_max_forks`: environments one template forks before it is replaced; 0: no templates.
        `cgroup_base`: on cgroup v2, the group to make the environments' groups under (see cgroup_v2)."""
        if not seccomp_filter:
            # Never a step to skip: without it, tenant code reaches the whole kernel surface.
            raise SandboxUnavailable(
                "the jail backend was given an empty seccomp filter, and environments never run without one; "
                "the policy (silo/jail/seccomp_policy.json) must compile to a filter"
            )
        if os.geteuid() != 0:
            raise SandboxUnavailable(
                "the jail backend needs root (namespaces, cgroups, mounts); run silo as root, or choose "
                "--sandbox process for development without isolation"
            )
        self._env_root = env_root
        self._filter_hex = seccomp_filter.hex()
        # Everything host-wide this daemon makes is named for its slot on the host, so that daemons sharing
        # a host (several data directories, tests) never sweep or reuse each other's cgroups, uids or links.
        self._identity = identity.claim(env_root)
        instance = self._identity.instance
        try:
            self._hierarchy = cgroups.open_hierarchy(f"{cgroups.PARENT}/{instance}", base=cgroup_base)
        except (CgroupUnavailable, OSError) as exc:
            identity.release(self._identity)
            raise SandboxUnavailable(f"the jail backend cannot use this host's cgroups: {exc}") from exc
        self._uids = UidPool(base=self._identity.uid_base)
        self._network = OutboundNetwork(network_pool, instance, locks=identity.REGISTRY_DIR / "network")
        self._templates = Templates(template_command, template_max_forks) if template_max_forks > 0 else None
        self._spares = SpareGroups(self._hierarchy)
        self._sweep()
        self._hierarchy.anchor()
        log.info("environments' cgroups: %s", self._hierarchy.describe())

    def _sweep(self) -> None:
        """Remove what a previous run of the daemon left: its environments died with it, their groups did not."""
        for group in self._hierarchy.leftovers():
            group.remove(timeout_s=2)
        shutil.rmtree(self._env_root, ignore_errors=True)
        self._env_root.mkdir(parents=True, exist_ok=True)
        try:
            self._network.sweep()
        except NetworkUnavailable as exc:
            log.error("could not remove the network a previous run left: %s", exc)

    async def launch(self, spec: LaunchSpec) -> JailedProcess:
        layout = runtime_layout(spec)
        uid = self._uids.take()
        env_dir = self._env_root / spec.env_id
        root_dir = env_dir / "root"
        groups: Group | None = None
        child: ProcessWatch | None = None
        key = template_key(spec) if self._templates is not None else None
        template = self._templates.ready(key) if self._templates is not None and key is not None else None
        opened: list[int] = []
        socks: list[socket.socket] = []
        lease: Lease | None = None
        loop = asyncio.get_running_loop()
        try:
            if spec.network == "outbound":
                lease = await self._lease_network(spec.env_id)
            root_dir.mkdir(parents=True)
            groups = self._spares.take(spec.memory_mb, spec.env_id)
            jail = JailSpec(
                env_id=spec.env_id,
                argv=layout.argv,
                environ={**layout.environ, **dict.fromkeys(spec.host_address_variables, lease.gateway)}
                if lease
                else layout.environ,
                uid=uid,
                gid=uid,
                root_dir=str(root_dir),
                binds=layout.binds,
                tmp_mb=spec.ephemeral_mb,
                cgroups=groups.join_paths(),
                cwd=TASK_ROOT,
                runtime_api_port=RUNTIME_API_PORT,
                seccomp_filter=self._filter_hex,
                etc_files=etc_files(uid, uid, _host_resolv() if lease else ""),
                address=lease.address if lease else "",
                gateway=lease.gateway if lease else "",
                in_process=template is not None and key != EXEC_TEMPLATE,
            )
            spec_r, spec_w = os.pipe()
            opened += [spec_r, spec_w]
            out_r, out_w = os.pipe()
            opened += [out_r, out_w]
            control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            socks += [control, control_child]
            data = jail.encode()
            if len(data) > 60_000:
                raise LaunchFailed(f"the environment's description is too large ({len(data)} bytes)")
            os.write(spec_w, data)
            os.close(spec_w)
            opened.remove(spec_w)
            if template is not None:
                try:
                    child = await template.fork(spec_r, control_child.fileno(), out_w)
                except TemplateUnavailable as exc:
                    log.warning("environment %s starts from nothing: %s", spec.env_id, exc)
            if child is None:
                popen = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", JAIL_ENTRY, str(spec_r), str(control_child.fileno())],
                    stdin=subprocess.DEVNULL,
                    stdout=out_w,
                    stderr=out_w,
                    pass_fds=(spec_r, control_child.fileno()),
                    start_new_session=True,
                    env={},
                )
                child = ChildWatch(popen)
            for fd in (spec_r, out_w):
                os.close(fd)
                opened.remove(fd)
            control_child.close()
            socks.remove(control_child)
            if lease is not None:
                await self._build_network(control, child, spec.env_id, lease, spec.host_services)
            listen_sock, connection = await self._await_ready(control, child, spec.env_id)
        except BaseException:
            # Its groups first: a forked environment's pid 1 outlives the process it was forked for.
            if groups is not None:
                groups.kill_all()
            if child is not None and not child.exited.done():
                child.kill()
                await child.wait()
            if groups is not None:
                await loop.run_in_executor(None, groups.remove)
            if lease is not None:
                with contextlib.suppress(NetworkUnavailable):
                    await loop.run_in_executor(None, self._network.release, lease)
            self._uids.give_back(uid)
            for fd in opened:
                with contextlib.suppress(OSError):
                    os.close(fd)
            for s in socks:
                s.close()
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
        control.close()
        os.set_blocking(out_r, False)
        network = self._network
        process = JailedProcess(
            spec.env_id,
            child,
            env_dir,
            groups,
            listen_sock,
            out_r,
            lambda: self._uids.give_back(uid),
            functools.partial(self._spares.give_back, spec.memory_mb),
            (lambda: network.release(lease)) if lease is not None else (lambda: None),
            network.ensure_ready if lease is not None else (lambda: None),
        )
        process.runtime_api_connection = connection
        if isinstance(child, ForkedChild):
            process.forked = True
            child.launcher_gone()
        return process

    def warm(self, runtimes: set[str]) -> None:
        if self._templates is not None:
            self._templates.warm({EXEC_TEMPLATE if _execs(r) else r for r in runtimes})

    def ready(self) -> str | None:
        return self._templates.unready() if self._templates is not None else None

    async def close(self) -> None:
        """After every environment is gone: end the templates, remove the spare cgroups, then the daemon's own
        parent groups (left in place if anything still lives in them)."""
        if self._templates is not None:
            await self._templates.close()
        await self._spares.close()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._network.close)
        except NetworkUnavailable as exc:
            log.error("could not remove this daemon's network: %s", exc)
        self._hierarchy.close()
        identity.release(self._identity)

    async def _lease_network(self, env_id: str) -> Lease:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._network.ensure_ready)
            return self._network.lease()
        except NetworkUnavailable as exc:
            raise LaunchFailed(f"environment {env_id}: {exc}") from exc

    async def _build_network(
        self, control: socket.socket, child: ProcessWatch, env_id: str, lease: Lease, host_services: tuple[str, ...]
    ) -> None:
        """The jail hands over its network namespace; build the host's end, with the host services the
        function may reach, then let the jail go on."""
        msg, fds = await self._receive(control, child, env_id)
        if msg != b"netns" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise LaunchFailed(f"environment {env_id}: expected its network namespace, got {msg[:200]!r}")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self._network.attach, lease, fds[0])
            await loop.run_in_executor(None, self._network.open_host_services, lease, host_services)
        except NetworkUnavailable as exc:
            raise LaunchFailed(f"environment {env_id}: {exc}") from exc
        finally:
            os.close(fds[0])
        control.send(b"network")

    async def _await_ready(
        self, control: socket.socket, child: ProcessWatch, env_id: str
    ) -> tuple[socket.socket, socket.socket | None]:
        """The jail's answer: the Runtime API's listening socket and the runtime's connection when it made
        one, or which step failed."""
        msg, fds = await self._receive(control, child, env_id)
        if msg == b"ready" and len(fds) in (1, 2):
            socks = [socket.socket(fileno=fd) for fd in fds]
            for sock in socks:
                sock.setblocking(False)
            return socks[0], socks[1] if len(socks) == 2 else None
        for fd in fds:
            os.close(fd)
        raise LaunchFailed(f"environment {env_id}: unexpected message from the jail: {msg[:200]!r}")

    async def _receive(self, control: socket.socket, child: ProcessWatch, env_id: str) -> tuple[bytes, list[int]]:
        """The jail's next message with its descriptors; a step's failure, or the jail's death, raises."""
        loop = asyncio.get_running_loop()
        control.setblocking(False)
        readable: asyncio.Future[int] = loop.create_future()

        def on_readable() -> None:
            if not readable.done():
                readable.set_result(0)

        loop.add_reader(control.fileno(), on_readable)
        try:
            done, _ = await asyncio.wait(
                {readable, child.exited}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            loop.remove_reader(control.fileno())
        if readable in done:
            try:
                msg, fds, _, _ = socket.recv_fds(control, 4096, 2)
            except BlockingIOError:
                msg, fds = b"", []
            if msg and not msg.startswith(b"error "):
                return msg, fds
            for fd in fds:
                os.close(fd)
            if msg:
                raise LaunchFailed(f"environment {env_id}: {msg.decode(errors='replace')}")
        if child.exited.done():
            raise LaunchFailed(
                f"environment {env_id}: the jail exited with status {child.exited.result()} "
                "before the environment was ready"
            )
        raise LaunchFailed(f"environment {env_id}: the jail did not get ready within {READY_TIMEOUT_S:.0f} s")
