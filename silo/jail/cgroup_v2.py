"""cgroup v2: one group per environment in the unified hierarchy, below a subtree delegated to silo.

| file | what it does |
| --- | --- |
| `cgroup.subtree_control` (the base, `silo`, `silo/<instance>`) | `+memory +pids +cpu` for the groups below |
| `memory.max` | MemorySize; TCP socket buffers and other kernel memory count in it |
| `memory.swap.max` 0 | no swapping out to stretch MemorySize |
| `memory.oom.group` 1 | an OOM kill ends the environment as a whole, not one process of it |
| `memory.events` (`oom_kill`) | Runtime.OutOfMemory |
| `memory.peak` | Max Memory Used (kernel 5.19+; before, the largest `memory.current` read) |
| `pids.max` | 1,024 processes and threads |
| `cpu.weight` | CPU weight in proportion to memory, divided among a tenant's busy environments |
| `cgroup.freeze` | 1 between calls |
| `cgroup.kill` | ends everything in the group at once, frozen or not (kernel 5.14+; before, freeze and kill) |

Where the subtree is (`base_group`): a group given with `--cgroup-base`; else the daemon's own group
when systemd delegated it (`Delegate=yes` marks it with the `trusted.delegate` attribute), the daemon
then moving itself into a leaf `daemon` of it, since v2 lets only leaves hold processes; else the root
of the hierarchy. Below it, `silo/<instance>/<group>` as on v1. The kernel cannot rename a v2 group,
so a spare keeps its `spare-…` name for its environment's life.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

from silo.jail.cgroups import (
    PIDS_MAX,
    REUSE_MAX_LEFT_BYTES,
    CgroupUnavailable,
    FdSwitch,
    Gauge,
    Group,
    Limits,
    MemoryGauge,
    Switch,
    write,
)

CONTROLLERS = ("memory", "pids", "cpu")
DAEMON_LEAF = "daemon"
DELEGATE_ATTRIBUTES = ("trusted.delegate", "user.delegate")


def own_group(proc: str = "/proc/self/cgroup") -> str:
    """This process's group in the unified hierarchy, as `/a/b` (`/` at the root)."""
    with open(proc) as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip() or "/"
    return "/"


def delegated(path: Path) -> bool:
    for name in DELEGATE_ATTRIBUTES:
        with contextlib.suppress(OSError):
            if os.getxattr(path, name).strip(b"\0 \n") == b"1":
                return True
    return False


def base_group(root: Path, configured: str = "") -> tuple[Path, bool]:
    """(the group silo's subtree goes below, whether the daemon must leave it for a leaf of its own)."""
    if configured:
        # Relative to the hierarchy's root, or given whole (/sys/fs/cgroup/...).
        relative = configured.removeprefix(str(root)) if configured.startswith(f"{root}/") else configured
        base = root / relative.strip("/")
        return base, base != root and _holds_self(base, root)
    own = own_group()
    if own != "/":
        mine = root / own.strip("/")
        if delegated(mine):
            return mine, True
        # The daemon moved itself into the leaf of a delegated group on an earlier start in this unit.
        if mine.name == DAEMON_LEAF and delegated(mine.parent):
            return mine.parent, False
    return root, False


def _holds_self(group: Path, root: Path) -> bool:
    return own_group() == "/" + str(group.relative_to(root)) if group != root else False


def _controllers(path: Path, name: str) -> set[str]:
    try:
        return set((path / name).read_text().split())
    except OSError:
        return set()


def _swap_in_use() -> bool:
    try:
        with open("/proc/swaps") as f:
            return len(f.read().splitlines()) > 1
    except OSError:
        return False


