"""What the cgroup operations of an environment's life cost on this host's hierarchy (v1 or v2): making
a group with its limits, a process joining it, freezing and thawing it, killing and removing it, and on
v2 the join again with the `favordynmods` mount option, and a new process placed in its group as it is
made (`clone3` with `CLONE_INTO_CGROUP`) against one that is forked and then joins. Each beside a write
to a plain file in the same run, the floor any of them could reach. Run as root:
`.venv/bin/python bench/cgroup_ops.py [ROUNDS]`; on a cgroup-v1 host, through `scripts/cgroup2-vm` for v2
(where everything runs 15-40 times slower: compare ratios, not times). Not part of `make bench`: its
figures are in docs/design-notes.md."""

from __future__ import annotations

import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from silo.jail import cgroup_mount, cgroups
from silo.jail.cgroups import Group, Limits

SYS_CLONE3 = 435
CLONE_INTO_CGROUP = 0x200000000
# PyDLL: the call holds the GIL, so the child starts with it, as after os.fork; it only exits.
_syscall = ctypes.PyDLL(None, use_errno=True).syscall
_syscall.restype = ctypes.c_long


class CloneArgs(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


def median_us(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e6:,.0f} µs"


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


JOIN = """
import os, sys, time
paths = sys.argv[1:]
t0 = time.perf_counter()
for path in paths:
    with open(path + "/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
print(time.perf_counter() - t0)
"""


def join_once(group: Group) -> float:
    out = subprocess.run(
        [sys.executable, "-S", "-c", JOIN, *group.join_paths().values()], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def enter(group: Group) -> None:
    for path in group.join_paths().values():
        Path(path, "cgroup.procs").write_text(str(os.getpid()))


def favordynmods(on: bool) -> bool:
    said = cgroup_mount.set_favordynmods(cgroups.ROOT, on)
    print(f"# {said}")
    return said.startswith("remounted") and "lost" not in said


def forked_and_joined(group: Group | None) -> float:
    """A new process that exits at once: forked, and (with a group) moving itself into it first."""
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        if group is not None:
            enter(group)
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - t0


def cloned_into(group: Group | None) -> float:
    """A new process that exits at once, made by a raw clone3 (none of os.fork's bookkeeping), in `group`
    by the kernel (CLONE_INTO_CGROUP), or where this process is."""
    fd = os.open(next(iter(group.join_paths().values())), os.O_RDONLY | os.O_DIRECTORY) if group else -1
    args = CloneArgs(flags=CLONE_INTO_CGROUP if group else 0, exit_signal=17, cgroup=max(fd, 0))  # 17: SIGCHLD
    t0 = time.perf_counter()
    pid = _syscall(SYS_CLONE3, ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    if pid == 0:
        os._exit(0)
    if pid < 0:
        raise OSError(ctypes.get_errno(), "clone3")
    os.waitpid(pid, 0)
    elapsed = time.perf_counter() - t0
    if fd >= 0:
        os.close(fd)
    return elapsed


def main(rounds: int) -> None:
    hierarchy = cgroups.open_hierarchy(f"{cgroups.PARENT}/bench-{uuid.uuid4().hex[:8]}")
    print(f"# {hierarchy.describe()}, kernel {os.uname().release}, {rounds} rounds, medians")
    plain = Path(tempfile.mkdtemp()) / "file"
    floor = [timed(lambda: plain.write_text("1")) for _ in range(rounds)]
    made: list[Group] = []
    create = [timed(lambda: made.append(hierarchy.create(f"g{len(made)}", Limits(128)))) for _ in range(rounds)]
    joins = [join_once(g) for g in made]
    fast_joins: list[float] = []
    forks = [forked_and_joined(None) for _ in range(rounds)]
    forks_joined = [forked_and_joined(g) for g in made]
    clones: list[float] = []
    bare_clones: list[float] = []
    fast_forks_joined: list[float] = []
    if hierarchy.version == 2:
        bare_clones = [cloned_into(None) for _ in made]
        clones = [cloned_into(g) for g in made]
        if favordynmods(True):
            fast_joins = [join_once(g) for g in made]
            fast_forks_joined = [forked_and_joined(g) for g in made]
            favordynmods(False)
    sleepers = [
        subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(600)"], preexec_fn=lambda g=g: enter(g))
        for g in made[: min(rounds, 20)]
    ]
    switches = [g.freezer() for g in made[: len(sleepers)]]
    hierarchy.anchor()
    freeze = [timed(s.freeze) for s in switches]
    thaw = [timed(s.thaw) for s in switches]
    kill = [timed(g.kill_all) for g in made[: len(sleepers)]]
    for proc in sleepers:
        proc.wait()
    for s in switches:
        s.close()
    # Where a group can serve another environment (v2 on 6.12+, v1), what that costs instead of a new one,
    # once its processes are gone (a removal waits for that too).
    for g in made[: len(sleepers)]:
        while g.pids():
            time.sleep(0.01)
    reset = [timed(g.reset_for_reuse) for g in made[: len(sleepers)]] if hierarchy.reuses else []
    remove = [timed(g.remove) for g in made]
    hierarchy.close()
    rows = [
        ("write to a plain file (floor)", floor),
        ("make a group with its limits", create),
        ("a process joins it (cgroup.procs)", joins),
        ("the same with favordynmods", fast_joins),
        ("a new process (fork, exit, reaped)", forks),
        ("a new process that joins it first", forks_joined),
        ("the same with favordynmods", fast_forks_joined),
        ("a new process by a raw clone3", bare_clones),
        ("the same, made in the group (CLONE_INTO_CGROUP)", clones),
        ("freeze", freeze),
        ("thaw", thaw),
        ("kill everything in it", kill),
        ("reset it for another environment", reset),
        ("remove it (emptied)", remove),
    ]
    for name, samples in rows:
        if samples:
            print(f"| {name} | {median_us(samples)} | {len(samples)} |")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
