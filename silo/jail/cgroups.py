"""cgroup v1 groups of one environment: memory (swap counted), pids and cpu, plus freezer to kill all at once.

The daemon creates the groups and writes their limits before the environment starts; the jail's
first step moves the environment into them, so everything it ever forks is counted. Removing them
after the environment is gone is the daemon's job again.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu", "freezer")
PARENT = "silo"
# Lambda allows 1,024 processes and threads per environment.
PIDS_MAX = 1024
# Lambda gives one full vCPU at 1,769 MB and CPU in proportion to memory below and above it.
MB_PER_VCPU = 1769


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @property
    def cpu_shares(self) -> int:
        # Weight under contention is proportional to memory, as Lambda's CPU allocation is.
        return max(2, self.memory_mb * 1024 // MB_PER_VCPU)

    @property
    def tcp_bytes(self) -> int:
        """What the environment's TCP socket buffers may pin of kernel memory. On cgroup v1 they are not
        charged to the memory limit, only to this one, once it is set (else to nobody, up to the host's
        tcp_mem for all): a quarter of MemorySize, and 16 MiB at least, as hundreds of connections need."""
        return max(16 * 1024 * 1024, self.memory_bytes // 4)

    # No hard cap (CFS bandwidth control): shares divide the CPU under contention, and idle CPU is
    # better spent than wasted. A quota per environment also cost a fifth of the throughput with a
    # thousand environments (bandwidth accounting on every wake-up; see docs/design-notes.md).


def group_paths(env_id: str, parent: str = PARENT) -> dict[str, Path]:
    return {ctrl: ROOT / ctrl / parent / env_id for ctrl in CONTROLLERS}


def available() -> bool:
    return all((ROOT / ctrl / "cgroup.procs").exists() for ctrl in CONTROLLERS)


def _write(path: Path, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def create(env_id: str, limits: Limits, parent: str = PARENT) -> dict[str, Path]:
    """Make the environment's groups under `parent` with their limits; return their paths."""
    paths = group_paths(env_id, parent)
    for path in paths.values():
        path.mkdir(parents=True, exist_ok=True)
    mem = paths["memory"]
    _write(mem / "memory.limit_in_bytes", limits.memory_bytes)
    memsw = mem / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        # Swap counts against the same limit, so swapping out cannot stretch MemorySize.
        _write(memsw, limits.memory_bytes)
    _write(mem / "memory.swappiness", 0)
    _write(mem / "memory.kmem.tcp.limit_in_bytes", limits.tcp_bytes)
    _write(paths["pids"] / "pids.max", PIDS_MAX)
    _write(paths["cpu"] / "cpu.shares", limits.cpu_shares)
    return paths


def pids_of(paths: dict[str, Path]) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in (paths["pids"] / "cgroup.procs").read_text().split()]
    return []


def kill_all(paths: dict[str, Path]) -> None:
    """Freeze the group so nothing can fork away, kill every member, thaw so the kills land."""
    freezer = paths["freezer"] / "freezer.state"
    with contextlib.suppress(OSError):
        _write(freezer, "FROZEN")
    for pid in pids_of(paths):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        _write(freezer, "THAWED")


def set_cpu_shares(paths: dict[str, Path], shares: int) -> None:
    _write(paths["cpu"] / "cpu.shares", max(2, shares))


class Freezer:
    """Freezes and thaws one environment's group between its calls, through a descriptor kept open: a write
    costs about 4 µs that way, where opening the file each time cost 20 more. (It costs 100 µs, code
    patched on every CPU, whenever the host goes from no frozen group to one and back: `FreezerAnchor`
    keeps one frozen for the daemon's life so that never happens.)"""

    def __init__(self, group: Path) -> None:
        self._path = group / "freezer.state"
        self._fd = -1
        self.frozen = False

    def _write(self, state: bytes) -> None:
        if self._fd < 0:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC)
        os.write(self._fd, state)

    def freeze(self) -> None:
        if not self.frozen:
            self._write(b"FROZEN")
            self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self._write(b"THAWED")
            self.frozen = False

    def forget(self) -> None:
        """The group was thawed behind its back (`kill_all` thaws so that its kills land)."""
        self.frozen = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


ANCHOR = "frozen-anchor"


