"""The jail: turn a fresh process into an isolated environment, then exec the function's runtime.

Run as `python -I -m silo.jail.enter SPEC_FD CONTROL_FD` by the daemon, as root: the JailSpec
arrives (marshalled) on SPEC_FD, and CONTROL_FD is a SOCK_SEQPACKET socket back to the daemon. Or
forked by a template (template.py), which leaves the template for step 1 and then calls `jail` here.
The steps below run in a fixed order; each has a name that appears in the error the daemon receives
when it fails. Nothing here imports the daemon.

    1. leave the daemon: close every inherited descriptor but the two above and the output
    2. join the environment's cgroups, so everything after is counted and killable as one
    3. unshare mount, pid, ipc, uts, net and cgroup namespaces; fork so the child is pid 1 of the new pid
       namespace (this process stays behind, waits, and passes the exit status on; forked by a template,
       it leaves instead, and the template reaps pid 1)
    4. bring up loopback; for an outbound environment only, hand the daemon the new network namespace,
       wait until it has built the host's end of the link, then address eth0 and route through it;
       create the Runtime API socket on 127.0.0.1:9001 inside the new network namespace and hand it
       to the daemon (SCM_RIGHTS)
    5. build a read-only root: system binds, the runtime and the code as overlays (their sources'
       paths stay unseen), /proc of the new pid namespace with what it shows of the host covered, a
       minimal /dev, a private tmpfs /tmp; pivot_root into it and drop the old root
    6. drop to the environment's own uid/gid with no capabilities and no_new_privs
    7. install the seccomp filter, last, since it outlives execve
    8. exec the runtime (forked by a template, silo's Python runtime runs in-process instead)
"""

from __future__ import annotations

import fcntl
import marshal
import os
import signal
import socket
import stat
import struct
import sys
import time
from types import SimpleNamespace

# Imported here, not where used: after pivot_root nothing of silo's own files is visible any more. The
# jail imports only this and the standard library: every module imported costs every environment's start.
from silo.jail import syscalls

# Not `typing.TYPE_CHECKING`: importing typing would cost milliseconds of every start (mypy knows this name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    from silo.jail.spec import JailSpec

    T = TypeVar("T")

NAMESPACES = (
    syscalls.CLONE_NEWNS
    | syscalls.CLONE_NEWPID
    | syscalls.CLONE_NEWIPC
    | syscalls.CLONE_NEWUTS
    | syscalls.CLONE_NEWNET
    | syscalls.CLONE_NEWCGROUP
)
# The only devices, by their fixed numbers (linux/major.h, devices.txt: the memory devices, major 1).
DEVICES = {"null": 3, "zero": 5, "random": 8, "urandom": 9}
# /proc files that show the whole kernel's activity to anyone, whatever the namespaces: other tenants'
# CPU time, interrupts, disk, memory and swap counters, scheduler and timer state, file locks with the
# host's pids and inodes, the host's cgroup counts, the kernel's symbols. Each is covered by an empty
# file. Left as they are: files only root may read (an environment never is), and static facts of the
# machine (cpuinfo, partitions, modules, devices); each cover costs every environment's start tens of
# microseconds.
PROC_EMPTIED = (
    "buddyinfo",
    "cgroups",
    "diskstats",
    "interrupts",
    "kallsyms",
    "latency_stats",
    "lock_stat",
    "locks",
    "mdstat",
    "sched_debug",
    "schedstat",
    "softirqs",
    "swaps",
    "timer_list",
    "vmstat",
    "zoneinfo",
)
# Directories of the same kind (pressure stall information; per-filesystem counters), covered by an empty one.
PROC_EMPTIED_DIRS = ("fs", "pressure")
OPEN_FILES = 1024
RO = syscalls.MS_RDONLY | syscalls.MS_NOSUID | syscalls.MS_NODEV
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCADDRT = 0x890B
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2


class JailError(Exception):
    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"jail step '{step}' failed: {cause}")


