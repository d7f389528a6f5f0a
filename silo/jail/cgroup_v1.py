"""cgroup v1: a group per environment in each of the memory, pids, cpu and freezer hierarchies.

| file | what it does |
| --- | --- |
| `memory/…/memory.limit_in_bytes`, `memory.memsw.limit_in_bytes` | MemorySize, swap counted in the same limit |
| `memory/…/memory.swappiness` 0 | no swapping out to stretch MemorySize |
| `memory/…/memory.kmem.tcp.limit_in_bytes` | caps TCP socket buffers, otherwise charged to nobody |
| `memory/…/memory.max_usage_in_bytes` | Max Memory Used (reset to 0 for a reused group) |
| `memory/…/memory.oom_control` (`oom_kill`) | Runtime.OutOfMemory |
| `pids/…/pids.max` | 1,024 processes and threads |
| `cpu/…/cpu.shares` | CPU weight in proportion to memory, divided among a tenant's busy environments |
| `freezer/…/freezer.state` | FROZEN between calls; frozen before a kill so nothing forks away |
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from silo.jail.cgroups import PIDS_MAX, REUSE_MAX_LEFT_BYTES, FdSwitch, Gauge, Group, Limits, MemoryGauge, Switch, write

CONTROLLERS = ("memory", "pids", "cpu", "freezer")
ANCHOR = "frozen-anchor"
# Counters of the memory group that start again from zero for its next environment.
_RESET_COUNTERS = (
    "memory.max_usage_in_bytes",
    "memory.memsw.max_usage_in_bytes",
    "memory.failcnt",
    "memory.memsw.failcnt",
    "memory.kmem.tcp.max_usage_in_bytes",
    "memory.kmem.tcp.failcnt",
)


def available(root: Path) -> bool:
    return all((root / ctrl / "cgroup.procs").exists() for ctrl in CONTROLLERS)


class V1Group:
    def __init__(self, root: Path, parent: str, name: str, limits: Limits) -> None:
        self._root = root
        self._parent = parent
        self.name = name
        self.limits = limits
        self.paths = {ctrl: root / ctrl / parent / name for ctrl in CONTROLLERS}

    def join_paths(self) -> dict[str, str]:
        return {ctrl: str(path) for ctrl, path in self.paths.items()}

    def runsc_path(self) -> str:
        # The same path below every controller's root.
        return f"/{self._parent}/{self.name}"

    def pids(self) -> list[int]:
        with contextlib.suppress(OSError):
            return [int(p) for p in (self.paths["pids"] / "cgroup.procs").read_text().split()]
        return []

    def kill_all(self) -> None:
        """Freeze the group so nothing can fork away, kill every member, thaw so the kills land."""
        freezer = self.paths["freezer"] / "freezer.state"
        with contextlib.suppress(OSError):
            write(freezer, "FROZEN")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            write(freezer, "THAWED")

    def freezer(self) -> Switch:
        # Freezing costs 100 µs, code patched on every CPU, whenever the host goes from no frozen group to
        # one and back: `V1Hierarchy.anchor` keeps one frozen for the daemon's life so that never happens.
        return FdSwitch(self.paths["freezer"] / "freezer.state", b"FROZEN", b"THAWED")

    def usage_gauge(self) -> Gauge:
        return MemoryGauge(self.paths["memory"] / "memory.usage_in_bytes", keep_open=False)

    def peak_gauge(self) -> Gauge:
        return MemoryGauge(self.paths["memory"] / "memory.max_usage_in_bytes")

    def oom_killed(self) -> bool:
        with contextlib.suppress(OSError):
            for line in (self.paths["memory"] / "memory.oom_control").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value) > 0
        return False

    def divide_cpu(self, divisor: int) -> None:
        write(self.paths["cpu"] / "cpu.shares", max(2, self.limits.cpu_shares // divisor))

    def _empty(self) -> bool:
        for path in self.paths.values():
            try:
                if (path / "cgroup.procs").read_text().strip():
                    return False
            except FileNotFoundError:
                continue
        return True

    def reset_for_reuse(self, timeout_s: float = 5.0) -> bool:
        """Removing a memory group costs the kernel a walk over every memory-aware cache list on the host
        (one per mounted filesystem, and each environment mounts four), so with thousands of environments
        each removal took milliseconds of CPU; a group reset serves the next environment instead. The OOM
        counter cannot be reset, so a group with a kill on record is not reused. (`memory.force_empty`
        would not lower what stays: it is kernel objects not yet freed, and its walk over every
        filesystem's caches cost as much as the removal.)"""
        deadline = time.monotonic() + timeout_s
        while not self._empty():
            if time.monotonic() > deadline:
                return False
            self.kill_all()
            time.sleep(0.01)
        if self.oom_killed():
            return False
        mem = self.paths["memory"]
        try:
            if (self.paths["freezer"] / "freezer.state").read_text().strip() != "THAWED":
                return False
            for name in _RESET_COUNTERS:
                counter = mem / name
                if counter.exists():
                    write(counter, 0)
            # Its environment's tenant may have had its CPU weight divided.
            write(self.paths["cpu"] / "cpu.shares", self.limits.cpu_shares)
            return int((mem / "memory.usage_in_bytes").read_text()) <= REUSE_MAX_LEFT_BYTES
        except (OSError, ValueError):
            return False

    def renamed(self, name: str) -> V1Group:
        """cgroup v1 renames a group in place; a failure half way renames back what it could."""
        group = V1Group(self._root, self._parent, name, self.limits)
        renamed: list[str] = []
        try:
            for ctrl, path in self.paths.items():
                path.rename(group.paths[ctrl])
                renamed.append(ctrl)
        except OSError:
            for ctrl in renamed:
                with contextlib.suppress(OSError):
                    group.paths[ctrl].rename(self.paths[ctrl])
            raise
        return group

    def remove(self, timeout_s: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout_s
        remaining = dict(self.paths)
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
            self.kill_all()
            time.sleep(0.01)
        return True


class V1Hierarchy:
    version = 1
    reuses = True

    def __init__(self, parent: str, root: Path) -> None:
        self._parent = parent
        self._root = root
        self._anchor: Path | None = None

    def describe(self) -> str:
        return f"cgroup v1, {self._root}/{{{','.join(CONTROLLERS)}}}/{self._parent}"

    def group(self, name: str) -> V1Group:
        return V1Group(self._root, self._parent, name, Limits(128))

    def create(self, name: str, limits: Limits, pids_max: int = PIDS_MAX) -> V1Group:
        group = V1Group(self._root, self._parent, name, limits)
        paths = group.paths
        for path in paths.values():
            path.mkdir(parents=True, exist_ok=True)
        mem = paths["memory"]
        write(mem / "memory.limit_in_bytes", limits.memory_bytes)
        memsw = mem / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            # Swap counts against the same limit, so swapping out cannot stretch MemorySize.
            write(memsw, limits.memory_bytes)
        write(mem / "memory.swappiness", 0)
        write(mem / "memory.kmem.tcp.limit_in_bytes", limits.tcp_bytes)
        write(paths["pids"] / "pids.max", pids_max)
        write(paths["cpu"] / "cpu.shares", limits.cpu_shares)
        return group

    def leftovers(self) -> list[Group]:
        names: set[str] = set()
        for ctrl in CONTROLLERS:
            parent = self._root / ctrl / self._parent
            if parent.is_dir():
                names.update(g.name for g in parent.iterdir() if g.is_dir())
        return [self.group(name) for name in sorted(names)]

    def anchor(self) -> None:
        """An empty freezer group kept frozen while the daemon runs. The kernel switches its freezer code on
        when the first group of the host freezes and off when the last thaws, patching code on every CPU
        each time (100 µs of the caller's CPU); with this one always frozen, freezing an idle environment
        and thawing it for its next call cost about 4 µs each."""
        path = self._root / "freezer" / self._parent / ANCHOR
        path.mkdir(parents=True, exist_ok=True)
        write(path / "freezer.state", "FROZEN")
        self._anchor = path

    def close(self) -> None:
        if self._anchor is not None:
            with contextlib.suppress(OSError):
                write(self._anchor / "freezer.state", "THAWED")
            with contextlib.suppress(OSError):
                self._anchor.rmdir()
        for ctrl in CONTROLLERS:
            with contextlib.suppress(OSError):
                (self._root / ctrl / self._parent).rmdir()
