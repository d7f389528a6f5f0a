"""The seccomp filter: the policy data, the compiled program, and a child process that attacks it.

The attack runs in a subprocess because installing a filter is irreversible; each refused call runs in
a grandchild of its own so that what it does when it succeeds (a new namespace, a tracer, a persona)
or a kill stays there. The same checks run without the filter to show that they can fail.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from silo.jail import seccomp, syscalls

ROOT = Path(__file__).resolve().parents[2]
AUDIT_ARCH_X86_64 = 0xC000003E
HEADERS = [Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"), Path("/usr/include/asm/unistd_64.h")]

MUST_DENY = """
    mount umount2 pivot_root chroot ptrace process_vm_readv process_vm_writev kexec_load kexec_file_load bpf
    perf_event_open keyctl add_key request_key unshare setns init_module finit_module delete_module reboot swapon
    swapoff acct quotactl open_by_handle_at name_to_handle_at lookup_dcookie userfaultfd fsopen fsmount fsconfig
    fspick move_mount open_tree mount_setattr iopl ioperm settimeofday clock_settime clock_adjtime adjtimex syslog
    vhangup uselib nfsservctl kcmp io_uring_setup io_uring_enter io_uring_register pidfd_getfd
""".split()

needs_x86_64 = pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter is x86_64 only")


# --- the policy data ---------------------------------------------------------------------------


def _data() -> Any:
    return json.loads(seccomp.DEFAULT_POLICY.read_text())


def test_default_policy_loads_and_denies_the_escape_surface() -> None:
    policy = seccomp.load_policy()
    unconditional = {r.name: r for r in policy.rules if not r.when}
    assert set(MUST_DENY) <= set(unconditional)
    assert all(unconditional[name].action == seccomp.Action("errno", errno.EPERM) for name in MUST_DENY)
    assert {r.name for r in policy.rules if r.when} == {"personality", "clone", "socket", "socketpair", "ioctl"}
    assert policy.default == seccomp.Action("allow")
    assert policy.audit_arch == AUDIT_ARCH_X86_64
    assert all(r.reason for r in policy.rules)


def test_syscall_numbers_match_the_system_headers() -> None:
    header = next((h for h in HEADERS if h.exists()), None)
    if header is None:
        pytest.skip("no asm/unistd_64.h on this machine")
    known = {m[1]: int(m[2]) for m in re.finditer(r"^#define __NR_(\w+)\s+(\d+)", header.read_text(), re.M)}
    wrong = {r.name: (r.nr, known.get(r.name)) for r in seccomp.load_policy().rules if known.get(r.name) != r.nr}
    assert wrong == {}
    assert known["seccomp"] == syscalls._NR_SECCOMP


def _mutate(path: list[Any], value: Any) -> Any:
    data = _data()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_mutate(["rules", 0, "action"], "deny"), "unknown action"),
        (_mutate(["rules", 0, "action"], "errno:ENOTANERRNO"), "unknown errno"),
        (_mutate(["default"], "errno"), "unknown action"),
        (_mutate(["rules", 1, "nr"], 165), "duplicate nr"),
        (_mutate(["rules", 1, "name"], "mount"), "duplicate name"),
        (_mutate(["rules", 0, "nr"], 0x40000000 | 165), "x86_64 syscall number"),
        (_mutate(["rules", 0, "reason"], ""), "non-empty"),
        (_mutate(["rules", 0, "severity"], "high"), "unknown"),
        (_mutate(["arch", "audit_arch"], "0x40000003"), "only x86_64"),
        (_mutate(["arch", "name"], "aarch64"), "only x86_64"),
        (_mutate(["x32", "syscall_bit"], "0x1_0000_0000"), "32 bits"),
        (_mutate(["rules", -1, "when"], []), "non-empty list"),
        (_mutate(["rules", -1, "when", 0, "arg"], 6), "arg must be"),
        (_mutate(["rules", -1, "when", 0], {"arg": 1, "is": [1]}), "unknown"),
        (_mutate(["rules", -1, "when", 0], {"arg": 1, "in": [1], "not_in": [2]}), "exactly one"),
        (_mutate(["rules", -1, "when", 0], {"arg": 1, "in": list(range(33))}), "values"),
        (_mutate(["rules", -1, "when", 0], {"arg": 1, "any_bits": 0}), "never matches"),
        (_mutate(["rules"], {}), "list"),
    ],
)
def test_parse_policy_refuses_malformed_data(data: Any, message: str) -> None:
    with pytest.raises(seccomp.PolicyError, match=message):
        seccomp.parse_policy(data)


def test_load_policy_refuses_duplicate_json_keys(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(
        seccomp.DEFAULT_POLICY.read_text().replace('"default": "allow",', '"default": "allow", "default": 1,')
    )
    with pytest.raises(seccomp.PolicyError, match="duplicate key"):
        seccomp.load_policy(path)


# --- the compiled program, run by a small interpreter of the opcodes the compiler emits ------------

EPERM = seccomp.RET_ERRNO | errno.EPERM
ALLOW = seccomp.RET_ALLOW
KILL = seccomp.RET_KILL_PROCESS


def run_bpf(program: bytes, nr: int, args: tuple[int, ...] = (), arch: int = AUDIT_ARCH_X86_64) -> int:
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args, *[0] * (6 - len(args)))
    insns = list(struct.iter_unpack("<HBBI", program))
    a, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == seccomp.LD_W_ABS:
            a = struct.unpack_from("<I", data, k)[0]
        elif code == seccomp.ALU_AND_K:
            a &= k
        elif code == seccomp.JEQ_K:
            pc += jt if a == k else jf
        elif code == seccomp.JSET_K:
            pc += jt if a & k else jf
        elif code == seccomp.RET_K:
            return int(k)
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


@pytest.fixture(scope="module")
def program() -> bytes:
    return seccomp.compile_filter(seccomp.load_policy())


def test_program_structure(program: bytes) -> None:
    insns = list(struct.iter_unpack("<HBBI", program))
    assert len(program) % 8 == 0 and len(insns) <= seccomp.MAX_INSNS
    assert insns[0] == (seccomp.LD_W_ABS, 0, 0, seccomp.OFFSET_ARCH)  # the arch first
    assert insns[1] == (seccomp.JEQ_K, 1, 0, AUDIT_ARCH_X86_64)
    assert insns[2] == (seccomp.RET_K, 0, 0, KILL)
    assert insns[-1] == (seccomp.RET_K, 0, 0, ALLOW)
    for pc, (code, jt, jf, _) in enumerate(insns):
        if code in (seccomp.JEQ_K, seccomp.JSET_K):
            assert pc + 1 + max(jt, jf) < len(insns)
    assert {code for code, *_ in insns} <= {
        seccomp.LD_W_ABS,
        seccomp.ALU_AND_K,
        seccomp.JEQ_K,
        seccomp.JSET_K,
        seccomp.RET_K,
    }


def test_every_rule_without_arguments_returns_its_action(program: bytes) -> None:
    for rule in seccomp.load_policy().rules:
        if not rule.when:
            assert run_bpf(program, rule.nr) == rule.action.ret, rule.name
    assert run_bpf(program, 435) == seccomp.RET_ERRNO | errno.ENOSYS  # clone3


@pytest.mark.parametrize(
    ("nr", "args", "expected"),
    [
        (39, (), ALLOW),  # getpid
        (0, (3, 0, 10), ALLOW),  # read
        (41, (2, 1 | 0o4000 | 0o2000000), ALLOW),  # socket(AF_INET, SOCK_STREAM|NONBLOCK|CLOEXEC)
        (41, (10, 2), ALLOW),  # AF_INET6, SOCK_DGRAM
        (41, (1, 5), ALLOW),  # AF_UNIX, SOCK_SEQPACKET
        (41, (16, 3 | 0o2000000), EPERM),  # AF_NETLINK, SOCK_RAW|CLOEXEC
        (41, (16, 2), ALLOW),  # AF_NETLINK, SOCK_DGRAM (getaddrinfo's AI_ADDRCONFIG)
        (41, (17, 2), EPERM),  # AF_PACKET, SOCK_DGRAM
        (41, (2, 3), EPERM),  # AF_INET, SOCK_RAW
        (41, (2, 10), EPERM),  # AF_INET, SOCK_PACKET (the kernel turns it into AF_PACKET)
        (41, (40, 1), EPERM),  # AF_VSOCK reaches the host past any network namespace
        (41, (2 | 1 << 32, 1), ALLOW),  # the high word is ignored, as the kernel ignores it for an int
        (53, (1, 1), ALLOW),  # socketpair(AF_UNIX, SOCK_STREAM)
        (53, (17, 3), EPERM),
        (56, (signal.SIGCHLD,), ALLOW),  # fork
        (56, (0x3D0F00,), ALLOW),  # pthread_create's flags
        (56, (0x10000000 | signal.SIGCHLD,), EPERM),  # CLONE_NEWUSER
        (56, (0x40000000,), EPERM),  # CLONE_NEWNET
        (56, (0x00020000,), EPERM),  # CLONE_NEWNS
        (135, (0,), ALLOW),  # personality(PER_LINUX)
        (135, (0xFFFFFFFF,), ALLOW),  # personality query
        (135, (0x0040000,), EPERM),  # ADDR_NO_RANDOMIZE
        (135, (0x0400000,), EPERM),  # READ_IMPLIES_EXEC
        (16, (0, 0x5401), ALLOW),  # ioctl TCGETS
        (16, (0, 0x5412), EPERM),  # TIOCSTI
        (16, (0, 0x541C), EPERM),  # TIOCLINUX
        (0x40000000 | 39, (), KILL),  # x32 getpid
        (-1, (), KILL),  # the x32 bit is set in -1 too
    ],
)
def test_argument_rules(program: bytes, nr: int, args: tuple[int, ...], expected: int) -> None:
    assert run_bpf(program, nr, args) == expected


def test_other_arch_is_killed_whatever_the_number(program: bytes) -> None:
    assert run_bpf(program, 39, arch=0x40000003) == KILL  # AUDIT_ARCH_I386


# --- install, in child processes ---------------------------------------------------------------

CHILD = r"""
import ctypes, errno, json, os, signal, sys, threading