def leave_daemon(*fds: int) -> None:
    # Only stdout/stderr (the log pipe) and the control socket (and, from a template, the spec and the
    # report pipe) may cross into the environment.
    keep = {1, 2, *fds}
    for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
        if fd not in keep and fd > 0:
            try:
                os.close(fd)
            except OSError:
                pass
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.environ.clear()


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def join_network(spec: JailSpec, control: socket.socket) -> None:
    # A descriptor of the namespace, not a pid: a pid can be reused, the descriptor names this namespace.
    netns = os.open("/proc/self/ns/net", os.O_RDONLY)
    socket.send_fds(control, [b"netns"], [netns])
    os.close(netns)
    # The host end and the firewall must exist before the environment has an address to use.
    answer = control.recv(64)
    if answer != b"network":
        raise ConnectionError(f"the daemon did not build the network: {answer!r}")
    # Environments have no IPv6: switched off before eth0 is up, so it never gets even a link-local
    # address (the host drops IPv6 from environments anyway). /proc/sys/net is this namespace's.
    if os.path.exists("/proc/sys/net/ipv6"):
        _write("/proc/sys/net/ipv6/conf/eth0/disable_ipv6", "1")
    address_eth0(spec.address, spec.gateway)


def _ifreq(name: str, payload: bytes) -> bytes:
    return struct.pack("16s", name.encode()) + payload.ljust(24, b"\0")


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("=HH4s8x", socket.AF_INET, 0, socket.inet_aton(address))


def address_eth0(address: str, gateway: str) -> None:
    # ioctls, not `ip`: no process to start, and nothing beyond this namespace to touch.
    ip, prefix = address.split("/")
    netmask = socket.inet_ntoa(struct.pack("!I", (0xFFFFFFFF << (32 - int(prefix))) & 0xFFFFFFFF))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFADDR, _ifreq("eth0", _sockaddr_in(ip)))
        fcntl.ioctl(s, SIOCSIFNETMASK, _ifreq("eth0", _sockaddr_in(netmask)))
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq("eth0", b"")))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq("eth0", struct.pack("H", flags | IFF_UP)))
        # struct rtentry (x86_64): pad, dst, gateway, genmask, flags, pads, metric, dev, mtu, window, irtt.
        default_route = (
            struct.pack("=Q", 0)
            + _sockaddr_in("0.0.0.0")
            + _sockaddr_in(gateway)
            + _sockaddr_in("0.0.0.0")
            + struct.pack("=Hh4xQQh6xQQQH6x", RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0)
        )
        fcntl.ioctl(s, SIOCADDRT, default_route)


def runtime_api_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, content: str) -> None:
    with open(path, "w") as f:
        f.write(content)


