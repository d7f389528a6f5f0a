"""What only a cgroup-v2 host shows: the files silo writes for an environment, the kernel's answers to
them, and where silo puts its subtree. Run inside the cgroup-v2 VM by test_cgroup2_vm.py (the file name
keeps it out of the host's collection, where v1 would make every check here meaningless)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from silo.config import Settings
from silo.jail import cgroup_mount, cgroups, seccomp
from silo.jail.cgroup_v2 import DAEMON_LEAF, V2Group, V2Hierarchy, own_group
from silo.jail.cgroups import CgroupUnavailable, Limits
from silo.sandbox.base import SandboxUnavailable
from silo.sandbox.choice import make_sandbox
from silo.sandbox.gvisor import CGROUP_PARENT, HOST_PIDS_MAX
from silo.sandbox.jail import JailSandbox
from tests.compat.test_invoke import COUNTER
from tests.security.test_gvisor import containers, use_gvisor
from tests.support import SiloServer, create_python_function, payload_of

ROOT = cgroups.ROOT


@pytest.fixture
def hierarchy() -> Iterator[V2Hierarchy]:
    made = cgroups.open_hierarchy(f"{cgroups.PARENT}/test-{uuid.uuid4().hex[:8]}")
    assert isinstance(made, V2Hierarchy)
    yield made
    for group in made.leftovers():
        group.remove(timeout_s=2)
    made.close()


def start_in(group: V2Group, code: str) -> subprocess.Popen[bytes]:
    """A Python process that joins `group` before it starts."""

    def join() -> None:
        (group.path / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.Popen([sys.executable, "-S", "-c", code], preexec_fn=join)


def read(group: V2Group, name: str) -> str:
    return (group.path / name).read_text().strip()


def events(group: V2Group, name: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in read(group, name).splitlines())}


def wait_for(condition: object, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.05)
    return False


def test_the_host_is_cgroup_v2_only() -> None:
    assert cgroups.version() == 2
    mounts = [line.split()[2] for line in Path("/proc/mounts").read_text().splitlines()]
    assert "cgroup2" in mounts and "cgroup" not in mounts, "no v1 hierarchy to fall back on"


def test_an_environments_group_has_every_limit(hierarchy: V2Hierarchy) -> None:
    group = hierarchy.create("env", Limits(256))
    assert isinstance(group, V2Group)
    assert read(group, "memory.max") == str(256 << 20)
    assert read(group, "memory.swap.max") == "0"
    assert read(group, "memory.oom.group") == "1"
    assert read(group, "pids.max") == "1024"
    assert read(group, "cpu.weight") == str(Limits(256).cpu_weight) == "144"
    group.divide_cpu(4)
    assert read(group, "cpu.weight") == "36", "a tenant's four busy environments share one weight"
    for name in ("memory", "pids", "cpu"):
        assert name in read(group, "cgroup.controllers").split()
    assert hierarchy.describe().startswith("cgroup v2")


def test_freeze_stops_every_process_and_kill_ends_them_frozen(hierarchy: V2Hierarchy) -> None:
    group = hierarchy.create("env", Limits(128))
    assert isinstance(group, V2Group)
    marker = Path(f"/tmp/ticks-{uuid.uuid4().hex[:8]}")
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()  # detached, as a tenant's background process would be
while True:
    with open({str(marker)!r}, "a") as f:
        f.write("x")
    time.sleep(0.01)
"""
    proc = start_in(group, code)
    assert wait_for(lambda: len(group.pids()) == 2 and marker.exists() and marker.stat().st_size > 10)
    freezer = group.freezer()
    freezer.freeze()
    assert wait_for(lambda: events(group, "cgroup.events")["frozen"] == 1), "the kernel reports it frozen"
    size = marker.stat().st_size
    time.sleep(0.5)
    assert marker.stat().st_size == size, "nothing of it runs while frozen"
    freezer.thaw()
    assert wait_for(lambda: marker.stat().st_size > size), "it runs again once thawed"
    freezer.freeze()
    group.kill_all()  # cgroup.kill: both die, frozen as they are, the detached one too
    assert wait_for(lambda: group.pids() == [])
    assert proc.wait(timeout=10) == -9
    freezer.close()
    assert group.remove()
    assert not group.path.exists()


def test_groups_are_reused_only_where_their_peak_can_be_reset(hierarchy: V2Hierarchy) -> None:
    release = tuple(int(p) for p in os.uname().release.split("-")[0].split("+")[0].split(".")[:2])
    assert hierarchy.reuses == (release >= (6, 12)), (release, hierarchy.features)


