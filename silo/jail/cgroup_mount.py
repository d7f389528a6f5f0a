"""The cgroup2 mount's `favordynmods` option, which makes moving a process between groups cheap.

Moving a process into a v2 group takes the hierarchy-wide threadgroup lock for writing, and by default
that waits for an RCU grace period; `favordynmods` (kernel 6.0+) makes the lock a plain one, at a small
cost to every fork and exit on the host. bench/cgroup_ops.py measured a join at a third of its cost
with it. It is a mount option of the hierarchy, so setting it is a reconfiguration of the host's
mount: silo does it at start when its setting `cgroup_favordynmods` is on (the default), and says so.

The reconfiguration uses the new mount API (`fspick` + `fsconfig`) rather than `mount -o remount`:
a remount through mount(2) would also reset the mount's own flags (nosuid, nodev, noexec) unless they
were given again, and the kernel applies every cgroup2 option anew on a reconfiguration (an option not
given is turned off), so the options the mount has now are given again with the new one.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

# The same numbers on x86_64 and arm64: the new mount API came after the two tables were unified.
SYS_FSCONFIG = 431
SYS_FSPICK = 433
AT_FDCWD = -100
FSPICK_CLOEXEC = 1
FSCONFIG_SET_FLAG = 0
FSCONFIG_CMD_RECONFIGURE = 7
FLAG = "favordynmods"
# Shown among the superblock's options but not options of cgroup2's to give again.
NOT_GIVEN = frozenset({"rw", "ro"})

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def mount_options(root: Path, mountinfo: str = "/proc/self/mountinfo") -> frozenset[str] | None:
    """The superblock options of the cgroup2 mount at `root`, or None if no cgroup2 is mounted there."""
    found = None
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[4] == str(root) and fields[sep + 1] == "cgroup2":
                found = frozenset(fields[sep + 3].split(","))  # a later mount at the same place covers it
    return found


def _syscall(number: int, *args: object) -> int:
    result = int(_libc.syscall(number, *args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def set_favordynmods(root: Path, on: bool = True) -> str:
    """Turn `favordynmods` on (or off) for the cgroup2 hierarchy mounted at `root`, keeping its other
    options. Returns what happened, as a sentence for the log; never raises: the option is about speed,
    and a host that refuses it (a kernel before 6.0, a container's cgroup namespace) still isolates."""
    options = mount_options(root)
    if options is None:
        return f"{root} is not a cgroup2 mount; {FLAG} does not apply"
    if (FLAG in options) == on:
        return f"{root} is mounted with{'' if on else 'out'} {FLAG} already"
    wanted = sorted(o for o in options if o not in NOT_GIVEN and o != FLAG) + ([FLAG] if on else [])
    try:
        fd = _syscall(SYS_FSPICK, AT_FDCWD, str(root).encode(), FSPICK_CLOEXEC)
    except OSError as exc:
        return f"could not reconfigure the cgroup2 mount at {root} ({exc.strerror}); {FLAG} left as it was"
    try:
        # Nothing changes until the last call: an option the kernel refuses leaves the mount as it was.
        for option in wanted:
            _syscall(SYS_FSCONFIG, fd, FSCONFIG_SET_FLAG, option.encode(), None, 0)
        _syscall(SYS_FSCONFIG, fd, FSCONFIG_CMD_RECONFIGURE, None, None, 0)
    except OSError as exc:
        return (
            f"the kernel refused {FLAG} for {root} ({exc.strerror}; it needs Linux 6.0 or later); "
            "moving a process into a group stays at its full cost"
        )
    finally:
        os.close(fd)
    after = mount_options(root) or frozenset()
    if (FLAG in after) != on:
        # The kernel applies cgroup2's options only from the host's cgroup namespace, silently elsewhere.
        return f"{FLAG} was not taken for {root} (silo runs in a cgroup namespace of its own?)"
    lost = sorted((options - after) - {FLAG})
    if lost:
        how = "with" if on else "without"
        return f"remounted {root} {how} {FLAG}, but it lost {', '.join(lost)}: remount it with them"
    if on:
        return f"remounted {root} with {FLAG}: moving a process into a group costs about a third"
    return f"remounted {root} without {FLAG}"