class SampledPeak:
    """Max Memory Used where the kernel keeps no `memory.peak` (before 5.19): the largest `memory.current`
    seen, read at the end of every call (so a peak between two reads is missed: said in docs/security.md)."""

    def __init__(self, path: Path) -> None:
        self._current = MemoryGauge(path / "memory.current")
        self._peak: float | None = None

    def mib(self) -> float | None:
        now = self._current.mib()
        if now is not None and (self._peak is None or now > self._peak):
            self._peak = now
        return self._peak

    def mb(self) -> int | None:
        mib = self.mib()
        return None if mib is None else -(-int(mib * 1024 * 1024) // (1024 * 1024))

    def close(self) -> None:
        self._current.close()


class LocalPeak(MemoryGauge):
    """`memory.peak` through a descriptor that reset it (kernel 6.12+): its reads give the peak since the
    reset, so a reused group reports its new environment's peak, not the last one's. Made when the group
    is emptied for reuse, before the next environment joins it: a descriptor reset later would miss what
    that environment used until then."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            os.write(self._fd, b"reset\n")
        except OSError:
            self.close()
            raise


class V2Group:
    def __init__(self, path: Path, relative: str, limits: Limits, features: frozenset[str]) -> None:
        self.path = path
        self.name = path.name
        self.limits = limits
        self._relative = relative
        self._features = features
        self._reset_peak: LocalPeak | None = None  # made by reset_for_reuse, for the next environment

    def join_paths(self) -> dict[str, str]:
        return {"unified": str(self.path)}

    def runsc_path(self) -> str:
        return self._relative

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return []

    def kill_all(self) -> None:
        if "kill" in self._features:
            with contextlib.suppress(OSError):
                write(self.path / "cgroup.kill", 1)
            return
        # Before 5.14: freeze so nothing forks away, kill every member; frozen tasks die of SIGKILL on v2.
        with contextlib.suppress(OSError):
            write(self.path / "cgroup.freeze", 1)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            write(self.path / "cgroup.freeze", 0)

    def freezer(self) -> Switch:
        # No anchor needed: v2's freezer traps tasks with a job-control flag, switching no code on or off.
        return FdSwitch(self.path / "cgroup.freeze", b"1", b"0")

    def usage_gauge(self) -> Gauge:
        return MemoryGauge(self.path / "memory.current", keep_open=False)

    def peak_gauge(self) -> Gauge:
        if self._reset_peak is not None:
            gauge, self._reset_peak = self._reset_peak, None
            return gauge
        # A group never used before: its peak since it was made is its one environment's.
        if "peak" in self._features or "local_peak" in self._features:
            return MemoryGauge(self.path / "memory.peak")
        return SampledPeak(self.path)

    def _events(self, name: str) -> dict[str, int]:
        events: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                events[key] = int(value)
        return events

    def oom_killed(self) -> bool:
        return self._events("memory.events").get("oom_kill", 0) > 0

    def divide_cpu(self, divisor: int) -> None:
        write(self.path / "cpu.weight", max(1, self.limits.cpu_weight // divisor))

    def reset_for_reuse(self, timeout_s: float = 5.0) -> bool:
        """Only where `memory.peak` can be reset (6.12+): otherwise the next environment would report this
        one's peak. The OOM count cannot be reset, so a group with a kill on record is not reused."""
        if "local_peak" not in self._features:
            return False
        deadline = time.monotonic() + timeout_s
        while self._events("cgroup.events").get("populated", 1):
            if time.monotonic() > deadline:
                return False
            self.kill_all()
            time.sleep(0.01)
        if self.oom_killed():
            return False
        try:
            if self._events("cgroup.events").get("frozen", 0):
                write(self.path / "cgroup.freeze", 0)
            write(self.path / "cpu.weight", self.limits.cpu_weight)
            if int((self.path / "memory.current").read_text()) > REUSE_MAX_LEFT_BYTES:
                return False
            self._forget_peak()
            self._reset_peak = LocalPeak(self.path / "memory.peak")
            return True
        except (OSError, ValueError):
            return False

    def _forget_peak(self) -> None:
        if self._reset_peak is not None:
            self._reset_peak.close()
            self._reset_peak = None

    def renamed(self, name: str) -> V2Group:
        return self

    def remove(self, timeout_s: float = 5.0) -> bool:
        self._forget_peak()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
            self.kill_all()
            time.sleep(0.01)


class V2Hierarchy:
    version = 2

    def __init__(self, parent: str, root: Path, configured_base: str = "") -> None:
        self._root = root
        base, leave = base_group(root, configured_base)
        if not base.is_dir():
            raise CgroupUnavailable(
                f"the cgroup {base} given as silo's base does not exist; create it (mkdir), or leave the base unset"
            )
        self._base = base
        self._parent = base / parent
        if leave:
            self._leave(base)
        self._enable(base, parent)
        self.features = self._probe()
        self.reuses = "local_peak" in self.features

    def describe(self) -> str:
        return f"cgroup v2, {self._parent}"

    def _leave(self, base: Path) -> None:
        """v2 lets a group hold processes or enable controllers for groups below it, not both: the daemon
        (and whatever else its unit started) moves into a leaf, so its group can be the environments' parent."""
        leaf = base / DAEMON_LEAF
        leaf.mkdir(exist_ok=True)
        for pid in (base / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                write(leaf / "cgroup.procs", pid)

    def _enable(self, base: Path, parent: str) -> None:
        missing = [c for c in CONTROLLERS if c not in _controllers(base, "cgroup.controllers")]
        if missing:
            raise CgroupUnavailable(
                f"the cgroup v2 controllers {', '.join(missing)} are not available in {base} (it lists "
                f"{', '.join(sorted(_controllers(base, 'cgroup.controllers'))) or 'none'}); under systemd run silo "
                "as a unit with Delegate=yes (deploy/silo.service), or give --cgroup-base a group that has them"
            )
        group = base
        for part in [*Path(parent).parts, None]:
            wanted = [c for c in CONTROLLERS if c not in _controllers(group, "cgroup.subtree_control")]
            if wanted:
                try:
                    write(group / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
                except OSError as exc:
                    raise CgroupUnavailable(
                        f"cannot enable the cgroup v2 controllers {', '.join(wanted)} for the groups below {group}: "
                        f"{exc.strerror or exc}"
                        + (
                            " (a group with processes in it cannot; give --cgroup-base an empty group, or run silo as "
                            "a systemd unit with Delegate=yes)"
                            if exc.errno == errno.EBUSY
                            else ""
                        )
                    ) from exc
            if part is None:
                break
            group = group / part
            group.mkdir(exist_ok=True)

    def _probe(self) -> frozenset[str]:
        """What this kernel offers, read off the daemon's parent group (which has every file a child has)."""
        features = set()
        if (self._parent / "cgroup.kill").exists():
            features.add("kill")
        if (self._parent / "memory.peak").exists():
            features.add("peak")
            with contextlib.suppress(OSError):
                LocalPeak(self._parent / "memory.peak").close()
                features.add("local_peak")
        if (self._parent / "memory.swap.max").exists():
            features.add("swap")
        elif _swap_in_use():
            raise CgroupUnavailable(
                "this host swaps, but its kernel keeps no swap accounting for cgroups (no memory.swap.max), so an "
                "environment could swap out past MemorySize; boot with swapaccount=1, or turn swap off (swapoff -a)"
            )
        return frozenset(features)

    def _group(self, path: Path, limits: Limits) -> V2Group:
        return V2Group(path, "/" + str(path.relative_to(self._root)), limits, self.features)

    def group(self, name: str) -> V2Group:
        return self._group(self._parent / name, Limits(128))

    def create(self, name: str, limits: Limits, pids_max: int = PIDS_MAX) -> V2Group:
        path = self._parent / name
        path.mkdir()
        try:
            write(path / "memory.max", limits.memory_bytes)
            if "swap" in self.features:
                write(path / "memory.swap.max", 0)
            write(path / "memory.oom.group", 1)
            write(path / "pids.max", pids_max)
            write(path / "cpu.weight", limits.cpu_weight)
        except OSError:
            with contextlib.suppress(OSError):
                path.rmdir()
            raise
        return self._group(path, limits)

    def leftovers(self) -> list[Group]:
        if not self._parent.is_dir():
            return []
        return [self._group(p, Limits(128)) for p in sorted(self._parent.iterdir()) if p.is_dir()]

    def anchor(self) -> None:
        """Nothing to keep: see `V2Group.freezer`."""

    def close(self) -> None:
        group = self._parent
        while group != self._base:
            try:
                group.rmdir()
            except OSError:
                return
            group = group.parent