def _bind(source: str, target: str, writable: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        _write(target, "")
    syscalls.mount(source, target, None, syscalls.MS_BIND | syscalls.MS_REC)
    # A bind mount takes its flags only from a remount; nosuid here is what makes setuid binaries inert.
    flags = syscalls.MS_BIND | syscalls.MS_REMOUNT | syscalls.MS_NOSUID | syscalls.MS_NODEV
    syscalls.mount(None, target, None, flags if writable else flags | syscalls.MS_RDONLY)


def _mount_neutral(source: str, target: str, empty: str) -> None:
    """`source` at `target`, read-only, without telling where `source` is.

    A bind mount shows, in every process's /proc/<pid>/mountinfo, the path of its source within the
    source's filesystem: the data directory, where silo or the interpreter is installed. A read-only
    overlay is a filesystem of its own, so its root is shown as "/", and its options name its layers
    as they were given: here by descriptor (an overlay without an upper layer needs two lower ones,
    the second an empty directory)."""
    lower = os.open(source, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    blank = os.open(empty, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.makedirs(target, exist_ok=True)
        layers = f"lowerdir=/proc/self/fd/{lower}:/proc/self/fd/{blank}"
        syscalls.mount("overlay", target, "overlay", RO, layers)
    finally:
        os.close(lower)
        os.close(blank)


def proc_stat(cpus: int, boot_time: int) -> str:
    """/proc/stat of an environment: no CPU time, interrupt, context switch or process of anyone.

    Kept (programs need the file and its lines): one line per CPU, as many as the host has (the
    environment may run on all of them, and /proc/cpuinfo says so anyway), and the boot time, which
    /proc/uptime shows too."""
    zeros = " ".join(["0"] * 10)
    cpu_lines = "".join(f"cpu{n} {zeros}\n" for n in range(cpus))
    return (
        f"cpu  {zeros}\n{cpu_lines}intr 0\nctxt 0\nbtime {boot_time}\nprocesses 0\n"
        f"procs_running 1\nprocs_blocked 0\nsoftirq {' '.join(['0'] * 11)}\n"
    )


def proc_meminfo(limit_kb: int) -> str:
    """/proc/meminfo of an environment: its own memory, as on Lambda, not the host's and its use.

    Runtimes size their heaps from MemTotal, and the environment's cgroup is invisible to them. The
    figures do not follow the environment's use: they say what it may have."""
    fields = (
        ("MemTotal", limit_kb),
        ("MemFree", limit_kb),
        ("MemAvailable", limit_kb),
        ("Buffers", 0),
        ("Cached", 0),
        ("SwapCached", 0),
        ("SwapTotal", 0),
        ("SwapFree", 0),
    )
    return "".join(f"{name + ':':<16}{value:>8} kB\n" for name, value in fields)


def _memory_limit_kb(groups: dict[str, str]) -> int:
    # v1's memory group, or v2's one group.
    path = groups.get("memory") or groups.get("unified", "")
    for name in ("memory.limit_in_bytes", "memory.max"):
        try:
            raw = _read(f"{path}/{name}").strip()
        except OSError:
            continue
        if raw.isdigit():
            return int(raw) // 1024
    # No limit found (an environment always has one): the host's, so programs still find a size.
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024


def _cover(source: str, target: str) -> None:
    try:
        syscalls.mount(source, target, None, syscalls.MS_BIND)
    except FileNotFoundError:
        pass  # not in this kernel: nothing to cover


def _put(path: str, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    try:
        os.write(fd, content.encode())
    finally:
        os.close(fd)


def mask_proc(spec: JailSpec, proc: str, scratch: str) -> None:
    """Cover what /proc shows of the host with empty or neutral files, written in `scratch` (a tmpfs
    made read-only once they are bound)."""
    empty_file, empty_dir = f"{scratch}/empty", f"{scratch}/empty.d"
    _put(empty_file, "")
    os.mkdir(empty_dir, 0o555)
    for name in PROC_EMPTIED:
        _cover(empty_file, f"{proc}/{name}")
    for name in PROC_EMPTIED_DIRS:
        _cover(empty_dir, f"{proc}/{name}")
    boot_time = int(time.time() - time.clock_gettime(time.CLOCK_BOOTTIME))
    neutral = {
        # The load of the whole host otherwise. (sysinfo(2), behind getloadavg(3), still tells it: see
        # the security notes.)
        "loadavg": "0.00 0.00 0.00 1/1 1\n",
        "stat": proc_stat(os.cpu_count() or 1, boot_time),
        "meminfo": proc_meminfo(_memory_limit_kb(spec.cgroups)),
    }
    for name, content in neutral.items():
        _put(f"{scratch}/{name}", content)
        syscalls.mount(f"{scratch}/{name}", f"{proc}/{name}", None, syscalls.MS_BIND)


def build_root(spec: JailSpec) -> None:
    root = spec.root_dir
    # Nothing we mount may propagate back to the host's mount namespace.
    syscalls.mount(None, "/", None, syscalls.MS_REC | syscalls.MS_PRIVATE)
    syscalls.mount("tmpfs", root, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, "size=4m,mode=0755")
    for name in ("bin", "sbin", "lib", "lib64"):
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), f"{root}/{name}")
        elif os.path.isdir(host):
            _bind(host, f"{root}/{name}", False)
    # A small tmpfs of its own for the overlays' empty layer and the files that cover parts of /proc:
    # detached before the tenant runs, it stays alive only under what was mounted from it. (In the
    # root's tmpfs, such files could not be unlinked: a filesystem holding unlinked files in use cannot
    # be made read-only.)
    scratch = f"{root}/.silo"
    os.mkdir(scratch, 0o700)
    syscalls.mount("tmpfs", scratch, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC, "size=64k")
    os.mkdir(f"{scratch}/blank")
    for bind in spec.binds:
        target = f"{root}/{bind.target.lstrip('/')}"
        if bind.source == bind.target or bind.writable:
            # Shown where it is anyway (/usr at /usr).
            _bind(bind.source, target, bind.writable)
        else:
            _mount_neutral(bind.source, target, f"{scratch}/blank")
    etc = f"{root}/etc"
    os.makedirs(etc, exist_ok=True)
    for name, content in spec.etc_files.items():
        _write(f"{etc}/{name}", content)
    # /dev: an empty tmpfs with only the harmless character devices bound in.
    dev = f"{root}/dev"
    os.makedirs(dev, exist_ok=True)
    syscalls.mount("tmpfs", dev, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NOEXEC, "size=64k,mode=0755")
    # Made here, not bound from the host's /dev: a bind of devtmpfs would show its options in mountinfo,
    # whose size is half the host's memory.
    for name, minor in DEVICES.items():
        os.mknod(f"{dev}/{name}", 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")
    tmp = f"{root}/tmp"
    os.makedirs(tmp, exist_ok=True)
    syscalls.mount("tmpfs", tmp, "tmpfs", syscalls.MS_NOSUID | syscalls.MS_NODEV, f"size={spec.tmp_mb}m,mode=1777")
    proc = f"{root}/proc"
    os.makedirs(proc, exist_ok=True)
    # This process is pid 1 of the new pid namespace, so this /proc shows the environment's processes only.
    syscalls.mount("proc", proc, "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
    # /proc/sys and friends stay read-only even though writing them would need root anyway.
    for sub in ("sys", "sysrq-trigger", "irq", "bus"):
        path = f"{proc}/{sub}"
        if os.path.exists(path):
            syscalls.mount(path, path, None, syscalls.MS_BIND | syscalls.MS_REC)
            syscalls.mount(None, path, None, syscalls.MS_BIND | syscalls.MS_REMOUNT | RO)
    mask_proc(spec, proc, scratch)
    flags = syscalls.MS_REMOUNT | syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC | syscalls.MS_RDONLY
    syscalls.mount(None, scratch, None, flags)
    syscalls.umount(scratch, syscalls.MNT_DETACH)
    os.rmdir(scratch)
    os.chdir(root)
    os.mkdir(f"{root}/.old-root")
    syscalls.pivot_root(".", ".old-root")
    os.chdir("/")
    syscalls.umount("/.old-root", syscalls.MNT_DETACH)
    os.rmdir("/.old-root")
    syscalls.mount(None, "/", None, syscalls.MS_REMOUNT | RO)


def drop_identity(uid: int, gid: int) -> None:
    # Lambda's limit of open files, whatever the daemon's own is (it raises its own for thousands of
    # environments); lowered here, it can never be raised again without the capabilities dropped below.
    syscalls.setrlimit(syscalls.RLIMIT_NOFILE, OPEN_FILES, OPEN_FILES)
    last_cap = int(_read("/proc/sys/kernel/cap_last_cap"))
    # Emptying the bounding set first means no later exec can ever regain a capability.
    for cap in range(last_cap + 1):
        syscalls.prctl(syscalls.PR_CAPBSET_DROP, cap)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    syscalls.prctl(syscalls.PR_SET_NO_NEW_PRIVS, 1)
    status = _read("/proc/self/status")
    for field in ("CapPrm", "CapEff", "CapBnd", "CapAmb", "CapInh"):
        line = next(x for x in status.splitlines() if x.startswith(field + ":"))
        if int(line.split()[1], 16) != 0:
            raise PermissionError(f"{field} still holds capabilities after dropping them: {line}")
    # If the environment's parent (the jail's first process) dies, so does the environment.
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)


def install_seccomp(filter_hex: str) -> None:
    # An environment never runs unfiltered: a daemon that sent no filter is refused here, not skipped.
    if not filter_hex:
        raise ValueError("the environment's seccomp filter is empty; an environment never runs without one")
    syscalls.seccomp_install(bytes.fromhex(filter_hex))


def join_cgroups(groups: dict[str, str]) -> None:
    """Move this process into every group the daemon made, so all it ever forks is counted with it.

    A single-threaded process moves itself by writing 0 to `tasks`: moving only the calling thread
    skips the hierarchy-wide lock (and its RCU grace period) that moving a whole process takes, which
    costs 1-2 ms per controller on cgroup v1. With one thread, moving the thread moves the process.
    cgroup v2 moves only whole processes (`unified`: its one group)."""
    single = len(os.listdir("/proc/self/task")) == 1
    for ctrl, path in groups.items():
        name, value = ("tasks", "0") if single and ctrl != "unified" else ("cgroup.procs", str(os.getpid()))
        _write(f"{path}/{name}", value)


def step(name: str, control: socket.socket, fn: Callable[..., T], *args: Any) -> T:
    try:
        return fn(*args)
    except BaseException as exc:
        control.send(f"error {name}: {exc}".encode())
        os._exit(126)


def exec_runtime(spec: JailSpec) -> None:
    try:
        os.execve(spec.argv[0], spec.argv, spec.environ)
    except OSError as exc:
        sys.stderr.write(f"silo: could not start the runtime {spec.argv[0]}: {exc}\n")
        os._exit(127)


def wait_for_eof(fd: int) -> None:
    while os.read(fd, 64):
        pass
    os.close(fd)


def environment_main(
    spec: JailSpec,
    control: socket.socket,
    start: Callable[[JailSpec], None],
    launcher_gone: int = -1,
    preconnect: bool = False,
) -> None:
    """Pid 1 of the new namespaces: finish the jail and become the runtime (`start` never returns).

    `launcher_gone`: read end of a pipe whose other end closes once the process that forked this one has
    left and been reaped (see `jail`); the death signal is armed only then, so that it follows the
    parent this process has from then on, not the one that is leaving.
    `preconnect`: the runtime runs in this process (silo's own Python runtime), so it is also handed a
    Runtime API connection made here, over a local socket pair: cheaper per call than TCP on loopback.
    Its end is left as `spec.runtime_api_fd`; the daemon gets the other end beside the listening socket."""
    step("set hostname", control, syscalls.sethostname, spec.hostname)
    step("bring up loopback", control, loopback_up)
    if spec.address:
        step("join the outbound network", control, join_network, spec, control)
    api: socket.socket = step("create the Runtime API socket", control, runtime_api_socket, spec.runtime_api_port)
    step("build the root filesystem", control, build_root, spec)
    if launcher_gone >= 0:
        # A death signal armed now would fire when the launcher leaves; armed after, it follows the
        # parent this process has from then on (the template).
        step("wait for the launcher to leave", control, wait_for_eof, launcher_gone)
    step("drop privileges", control, drop_identity, spec.uid, spec.gid)
    step("enter the code directory", control, os.chdir, spec.cwd)
    step("install the seccomp filter", control, install_seccomp, spec.seccomp_filter)
    # The daemon serves the Runtime API on this socket; the environment keeps no copy of it.
    fds = [api.fileno()]
    if preconnect:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds.append(theirs.fileno())
        spec.runtime_api_fd = ours.detach()  # type: ignore[attr-defined]
    socket.send_fds(control, [b"ready"], fds)
    api.close()
    control.close()
    if preconnect:
        theirs.close()
        # Down to the lowest free number, where a runtime that connects itself would have its socket.
        lowest = os.dup(spec.runtime_api_fd)  # type: ignore[attr-defined]
        os.close(spec.runtime_api_fd)  # type: ignore[attr-defined]
        spec.runtime_api_fd = lowest  # type: ignore[attr-defined]
    start(spec)
    os._exit(127)


def read_spec(data: bytes) -> JailSpec:
    """The JailSpec the daemon wrote, read as plain attributes (the dataclass module costs milliseconds)."""
    doc = marshal.loads(data)
    doc["binds"] = [SimpleNamespace(**b) for b in doc["binds"]]
    spec: Any = SimpleNamespace(**doc)
    return spec  # type: ignore[no-any-return]


def main() -> None:
    spec_fd, control_fd = int(sys.argv[1]), int(sys.argv[2])
    with os.fdopen(spec_fd, "rb") as f:
        spec = read_spec(f.read())
    control = socket.socket(fileno=control_fd)
    # If the daemon dies, this process dies, and with it the namespaces and everything in them.
    syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
    step("leave the daemon", control, leave_daemon, control_fd)
    jail(spec, control, exec_runtime)


def jail(
    spec: JailSpec,
    control: socket.socket,
    start: Callable[[JailSpec], None],
    report_fd: int = -1,
    launcher_gone: int = -1,
    preconnect: bool = False,
) -> None:
    """Steps 2 and 3, then pid 1 of the new namespaces goes on with the rest and `start`s the runtime.
    Never returns.

    This process either stays behind, waits for pid 1 and exits as it did (started by the daemon, it is
    the daemon's child), or, given `report_fd` (forked by a template, which reaps orphans as a
    subreaper), writes pid 1's pid there and leaves at once: a process that only waits would hold
    memory for the environment's whole life. Then `launcher_gone` is the read end of a pipe the
    template closes once it has reaped this process (see `environment_main`)."""
    step("join cgroups", control, join_cgroups, spec.cgroups)
    step("unshare namespaces", control, syscalls.unshare, NAMESPACES)
    # The first fork inside the environment's groups: their pids limit (or a host out of pids) refuses it.
    pid: int = step("fork pid 1 of the new namespaces", control, os.fork)
    if pid == 0:
        if report_fd >= 0:
            os.close(report_fd)
        environment_main(spec, control, start, launcher_gone, preconnect)
        os._exit(127)
    control.close()
    if report_fd >= 0:
        os.close(launcher_gone)
        os.write(report_fd, str(pid).encode())
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        # Die of the same signal, so the daemon sees what killed the runtime (SIGKILL for an OOM kill).
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main()