mode, program = sys.argv[1], bytes.fromhex(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long

def syscall(*args):
    return libc.syscall(*map(L, args))

def err(result):
    return ctypes.get_errno() if result < 0 else 0

# A thread that exists before the install: TSYNC must reach it too.
ready, go, seen = threading.Event(), threading.Event(), []
def early():
    ready.set(); go.wait()
    seen.append(open("/proc/thread-self/status").read())
early_thread = threading.Thread(target=early)
early_thread.start(); ready.wait()

if mode == "filtered":
    from silo.jail import seccomp
    seccomp.install(program)
go.set(); early_thread.join()

def work():
    import asyncio, hashlib, mmap, select, socket, sqlite3, ssl, subprocess, time
    checks = {}
    def check(name, fn):
        try:
            checks[name] = fn()
        except BaseException as exc:
            checks[name] = repr(exc)
    check("ssl", lambda: ssl.create_default_context() is not None)
    check("sqlite3", lambda: sqlite3.connect(":memory:").execute("select 41 + 1").fetchone() == (42,))
    check("hashlib", lambda: len(hashlib.sha256(b"x").hexdigest()) == 64)
    def thread():
        out = []
        t = threading.Thread(target=lambda: out.append(1)); t.start(); t.join()
        return out == [1]
    check("thread", thread)
    check("subprocess_true", lambda: subprocess.run(["/bin/true"]).returncode == 0)
    def exec_keeps_filter():
        out = subprocess.run([sys.executable, "-c", "print(open('/proc/self/status').read())"],
                             capture_output=True, text=True, check=True).stdout
        return [line for line in out.splitlines() if line.startswith("Seccomp:")][0].split()[1]
    checks["exec_seccomp_mode"] = exec_keeps_filter()
    def tcp():
        srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
        cli = socket.create_connection(srv.getsockname()); conn, _ = srv.accept()
        cli.sendall(b"ping"); return conn.recv(4) == b"ping"
    check("tcp_loopback", tcp)
    def udp():
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(("127.0.0.1", 0))
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.sendto(b"x", a.getsockname())
        return a.recv(1) == b"x"
    check("udp_loopback", udp)
    def unix():
        a, b = socket.socketpair(); a.sendall(b"x"); return b.recv(1) == b"x"
    check("unix_socketpair", unix)
    check("getaddrinfo", lambda: bool(socket.getaddrinfo("localhost", 80, flags=socket.AI_ADDRCONFIG)))
    def fork():
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    check("fork", fork)
    def raw_clone():  # clone(SIGCHLD) straight through the syscall: no namespace flag, so allowed
        pid = syscall(56, signal.SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            os._exit(7)
        return pid > 0 and os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
    check("clone_plain", raw_clone)
    def mm():
        m = mmap.mmap(-1, 1 << 20); m[:2] = b"ok"; return m[:2] == b"ok"
    check("mmap", mm)
    check("time", lambda: time.time() > 0 and time.monotonic() > 0 and time.sleep(0.001) is None)
    def epoll():
        r, w = os.pipe(); ep = select.epoll(); ep.register(r, select.EPOLLIN); os.write(w, b"x")
        return ep.poll(1) == [(r, select.EPOLLIN)]
    check("epoll", epoll)
    def signals():
        got = []
        signal.signal(signal.SIGUSR1, lambda *_: got.append(1)); os.kill(os.getpid(), signal.SIGUSR1)
        return got == [1]
    check("signals", signals)
    check("asyncio", lambda: asyncio.run(asyncio.sleep(0, result=True)))
    check("personality_query", lambda: libc.personality(ctypes.c_ulong(0xFFFFFFFF)) >= 0)
    return checks

def packet_socket():
    fd = libc.socket(17, 3, 0)  # AF_PACKET, SOCK_RAW
    return err(fd)

def int80():
    # i386 getpid via int 0x80: same process, other syscall table, other arch in seccomp_data.
    import mmap
    code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"  # mov eax, 20; int 0x80; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    fn = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    return 0 if fn() == os.getpid() else 1

def clone_newnet():
    pid = syscall(56, 0x40000000 | signal.SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
    return err(pid)

DENIED = {
    "mount": lambda: err(libc.mount(b"none", b"/nonexistent-silo-test", b"tmpfs", L(0), None)),
    "umount2": lambda: err(libc.umount2(b"/nonexistent-silo-test", 0)),
    "unshare_newuser": lambda: err(libc.unshare(0x10000000)),
    "unshare_newns": lambda: err(libc.unshare(0x00020000)),
    "setns": lambda: err(libc.setns(-1, 0)),
    "ptrace_traceme": lambda: err(libc.ptrace(L(0), L(0), L(0), L(0))),
    "socket_packet_raw": packet_socket,
    "socket_inet_raw": lambda: err(libc.socket(2, 3, 1)),  # AF_INET, SOCK_RAW, IPPROTO_ICMP
    "socket_inet_sock_packet": lambda: err(libc.socket(2, 10, 0)),
    "bpf": lambda: err(syscall(321, 5, 0, 0)),  # BPF_PROG_LOAD with no attributes
    "keyctl": lambda: err(syscall(250, 0, -3, 0)),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "perf_event_open": lambda: err(syscall(298, 0, 0, -1, -1, 0)),
    "io_uring_setup": lambda: err(syscall(425, 1, 0)),
    "clone_newnet": clone_newnet,
    "clone3": lambda: err(syscall(435, 0, 0)),
    "personality_no_aslr": lambda: err(libc.personality(ctypes.c_ulong(0x0040000))),
    "ioctl_tiocsti": lambda: err(libc.ioctl(-1, L(0x5412), None)),
    "x32_getpid": lambda: err(syscall(0x40000000 | 39)),
    "int80_getpid": int80,
}

def in_grandchild(fn):
    pid = os.fork()
    if pid == 0:
        try:
            code = fn()
        except BaseException:
            code = 255
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

mode_line = [line for line in seen[0].splitlines() if line.startswith("Seccomp:")][0]
result = {"early_thread_seccomp_mode": mode_line.split()[1], "work": work()}
result["denied"] = {name: in_grandchild(fn) for name, fn in DENIED.items()}
print(json.dumps(result))
"""

# exit status of the grandchild that made the call: an errno, or minus the signal that killed it
EXPECTED = {
    "mount": errno.EPERM,
    "umount2": errno.EPERM,
    "unshare_newuser": errno.EPERM,
    "unshare_newns": errno.EPERM,
    "setns": errno.EPERM,
    "ptrace_traceme": errno.EPERM,
    "socket_packet_raw": errno.EPERM,
    "socket_inet_raw": errno.EPERM,
    "socket_inet_sock_packet": errno.EPERM,
    "bpf": errno.EPERM,
    "keyctl": errno.EPERM,
    "perf_event_open": errno.EPERM,
    "io_uring_setup": errno.EPERM,
    "clone_newnet": errno.EPERM,
    "clone3": errno.ENOSYS,
    "personality_no_aslr": errno.EPERM,
    "ioctl_tiocsti": errno.EPERM,
    "x32_getpid": -signal.SIGSYS,
    "int80_getpid": -signal.SIGSYS,
}


def _child(mode: str, program: bytes) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, program.hex()], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture(scope="module")
def filtered(program: bytes) -> dict[str, Any]:
    return _child("filtered", program)


@pytest.fixture(scope="module")
def unfiltered(program: bytes) -> dict[str, Any]:
    return _child("unfiltered", program)


@needs_x86_64
def test_ordinary_work_succeeds_under_the_filter(filtered: dict[str, Any]) -> None:
    work = filtered["work"]
    assert {name: ok for name, ok in work.items() if ok is not True and name != "exec_seccomp_mode"} == {}


@needs_x86_64
def test_filter_reaches_earlier_threads_and_survives_exec(filtered: dict[str, Any], unfiltered: dict[str, Any]) -> None:
    assert filtered["early_thread_seccomp_mode"] == "2"  # SECCOMP_MODE_FILTER
    assert filtered["work"]["exec_seccomp_mode"] == "2"
    assert unfiltered["early_thread_seccomp_mode"] == unfiltered["work"]["exec_seccomp_mode"] == "0"


@needs_x86_64
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_denied_call_is_refused(filtered: dict[str, Any], unfiltered: dict[str, Any], name: str) -> None:
    if name == "int80_getpid" and unfiltered["denied"][name] == -signal.SIGSEGV:
        pytest.skip("this kernel has no i386 entry (int 0x80 faults before seccomp sees it)")
    assert filtered["denied"][name] == EXPECTED[name]


@needs_x86_64
@pytest.mark.skipif(os.geteuid() != 0, reason="without root most of these calls fail with EPERM anyway")
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_denied_call_is_not_refused_without_the_filter(unfiltered: dict[str, Any], name: str) -> None:
    # Proves the attack can fail: as root, without the filter, the kernel answers something else.
    assert unfiltered["denied"][name] != EXPECTED[name]


def test_install_refuses_a_malformed_program() -> None:
    with pytest.raises(ValueError, match="sock_filter"):
        seccomp.install(b"\x06\x00\x00\x00\x00\x00\xff")
    with pytest.raises(ValueError, match="sock_filter"):
        seccomp.install(b"")


@needs_x86_64
def test_install_names_the_failing_step() -> None:
    # A jump past the end is refused by the kernel's checker: install must raise, naming seccomp.
    bad = struct.pack("<HBBI", seccomp.JEQ_K, 5, 0, 0) + struct.pack("<HBBI", seccomp.RET_K, 0, 0, ALLOW)
    script = (
        "from silo.jail import seccomp\n"
        "try:\n"
        f"    seccomp.install({bad!r})\n"
        "except OSError as exc:\n"
        "    print(exc.errno, exc.strerror)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{errno.EINVAL} seccomp(SET_MODE_FILTER, TSYNC)")
