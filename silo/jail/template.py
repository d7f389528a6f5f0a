"""A template: a process that has paid a runtime's start once and forks new environments, which then
apply the whole jail.

The daemon starts it as root in the host's namespaces, with an empty environment:

    python3.x -S -B -c TEMPLATE_ENTRY SOCKET_FD [RUNTIME_DIR [LANG_PREFIX]]

It imports the jail and, given RUNTIME_DIR, silo's built-in Python runtime (LANG_PREFIX: where its
interpreter lives on the host when environments see it at /var/lang), says `ready`, and serves its
socket to the daemon (SOCK_SEQPACKET, one message each):

    daemon -> template   b"fork <serial>" with three descriptors: a pipe holding the environment's
                         JailSpec, the environment's control socket, the write end of its output
                         b"drain": take no more forks; exit once every child has ended
    template -> daemon   b"forked <serial> <pid>" with a pidfd of the child
                         b"failed <serial> <reason>"
                         b"exit <pid> <status>" once a child has ended

The template holds no secret and never runs tenant code. It never reads a JailSpec: an environment's
variables exist only in the child that reads them after the fork, so no environment forked later can
find another's in memory the template once used. The child leaves the template (descriptors, variables,
random generators, signal handlers), then goes through the jail's steps exactly as a fresh launcher
does (`enter.jail`), and at the end either execs the runtime or, for silo's built-in Python runtime,
runs it in the interpreter it already has.

What a fork cannot change is decided when the template starts: the hash seed of str and bytes and the
address-space layout are shared by the environments forked from one template. The daemon therefore
replaces a template after a number of forks (see silo/sandbox/template.py).
"""

from __future__ import annotations

import fcntl
import gc
import os
import select
import signal
import socket
import sys

from silo.jail import enter, syscalls

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from silo.jail.spec import JailSpec

LANG_DIR = "/var/lang"
RUNTIME_DIR = "/var/runtime"
# Descriptors of a forked child once it has left the template: output on 1 and 2, then these.
CONTROL_FD = 3
SPEC_FD = 4
REPORT_FD = 5
GONE_FD = 6
PR_SET_CHILD_SUBREAPER = 36
# Variables that change how the interpreter starts; a fork cannot honour them, so the daemon starts
# environments of functions that set them from nothing (see silo/sandbox/template.py).
HONOURED_PYTHON_VARIABLES = ("PYTHONPATH", "PYTHONUNBUFFERED")


def load_runtime(runtime_dir: str) -> None:
    """Import silo's built-in Python runtime the way its bootstrap does, as package `silo_runtime`."""
    path = os.path.join(runtime_dir, "bootstrap.py")
    with open(path) as f:
        code = compile(f.read(), path, "exec")
    namespace: dict[str, Any] = {"__name__": "silo_bootstrap", "__file__": path}
    exec(code, namespace)
    namespace["_load_runtime"]()


# --- in the child ---------------------------------------------------------------------------------


def take_descriptors(spec_fd: int, control_fd: int, output_fd: int, report_fd: int, gone_fd: int) -> None:
    """Put the environment's descriptors where the rest of the child expects them."""
    # Out of the way of 0-6 first, so the moves below cannot overwrite one another.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 64) for fd in (spec_fd, control_fd, output_fd, report_fd, gone_fd)]
    os.dup2(high[2], 1)
    os.dup2(high[2], 2)
    os.dup2(high[1], CONTROL_FD)
    os.dup2(high[0], SPEC_FD)
    os.dup2(high[3], REPORT_FD)
    os.dup2(high[4], GONE_FD)


def leave_template() -> None:
    """Step 1 for a fork: keep only the environment's own descriptors, drop the template's variables,
    signal handlers and random state."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    enter.leave_daemon(CONTROL_FD, SPEC_FD, REPORT_FD, GONE_FD)
    reseed()
    # Its own session, as a launcher started by the daemon has; and it dies with the template.
    os.setsid()
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)


def reseed() -> None:
    """Every generator that lives in the process gets fresh state from the kernel."""
    random = sys.modules.get("random")
    if random is not None:
        random.seed()


def become_environment(fds: list[int], runtime_loaded: bool) -> None:
    """The child's whole life: leave the template, read its spec, go through the jail. Never returns."""
    take_descriptors(*fds)
    control = socket.socket(fileno=CONTROL_FD)
    enter.step("leave the template", control, leave_template)
    with os.fdopen(SPEC_FD, "rb") as f:
        spec = enter.step("read the environment's description", control, lambda: enter.read_spec(f.read()))
    in_process = spec.in_process and runtime_loaded
    start = run_python_runtime if in_process else enter.exec_runtime
    enter.jail(spec, control, start, REPORT_FD, GONE_FD, preconnect=in_process)