class FreezerAnchor:
    """An empty freezer group kept frozen while the daemon runs. The kernel switches its freezer code on
    when the first group of the host freezes and off when the last thaws, patching code on every CPU each
    time (100 µs of the caller's CPU); with this one always frozen, freezing an idle environment and
    thawing it for its next call cost about 4 µs each."""

    def __init__(self, parent: str) -> None:
        self.path = ROOT / "freezer" / parent / ANCHOR
        self.path.mkdir(parents=True, exist_ok=True)
        _write(self.path / "freezer.state", "FROZEN")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            _write(self.path / "freezer.state", "THAWED")
        with contextlib.suppress(OSError):
            self.path.rmdir()


class MemoryGauge:
    """Reads one memory counter of a group. `keep_open`: through a descriptor kept open, for a counter
    read on every call (REPORT's Max Memory Used), where opening the file each time cost more than the
    rest of the read; each descriptor kept counts against the daemon's open-files limit, though."""

    def __init__(self, group: Path, name: str, keep_open: bool = True) -> None:
        self._path = group / name
        self._fd = -1
        self._keep_open = keep_open

    def mib(self) -> float | None:
        try:
            if self._fd < 0:
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            return int(os.pread(self._fd, 32, 0)) / (1024 * 1024)
        except (OSError, ValueError):
            return None
        finally:
            if not self._keep_open:
                self.close()

    def mb(self) -> int | None:
        """Whole MB, rounded up, as REPORT's Max Memory Used shows it."""
        mib = self.mib()
        return None if mib is None else math.ceil(mib)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def oom_killed(paths: dict[str, Path]) -> bool:
    with contextlib.suppress(OSError):
        for line in (paths["memory"] / "memory.oom_control").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value) > 0
    return False


# What may stay charged to an emptied memory group for it to be used again: kernel objects its environment
# made that outlive it until the kernel frees them (its network namespace goes in the background). Seen:
# 8 to 250 KiB. The next environment's peak (REPORT's Max Memory Used) may count it until then.
REUSE_MAX_LEFT_BYTES = 1 << 20
# Counters of the memory group that start again from zero for its next environment.
_RESET_COUNTERS = (
    "memory.max_usage_in_bytes",
    "memory.memsw.max_usage_in_bytes",
    "memory.failcnt",
    "memory.memsw.failcnt",
    "memory.kmem.tcp.max_usage_in_bytes",
    "memory.kmem.tcp.failcnt",
)


def _empty(paths: dict[str, Path]) -> bool:
    for path in paths.values():
        try:
            if (path / "cgroup.procs").read_text().strip():
                return False
        except FileNotFoundError:
            continue
    return True


def reset_for_reuse(paths: dict[str, Path], limits: Limits, timeout_s: float = 5.0) -> bool:
    """Make the groups of an environment that is gone fit for another environment of the same limits, so
    they need not be removed: removing a memory group costs the kernel a walk over every memory-aware
    cache list on the host (one per mounted filesystem, and each environment mounts four), so with
    thousands of environments each removal took milliseconds of CPU. True when the groups are empty,
    thawed, with no OOM kill on record (that counter cannot be reset) and next to nothing still charged,
    and their peak and failure counters are back at zero and their CPU weight at that of `limits`; False
    when they should be removed instead. (`memory.force_empty` would not lower what stays: it is kernel
    objects not yet freed, and its walk over every filesystem's caches cost as much as the removal.)"""
    deadline = time.monotonic() + timeout_s
    while not _empty(paths):
        if time.monotonic() > deadline:
            return False
        kill_all(paths)
        time.sleep(0.01)
    if oom_killed(paths):
        return False
    mem = paths["memory"]
    try:
        if (paths["freezer"] / "freezer.state").read_text().strip() != "THAWED":
            return False
        for name in _RESET_COUNTERS:
            counter = mem / name
            if counter.exists():
                _write(counter, 0)
        # Its environment's tenant may have had its CPU weight divided (silo.router.limits.cpu_divisor).
        _write(paths["cpu"] / "cpu.shares", limits.cpu_shares)
        return int((mem / "memory.usage_in_bytes").read_text()) <= REUSE_MAX_LEFT_BYTES
    except (OSError, ValueError):
        return False


def remove(paths: dict[str, Path], timeout_s: float = 5.0) -> bool:
    """Remove the groups once empty; True when all are gone."""
    deadline = time.monotonic() + timeout_s
    remaining = dict(paths)
    while remaining:
        for ctrl, path in list(remaining.items()):
            try:
                path.rmdir()
                del remaining[ctrl]
            except FileNotFoundError:
                del remaining[ctrl]
            except OSError:
                pass
        if not remaining:
            return True
        if time.monotonic() > deadline:
            return False
        kill_all(paths)
        time.sleep(0.01)
    return True