def test_an_oom_kills_the_whole_environment_and_is_reported(hierarchy: V2Hierarchy) -> None:
    group = hierarchy.create("env", Limits(64))
    assert isinstance(group, V2Group)
    code = """
import os, time
if os.fork() == 0:
    time.sleep(600)  # a bystander in the same environment
time.sleep(0.3)
x = bytearray(200 << 20)
"""
    proc = start_in(group, code)
    assert proc.wait(timeout=60) == -9
    assert wait_for(lambda: group.pids() == []), "memory.oom.group: the bystander dies too"
    assert group.oom_killed()
    peak = group.peak_gauge()
    assert 32 < (peak.mib() or 0) <= 64, "Max Memory Used reaches the limit"
    peak.close()


def test_a_fork_bomb_stops_at_the_pids_limit(hierarchy: V2Hierarchy) -> None:
    # The jail's limit is 1,024 (the attack suite's fork bombs meet it through a real server); 64 here, since
    # each process costs a VM like this one a tenth of a second.
    group = hierarchy.create("env", Limits(512), pids_max=64)
    assert isinstance(group, V2Group)
    assert read(group, "pids.max") == "64"
    # Each child execs a small sleeper, so memory is not what stops them (memory.oom.group would end all).
    code = """
import os
children = 0
try:
    while True:
        if os.fork() == 0:
            null = os.open("/dev/null", os.O_WRONLY)
            os.dup2(null, 1)  # the sleepers must not hold the pipe this process answers on
            os.dup2(null, 2)
            os.execv("/bin/sleep", ["sleep", "900"])
        children += 1
except BlockingIOError:
    pass
print(children, flush=True)
"""
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        preexec_fn=lambda: (group.path / "cgroup.procs").write_text(str(os.getpid())),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        timeout=300,
    )
    try:
        assert out.stdout.strip() == b"63", out
        assert events(group, "pids.events")["max"] >= 1
        assert len(group.pids()) == 63, "the sleepers live on, capped"
    finally:
        group.kill_all()
    assert wait_for(lambda: group.pids() == [])


def test_a_delegated_unit_group_becomes_silos_parent_and_the_daemon_moves_to_a_leaf() -> None:
    """As systemd runs silo with Delegate=yes: the unit's group, marked delegated, holds the daemon."""
    unit = ROOT / f"silo-test-{uuid.uuid4().hex[:8]}.service"
    unit.mkdir()
    os.setxattr(unit, "trusted.delegate", b"1")
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from silo.jail import cgroups
from silo.jail.cgroup_v2 import own_group
h = cgroups.open_hierarchy("silo/7")
g = h.create("env", cgroups.Limits(128))
print(json.dumps({{"own": own_group(), "describe": h.describe(), "group": g.runsc_path()}}))
g.remove()
h.close()
"""
    try:
        out = subprocess.run(
            [sys.executable, "-S", "-c", code],
            preexec_fn=lambda: (unit / "cgroup.procs").write_text(str(os.getpid())),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        found = json.loads(out.stdout)
        assert found["own"] == f"/{unit.name}/{DAEMON_LEAF}", "the daemon left the unit's group for a leaf"
        assert found["group"] == f"/{unit.name}/silo/7/env"
        assert set("memory pids cpu".split()) <= set((unit / "cgroup.subtree_control").read_text().split())
    finally:
        for group in sorted(unit.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if group.is_dir():
                group.rmdir()
        unit.rmdir()


def test_an_undelegated_group_of_the_daemon_is_left_alone() -> None:
    """Started from a shell in some session's group (not delegated): the subtree goes at the root."""
    assert own_group() == "/" or not own_group().endswith(DAEMON_LEAF)
    made = cgroups.open_hierarchy(f"{cgroups.PARENT}/test-{uuid.uuid4().hex[:8]}")
    try:
        assert made.describe().startswith(f"cgroup v2, {ROOT}/{cgroups.PARENT}/test-")
    finally:
        made.close()