def _seen(path: str, pairs: list[tuple[str, str]]) -> str:
    for host, inside in pairs:
        if path == host or path.startswith(host + "/"):
            return inside + path[len(host) :]
    return path


class Inside:
    """How the interpreter's paths look from inside an environment, worked out once in the template.

    Module files and loaders point inside at once, in the template: nothing imports through them, and
    tracebacks then find source lines where the environment sees them. What imports go through
    (sys.path, packages' __path__) moves only in the child, after pivot_root, since until then the child
    and the template still import from the host's tree."""

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []
        self.packages: list[tuple[Any, list[str]]] = []
        self.daemon_modules: list[str] = []
        self.module_count = 0
        self.silo_root = ""
        self.locales: dict[str, bool] = {}
        self.set_aside: list[object] = []


INSIDE = Inside()


def prepare_inside(runtime_dir: str, lang_prefix: str) -> None:
    pairs = [(runtime_dir, RUNTIME_DIR)] if runtime_dir else []
    if lang_prefix:
        pairs.append((lang_prefix, LANG_DIR))
    INSIDE.pairs = pairs
    INSIDE.silo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(enter.__file__))))
    for module in list(sys.modules.values()):
        for attr in ("__file__", "__cached__"):
            value = getattr(module, attr, None)
            if isinstance(value, str):
                setattr(module, attr, _seen(value, pairs))
        loader = getattr(module, "__loader__", None)
        path = getattr(loader, "path", None)
        if isinstance(path, str):
            loader.path = _seen(path, pairs)  # type: ignore[union-attr]
        module_spec = getattr(module, "__spec__", None)
        origin = getattr(module_spec, "origin", None)
        if isinstance(origin, str):
            module_spec.origin = _seen(origin, pairs)  # type: ignore[union-attr]
    INSIDE.packages = [
        (m, [_seen(p, pairs) for p in m.__path__])
        for m in sys.modules.values()
        if isinstance(getattr(m, "__path__", None), list)
    ]
    # The locale Lambda's variables name, tried once here: whether the interpreter would coerce it to C.UTF-8.
    import _locale

    for name in ("en_US.UTF-8",):
        try:
            _locale.setlocale(_locale.LC_CTYPE, name)
            INSIDE.locales[name] = True
        except Exception:  # locale.Error
            INSIDE.locales[name] = False
    _locale.setlocale(_locale.LC_CTYPE, "C.UTF-8")
    INSIDE.daemon_modules = _daemon_module_names()
    INSIDE.module_count = len(sys.modules)


def _daemon_module_names() -> list[str]:
    return [name for name in sys.modules if name == "silo" or name.startswith("silo.")]


def show_inside_paths() -> None:
    """In the jailed child: imports go to the interpreter's and the runtime's trees as the environment sees them."""
    pairs = INSIDE.pairs
    # The template ran `-c`, which put its working directory first on the path; a script's run does not.
    sys.path[:] = [_seen(p, pairs) for p in sys.path if p not in (INSIDE.silo_root, "")]
    for name in ("executable", "_base_executable", "prefix", "exec_prefix", "base_prefix", "base_exec_prefix"):
        value = getattr(sys, name, None)
        if isinstance(value, str):
            setattr(sys, name, _seen(value, pairs))
    # What is dropped here is set aside, not freed: freeing the template's finders (each caches its
    # directory's file names) and modules would write to every page their objects lie on, and each page
    # written is copied out of the template into this environment.
    INSIDE.set_aside.append(sys.path_importer_cache)
    sys.path_importer_cache = {}
    for package, inside in INSIDE.packages:
        INSIDE.set_aside.append(package.__path__)
        package.__path__ = inside
    # Nothing of the daemon's package stays importable by name. The names were listed in the template:
    # going over every module's name here would write to each of those strings (its reference count).
    names = INSIDE.daemon_modules
    if len(sys.modules) != INSIDE.module_count:  # something was imported since: look again
        names = _daemon_module_names()
    for name in names:
        module = sys.modules.pop(name, None)
        if module is not None:
            INSIDE.set_aside.append(module)


