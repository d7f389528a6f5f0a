"""The cgroups of environments, on either hierarchy the host runs: one interface, two implementations.

Every environment lives in cgroups of its own: its memory (MemorySize, swap counted), its processes
(1,024) and its CPU weight (in proportion to memory), with a way to freeze it between calls and to kill
everything in it at once, however it detached. Hosts run cgroup v1 (a hierarchy per controller, older
distributions and these development machines) or v2 (one unified hierarchy: Debian 12, Ubuntu 22.04 and
later, Fedora, RHEL 9). `open_hierarchy` detects which and returns a `Hierarchy`; what uses it (the jail,
gVisor, the spare groups) never knows which one it has. `silo.jail.cgroup_v1` and `silo.jail.cgroup_v2`
say which file does what on each.

The daemon creates the groups and writes their limits before the environment starts; the jail's first
step moves the environment into them (`Group.join`), so everything it ever forks is counted. Removing
them after the environment is gone is the daemon's job again.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ROOT = Path("/sys/fs/cgroup")
# Every daemon's groups live under this name, each under its own instance (silo.sandbox.identity).
PARENT = "silo"
# Lambda allows 1,024 processes and threads per environment.
PIDS_MAX = 1024
# Lambda gives one full vCPU at 1,769 MB and CPU in proportion to memory below and above it.
MB_PER_VCPU = 1769
# What may stay charged to an emptied memory group for it to be used again: kernel objects its environment
# made that outlive it until the kernel frees them (its network namespace goes in the background). Seen:
# 8 to 250 KiB. The next environment's peak (REPORT's Max Memory Used) may count it until then.
REUSE_MAX_LEFT_BYTES = 1 << 20


class CgroupUnavailable(Exception):
    """The host's cgroups cannot hold environments as silo needs; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024

    @property
    def cpu_shares(self) -> int:
        """v1's weight (`cpu.shares`, 2 to 262,144, 1,024 a vCPU): under contention, CPU in proportion to
        memory, as Lambda allocates it."""
        return max(2, self.memory_mb * 1024 // MB_PER_VCPU)

    @property
    def cpu_weight(self) -> int:
        """v2's weight (`cpu.weight`, 1 to 10,000), the same proportion: 1,000 a vCPU, so that 10 GB (5.8
        vCPUs) still fits and a divided 128 MB function keeps a weight above 1."""
        return min(10_000, max(1, self.memory_mb * 1000 // MB_PER_VCPU))

    @property
    def tcp_bytes(self) -> int:
        """What the environment's TCP socket buffers may pin of kernel memory. On cgroup v1 they are not
        charged to the memory limit, only to this one, once it is set (else to nobody, up to the host's
        tcp_mem for all): a quarter of MemorySize, and 16 MiB at least, as hundreds of connections need.
        On v2 they are part of `memory.max`."""
        return max(16 * 1024 * 1024, self.memory_bytes // 4)

    # No hard cap (CFS bandwidth control): weights divide the CPU under contention, and idle CPU is
    # better spent than wasted. A quota per environment also cost a fifth of the throughput with a
    # thousand environments (bandwidth accounting on every wake-up; see docs/design-notes.md).


class Switch(Protocol):
    """Freezes and thaws one environment (`Group.freezer`)."""

    frozen: bool

    def freeze(self) -> None: ...

    def thaw(self) -> None: ...

    def forget(self) -> None:
        """The group was thawed behind its back (killing everything in it thaws it so the kills land)."""
        ...

    def close(self) -> None: ...


class Gauge(Protocol):
    def mib(self) -> float | None: ...

    def mb(self) -> int | None: ...

    def close(self) -> None: ...


class Group(Protocol):
    """The cgroups of one environment."""

    name: str
    limits: Limits

    def join_paths(self) -> dict[str, str]:
        """The directories whose `cgroup.procs` the jail writes itself into (one per v1 controller; one on v2)."""
        ...

    def runsc_path(self) -> str:
        """The group as runsc's `cgroupsPath` names it."""
        ...

    def pids(self) -> list[int]: ...

    def kill_all(self) -> None:
        """Kill every process in the group at once, frozen or not; nothing can fork away meanwhile."""
        ...

    def freezer(self) -> Switch: ...

    def usage_gauge(self) -> Gauge:
        """Memory the group holds now (read every few seconds at most)."""
        ...

    def peak_gauge(self) -> Gauge:
        """Peak memory of the group (read on every call, for REPORT's Max Memory Used)."""
        ...

    def oom_killed(self) -> bool:
        """Whether the kernel killed something of the group for running out of its memory."""
        ...

    def divide_cpu(self, divisor: int) -> None:
        """1/`divisor` of the weight its MemorySize gives (silo.router.limits.cpu_divisor)."""
        ...

    def reset_for_reuse(self, timeout_s: float = 5.0) -> bool:
        """Make the group of an environment that is gone fit for another of the same limits: True when it
        is empty, thawed, with no OOM kill on record and next to nothing still charged, and its peak and
        weight start again; False when it should be removed instead."""
        ...

    def renamed(self, name: str) -> Group:
        """The group under `name` where the hierarchy allows renaming (v1), else itself; raises OSError."""
        ...

    def remove(self, timeout_s: float = 5.0) -> bool:
        """Remove the group once empty (killing what is left); True when it is gone."""
        ...


class Hierarchy(Protocol):
    """Where one daemon's groups live, on the host's hierarchy."""

    version: int
    # Whether a group given back can serve another environment (`Group.reset_for_reuse` can succeed).
    reuses: bool

    def describe(self) -> str:
        """Where the groups are, for a person."""
        ...

    def create(self, name: str, limits: Limits, pids_max: int = PIDS_MAX) -> Group:
        """A new group with `limits`, made now (blocking: a few filesystem writes)."""
        ...

    def group(self, name: str) -> Group:
        """The group of that name under this daemon's parent, made or not (to remove what a run left)."""
        ...

    def leftovers(self) -> list[Group]:
        """Groups found under this daemon's parent: what a run of it that died left."""
        ...

    def anchor(self) -> None:
        """What freezing cheaply needs for the daemon's life (v1: one group kept frozen)."""
        ...

    def close(self) -> None:
        """Remove the daemon's own parent groups, once empty."""
        ...


def write(path: Path | str, value: str | int) -> None:
    with open(path, "w") as f:
        f.write(str(value))


class FdSwitch:
    """Freezes and thaws one group through a descriptor kept open: a write costs about 4 µs that way, where
    opening the file each time cost 20 more."""

    def __init__(self, path: Path, frozen: bytes, thawed: bytes) -> None:
        self._path = path
        self._frozen = frozen
        self._thawed = thawed
        self._fd = -1
        self.frozen = False

    def _write(self, state: bytes) -> None:
        if self._fd < 0:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CLOEXEC)
        os.write(self._fd, state)

    def freeze(self) -> None:
        if not self.frozen:
            self._write(self._frozen)
            self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self._write(self._thawed)
            self.frozen = False

    def forget(self) -> None:
        self.frozen = False

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class MemoryGauge:
    """Reads one memory counter of a group. `keep_open`: through a descriptor kept open, for a counter
    read on every call (REPORT's Max Memory Used), where opening the file each time cost more than the
    rest of the read; each descriptor kept counts against the daemon's open-files limit, though."""

    def __init__(self, path: Path, keep_open: bool = True) -> None:
        self._path = path
        self._fd = -1
        self._keep_open = keep_open

    def _bytes(self) -> int:
        if self._fd < 0:
            self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        return int(os.pread(self._fd, 32, 0))

    def mib(self) -> float | None:
        try:
            return self._bytes() / (1024 * 1024)
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


def version(root: Path = ROOT) -> int | None:
    """2 on a unified hierarchy, 1 when v1's controllers are mounted, None when neither is usable."""
    if (root / "cgroup.controllers").exists():
        return 2
    from silo.jail import cgroup_v1

    return 1 if cgroup_v1.available(root) else None


def open_hierarchy(parent: str, root: Path = ROOT, base: str = "") -> Hierarchy:
    """The daemon's groups under `parent` (`silo/<instance>`) on the host's hierarchy; `base`: on v2, the
    group to make them under instead of the one found (see `silo.jail.cgroup_v2.base_group`). Raises
    CgroupUnavailable, saying why, when neither hierarchy can hold environments."""
    found = version(root)
    if found == 2:
        from silo.jail import cgroup_v2

        return cgroup_v2.V2Hierarchy(parent, root, base)
    if base:
        raise CgroupUnavailable(
            f"a cgroup base ({base}) was given, but {root} is not a cgroup v2 hierarchy; it is only for v2 hosts"
        )
    if found == 1:
        from silo.jail import cgroup_v1

        return cgroup_v1.V1Hierarchy(parent, root)
    raise CgroupUnavailable(
        f"no usable cgroups under {root}: neither cgroup v2 (cgroup.controllers) nor the v1 controllers "
        "memory, pids, cpu and freezer are mounted there; mount them, or run silo on a host that has them"
    )
