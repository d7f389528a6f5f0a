"""Thin ctypes wrappers for the system calls Python 3.11 lacks (`unshare` and `setns` arrive in 3.12).

Each wrapper checks errno and raises `OSError` naming the call and its arguments, so a failed step
says which step failed. This module runs in freshly forked children: it must not allocate locks or
start threads, and it imports nothing from the daemon.
"""

from __future__ import annotations

import ctypes
import errno
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x})",
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount({target!r})")


MNT_DETACH = 2
SYS_PIVOT_ROOT = 155  # x86_64; glibc has no wrapper
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39

_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]


def pivot_root(new_root: str, put_old: str) -> None:
    _check(
        _libc.syscall(SYS_PIVOT_ROOT, ctypes.c_char_p(new_root.encode()), ctypes.c_char_p(put_old.encode())),
        f"pivot_root({new_root!r}, {put_old!r})",
    )


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    result = int(_libc.prctl(option, arg2, arg3, arg4, arg5))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg2}): {os.strerror(err)}")
    return result


RLIMIT_NOFILE = 7


class _Rlimit(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]


def setrlimit(resource: int, soft: int, hard: int) -> None:
    # ctypes, not the resource module: one import less at every environment's start.
    _check(_libc.setrlimit(resource, ctypes.byref(_Rlimit(soft, hard))), f"setrlimit({resource}, {soft}, {hard})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), f"sethostname({name!r})")


# seccomp: installing a compiled filter (silo.jail.seccomp compiles it from the policy).
SECCOMP_MAX_INSNS = 4096  # BPF_MAXINSNS: the kernel refuses longer programs
_SOCK_FILTER_SIZE = 8  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}
_NR_SECCOMP = 317  # x86_64
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_install(filter: bytes) -> None:
    """Install a compiled filter on every thread of the calling process; irreversible."""
    count, rest = divmod(len(filter), _SOCK_FILTER_SIZE)
    if rest or not 0 < count <= SECCOMP_MAX_INSNS:
        raise ValueError(f"seccomp: {len(filter)} bytes is not an array of 1-{SECCOMP_MAX_INSNS} sock_filter")
    # The seccomp syscall number and the filter's arch check are x86_64's; anywhere else 317 is another call.
    if os.uname().machine != "x86_64":
        raise OSError(errno.ENOSYS, "seccomp: this filter is for x86_64 only")
    # The kernel takes a filter without CAP_SYS_ADMIN only under no_new_privs, which keeps a filtered process
    # from misleading a setuid program it execs. The jail has set it already; setting it again is harmless.
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    program = ctypes.create_string_buffer(filter, len(filter))
    fprog = _SockFprog(count, ctypes.addressof(program))
    # TSYNC puts the filter on every thread, not only the caller's; on failure it returns a thread id, not -1.
    result = _libc.syscall(
        ctypes.c_long(_NR_SECCOMP),
        ctypes.c_long(_SECCOMP_SET_MODE_FILTER),
        ctypes.c_long(_SECCOMP_FILTER_FLAG_TSYNC),
        ctypes.byref(fprog),
    )
    if result > 0:
        raise OSError(errno.EBUSY, f"seccomp(SET_MODE_FILTER, TSYNC): thread {result} could not be synchronised")
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp(SET_MODE_FILTER, TSYNC): {os.strerror(err)}")