def run_python_runtime(spec: JailSpec) -> None:
    """Pid 1, jailed: become the built-in Python runtime as `python -S -B bootstrap.py` would. Never returns."""
    code = 1
    try:
        show_inside_paths()
        sys.argv = [spec.argv[-1]]
        os.environ.clear()
        os.environ.update(spec.environ)
        pythonpath = spec.environ.get("PYTHONPATH", "")
        sys.path[0:0] = [p for p in pythonpath.split(os.pathsep) if p]
        if spec.environ.get("PYTHONUNBUFFERED"):
            for stream in (sys.stdout, sys.stderr):
                stream.reconfigure(write_through=True)  # type: ignore[union-attr]
        import time

        time.tzset()
        coerce_c_locale()
        code = sys.modules["silo_runtime.loop"].main(os.environ, getattr(spec, "runtime_api_fd", -1))
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException:
        import traceback

        traceback.print_exc()
    _exit_like_interpreter(code)


def coerce_c_locale() -> None:
    """What the interpreter does at start (PEP 538) when the variables name no usable locale: use C.UTF-8."""
    if os.environ.get("LC_ALL"):
        return
    import _locale

    name = os.environ.get("LC_CTYPE") or os.environ.get("LANG") or "C"
    usable = INSIDE.locales.get(name)
    if usable is None:
        try:
            usable = _locale.setlocale(_locale.LC_CTYPE, name) not in ("C", "POSIX")
        except Exception:  # locale.Error
            usable = False
    elif usable:
        _locale.setlocale(_locale.LC_CTYPE, name)
    if not usable:
        _locale.setlocale(_locale.LC_CTYPE, "C.UTF-8")
        os.environ["LC_CTYPE"] = "C.UTF-8"


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    sys.stderr.write(f"{exc.code}\n")
    return 1


def _exit_like_interpreter(code: int) -> None:
    """What the interpreter does at exit (wait for threads, run atexit, flush), then end the process."""
    threading = sys.modules.get("threading")
    try:
        if threading is not None:
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


# --- the template itself --------------------------------------------------------------------------


def _noop(signum: int, frame: object) -> None:
    pass