def test_a_base_that_cannot_hold_environments_refuses(tmp_path: Path) -> None:
    with pytest.raises(CgroupUnavailable, match="does not exist"):
        cgroups.open_hierarchy("silo/1", base="no-such-group")
    # A group whose parent gives it no memory controller.
    outer = ROOT / f"silo-test-{uuid.uuid4().hex[:8]}"
    inner = outer / "inner"
    inner.mkdir(parents=True)
    try:
        (outer / "cgroup.subtree_control").write_text("+pids")
        with pytest.raises(CgroupUnavailable, match="memory, cpu are not available"):
            cgroups.open_hierarchy("silo/1", base=str(inner.relative_to(ROOT)))
        with pytest.raises(SandboxUnavailable, match="cannot use this host's cgroups"):
            JailSandbox(
                tmp_path / "envs",
                seccomp.compile_filter(seccomp.load_policy()),
                cgroup_base=str(inner.relative_to(ROOT)),
            )
    finally:
        inner.rmdir()
        outer.rmdir()


def mount_flags() -> str:
    """The mount's own flags (nosuid, relatime, ...), which are not the superblock's options."""
    with open("/proc/self/mountinfo") as f:
        return next(line.split()[5] for line in f if line.split()[4] == str(ROOT))


def test_favordynmods_is_set_and_the_mounts_other_options_kept() -> None:
    before, flags = cgroup_mount.mount_options(ROOT), mount_flags()
    assert before is not None and {"nsdelegate", "memory_recursiveprot"} <= before, before
    try:
        said = cgroup_mount.set_favordynmods(ROOT, False)
        assert "favordynmods" not in (cgroup_mount.mount_options(ROOT) or ()), said
        said = cgroup_mount.set_favordynmods(ROOT, True)
        assert said.startswith("remounted") and "lost" not in said, said
        assert cgroup_mount.mount_options(ROOT) == (before | {"favordynmods"})
        assert "already" in cgroup_mount.set_favordynmods(ROOT, True)
        assert mount_flags() == flags, "a remount through mount(2) would have reset the mount's own flags"
    finally:
        cgroup_mount.set_favordynmods(ROOT, "favordynmods" in before)


@pytest.mark.parametrize("on", [True, False])
def test_the_jails_start_turns_favordynmods_on_unless_told_not_to(tmp_path: Path, on: bool) -> None:
    before = cgroup_mount.mount_options(ROOT) or frozenset()
    cgroup_mount.set_favordynmods(ROOT, False)
    try:
        sandbox = make_sandbox(Settings(data_dir=tmp_path, sandbox="jail", cgroup_favordynmods=on))
        asyncio.run(sandbox.close())
        assert ("favordynmods" in (cgroup_mount.mount_options(ROOT) or ())) == on
    finally:
        cgroup_mount.set_favordynmods(ROOT, "favordynmods" in before)


def test_a_gvisor_sandbox_gets_the_same_limits_and_is_ended_whole(silo_server: SiloServer, lambda_client: Any) -> None:
    name = f"counter-gv-{uuid.uuid4().hex[:6]}"
    # A sandbox's first start under software emulation takes tens of seconds: hence the timeout.
    create_python_function(lambda_client, name, COUNTER, per_tenant=True, MemorySize=256, Timeout=300)
    use_gvisor(silo_server, name)
    a1, a2, b1 = (payload_of(lambda_client.invoke(FunctionName=name, TenantId=t)) for t in ("a", "a", "b"))
    assert all("memory" in answer for answer in (a1, a2, b1)), (a1, a2, b1)
    assert (a1["memory"], a1["file"]) == (1, 1), a1
    assert (a2["memory"], a2["file"]) == (2, 2) and a2["env"] == a1["env"]
    assert (b1["memory"], b1["file"]) == (1, 1) and b1["env"] != a1["env"] and b1["tenant"] == "b"
    sandboxes = containers(silo_server)
    groups = [ROOT / CGROUP_PARENT / c for c in sandboxes]
    assert len(groups) >= 2 and all(g.is_dir() for g in groups), (sandboxes, list((ROOT / CGROUP_PARENT).iterdir()))
    for group in groups:
        # The whole sandbox, Sentry and gofer with the tenant's code, in one group with the jail's limits.
        assert (group / "memory.max").read_text().strip() == str(256 << 20)
        assert (group / "memory.swap.max").read_text().strip() == "0"
        assert (group / "memory.oom.group").read_text().strip() == "1"
        assert (group / "pids.max").read_text().strip() == str(HOST_PIDS_MAX)
        assert (group / "cgroup.procs").read_text().split(), "runsc's processes are in it"
        assert wait_for(lambda g=group: "frozen 1" in (g / "cgroup.events").read_text()), "frozen between calls"
    lambda_client.update_function_configuration(FunctionName=name, Description="retire its environments")
    lambda_client.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert wait_for(lambda: not any(g.exists() for g in groups), 120), "retired sandboxes leave no group"
    assert not containers(silo_server) & sandboxes