class Template:
    def __init__(self, sock: socket.socket, runtime_loaded: bool) -> None:
        self.sock = sock
        self.runtime_loaded = runtime_loaded
        # An environment is named by the daemon's serial for its fork, never by a pid: a launcher's pid is
        # free again once it leaves, and a later launcher may get it while the first environment lives on.
        # launcher pid -> (serial, read end of its report, write end of its "gone" pipe)
        self.launchers: dict[int, tuple[bytes, int, int]] = {}
        self.runtimes: dict[int, bytes] = {}  # pid 1 of an environment -> serial
        self.unclaimed: dict[int, int] = {}
        self.draining = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        # SIGCHLD wakes the loop through this socket, so ended children are reaped and reported at once.
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, _noop)

    def serve(self) -> None:
        # poll, not select: a daemon with many environments hands over descriptors numbered past 1024.
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        poller.register(self.sock, select.POLLIN)
        while not (self.draining and not self.launchers and not self.runtimes):
            ready = {fd for fd, _ in poller.poll()}
            if self.wake_r.fileno() in ready:
                try:
                    while self.wake_r.recv(512):
                        pass
                except BlockingIOError:
                    pass
            self.reap()
            if self.sock.fileno() in ready and not self.draining:
                self.take_request()
                if self.draining:
                    poller.unregister(self.sock)

    def take_request(self) -> None:
        msg, fds, _, _ = socket.recv_fds(self.sock, 256, 3)
        if not msg:
            self.draining = True  # the daemon is gone (and with it, soon, this process)
            return
        words = msg.split()
        if words[0] == b"drain":
            self.draining = True
            return
        if words[0] != b"fork" or len(words) != 2 or not words[1].isdigit() or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            self.sock.send(b"failed " + (words[1] if len(words) > 1 else b"?") + b" malformed request")
            return
        # The child reports its environment's pid 1 here, then leaves; pid 1 becomes this process's child.
        report_r, report_w = os.pipe()
        # Pid 1 arms its death signal only once this end is closed, which happens when the launcher has
        # been reaped here: by then pid 1's parent is this process. (An end the launcher held would close
        # as it exits, before its children are handed over; armed in that gap, the signal fires at once.)
        gone_r, gone_w = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (*fds, report_r, report_w, gone_r, gone_w):
                os.close(fd)
            self.sock.send(b"failed %s %s" % (words[1], str(exc).encode()))
            return
        if pid == 0:
            try:
                os.close(gone_w)
                become_environment([*fds, report_w, gone_r], self.runtime_loaded)
            finally:
                os._exit(126)
        for fd in (*fds, report_w, gone_r):
            os.close(fd)
        self.launchers[pid] = (words[1], report_r, gone_w)
        pidfd = os.pidfd_open(pid)
        try:
            socket.send_fds(self.sock, [b"forked %s %d" % (words[1], pid)], [pidfd])
        finally:
            os.close(pidfd)

    def reap(self) -> None:
        """Reap what ended. An environment ends with the process forked for it (its launcher), or, when that
        launcher left after forking pid 1, with pid 1."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            launcher = self.launchers.pop(pid, None)
            if launcher is not None:
                serial, report, gone = launcher
                os.close(gone)
                try:
                    runtime = int(os.read(report, 32) or b"0")
                finally:
                    os.close(report)
                if runtime:
                    self.runtimes[runtime] = serial
                    if runtime in self.unclaimed:
                        self.ended(serial, self.unclaimed.pop(runtime))
                    continue
                self.ended(serial, code)
            elif pid in self.runtimes:
                self.ended(self.runtimes.pop(pid), code)
            else:
                # A pid 1 reaped before its launcher: claimed once the launcher's report is read.
                self.unclaimed[pid] = code

    def ended(self, serial: bytes, code: int) -> None:
        try:
            self.sock.send(b"exit %s %d" % (serial, code))
        except OSError:
            pass


FILLER: list[object] = []


def pool_free_blocks() -> dict[int, int]:
    """Block size -> free blocks in the partly used pools of CPython's small-object allocator (empty when
    the interpreter runs without it), from the report it writes to standard error."""
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    try:
        os.dup2(write_end, 2)
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    free = {}
    for line in b"".join(chunks).decode(errors="replace").splitlines():
        # class, size, pools, blocks in use, free blocks
        fields = line.split()
        if len(fields) == 5 and all(f.isdigit() for f in fields):
            free[int(fields[1])] = int(fields[4])
    return free


def fill_holes() -> list[object]:
    """Objects that take the free blocks left in the template's partly used pools, kept for its life.

    A forked environment allocates from the first pool of a size with room; were that a pool of the
    template's, with its free blocks scattered among live objects, every allocation would copy another of
    the template's pages into the environment. Filled, the template's pools are left alone and the
    environment's objects go to pools of their own, side by side."""
    free_blocks = pool_free_blocks()
    # Made at its full length at once: a growing list would leave the arrays it outgrew as new holes.
    objects: list[object] = [None] * sum(free_blocks.values())
    i = 0
    for size, free in free_blocks.items():
        for _ in range(free):
            if size <= 16:
                objects[i] = object()
            elif size <= 32:
                objects[i] = float(i) + 0.5
            else:
                objects[i] = bytes(size - 33)  # 33 bytes of header, then the data
            i += 1
    return objects


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    # If the daemon dies, so does the template, and with it (by their own death signal) its children.
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    # Pid 1 of each environment is re-parented here when the process that forked it leaves.
    syscalls.prctl(PR_SET_CHILD_SUBREAPER, 1)
    runtime_dir = sys.argv[2] if len(sys.argv) > 2 else ""
    if runtime_dir:
        load_runtime(runtime_dir)
        prepare_inside(runtime_dir, sys.argv[3] if len(sys.argv) > 3 else "")
    template = Template(sock, bool(runtime_dir))
    # What the template made so far is never freed; keeping the collector off it keeps its pages shared.
    gc.collect()
    FILLER.extend(fill_holes())
    gc.freeze()
    sock.send(b"ready")
    template.serve()
