"""Environments leave nothing behind: processes, cgroups, uids, mounts, directories."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from silo.jail import cgroups
from silo.sandbox.identity import INSTANCE_SLOTS, UID_BASE, UID_COUNT, instance_of
from silo.sandbox.spares import PREFIX
from tests.support import SiloServer, create_python_function, make_client, payload_of

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root; CI runs these as root")

ENVIRONMENTS = 240
SOURCE = """
import os, subprocess
def handler(event, context):
    if event.get("linger"):
        subprocess.Popen(["/usr/bin/sleep", "300"], start_new_session=True)
    open("/tmp/state", "w").write(context.tenant_id)
    return os.getuid()
"""


def jail_processes(uids: set[int] | None = None) -> list[int]:
    """Processes running as an environment uid (of `uids`, when given)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if UID_BASE <= uid < UID_BASE + 2 * INSTANCE_SLOTS * UID_COUNT and (uids is None or uid in uids):
            found.append(int(pid))
    return found


# The daemon's parent groups: one per v1 controller, one on v2 (its base is the root in these tests).
CONTROLLERS = ("memory", "pids", "cpu", "freezer") if cgroups.version() == 1 else ("",)


def daemon_parents(server: SiloServer) -> list[Path]:
    instance = instance_of(server.data_dir / "environments")
    return [cgroups.ROOT / ctrl / "silo" / instance for ctrl in CONTROLLERS]


def unused_spare(group: Path) -> bool:
    """A spare made ahead for environments to come: renamed for its environment when taken on v1; on v2
    (no renaming) it keeps its name, but an environment's group holds its processes."""
    if not group.name.startswith(PREFIX):
        return False
    events = group / "cgroup.events"
    return not events.exists() or "populated 0" in events.read_text()


def silo_cgroups(server: SiloServer) -> set[Path]:
    """The environments' cgroups of the server under test (silo/<daemon instance>/<environment>), but the
    spares it makes ahead for environments to come."""
    out: set[Path] = set()
    for parent in daemon_parents(server):
        if parent.is_dir():
            out.update(p for p in parent.iterdir() if p.is_dir() and not unused_spare(p))
    return out


def spare_cgroups(server: SiloServer) -> int:
    parent = daemon_parents(server)[0]
    return sum(1 for p in parent.iterdir() if unused_spare(p)) if parent.is_dir() else 0


def test_hundreds_of_environments_leave_nothing(lambda_client: Any, unique_name: str, silo_server: SiloServer) -> None:
    # Other tests' environments live on in the shared server; only what this test starts must go.
    env_root = silo_server.data_dir / "environments"
    groups_before = silo_cgroups(silo_server)
    dirs_before = set(env_root.iterdir())
    create_python_function(lambda_client, unique_name, SOURCE, per_tenant=True)
    uids: list[int] = []
    failures: list[Any] = []
    tenants = [f"t{i}" for i in range(ENVIRONMENTS)]

    def worker(chunk: list[str]) -> None:
        for i, tenant in enumerate(chunk):
            response = lambda_client.invoke(
                FunctionName=unique_name, TenantId=tenant, Payload=b'{"linger": true}' if i % 10 == 0 else b"{}"
            )
            if "FunctionError" in response:
                failures.append(payload_of(response))
            else:
                uids.append(payload_of(response))

    threads = [threading.Thread(target=worker, args=(tenants[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(uids) == ENVIRONMENTS
    assert len(set(uids)) == ENVIRONMENTS, "every live environment has its own uid"
    mine = set(uids)
    # Some may have been evicted already to keep within the host memory budget: they too must leave nothing.
    assert jail_processes(mine), "the environments are alive before the function goes"
    assert silo_cgroups(silo_server) - groups_before
    lambda_client.delete_function(FunctionName=unique_name)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (jail_processes(mine) or silo_cgroups(silo_server) - groups_before):
        time.sleep(0.2)
    assert jail_processes(mine) == [], "no process of any environment survives"
    assert silo_cgroups(silo_server) - groups_before == set(), "every environment's cgroups are removed"
    assert spare_cgroups(silo_server) <= 16, "what stays is a few spares made ahead for the next environments"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and set(env_root.iterdir()) - dirs_before:
        time.sleep(0.2)
    assert set(env_root.iterdir()) - dirs_before == set(), "every environment's directory is removed"
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(env_root) not in mounts, "no mount of any environment is visible on the host"
    assert silo_server.alive()


def test_stems_retired_while_they_grow_leave_nothing(
    lambda_client: Any, unique_name: str, silo_server: SiloServer
) -> None:
    env_root = silo_server.data_dir / "environments"
    groups_before = silo_cgroups(silo_server)
    dirs_before = set(env_root.iterdir())
    # A slow init keeps the stems this call asks for growing when the function is deleted right after.
    create_python_function(lambda_client, unique_name, "import time\ntime.sleep(1)\n" + SOURCE, per_tenant=True)
    for tenant in ("a", "b", "c"):
        assert "FunctionError" not in lambda_client.invoke(FunctionName=unique_name, TenantId=tenant)
    lambda_client.delete_function(FunctionName=unique_name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (
        silo_cgroups(silo_server) - groups_before or set(env_root.iterdir()) - dirs_before
    ):
        time.sleep(0.2)
    assert silo_cgroups(silo_server) - groups_before == set(), "a stem killed as it grew was cleaned up too"
    assert set(env_root.iterdir()) - dirs_before == set()


def test_a_stopped_server_leaves_nothing(tmp_path: Path) -> None:
    server = SiloServer(tmp_path / "data")
    server.start()
    try:
        client = make_client(server.endpoint)
        create_python_function(client, "stopping", SOURCE, per_tenant=True)
        uids = {payload_of(client.invoke(FunctionName="stopping", TenantId=t)) for t in ("a", "b", "c")}
        instance = instance_of(server.data_dir / "environments")
        assert jail_processes(uids)
    finally:
        server.stop()
    deadline = time.monotonic() + 10  # killed ones are reaped by init once their template has gone
    while jail_processes(uids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert jail_processes(uids) == [], "no environment outlives its daemon's shutdown"
    for ctrl in CONTROLLERS:
        assert not (cgroups.ROOT / ctrl / "silo" / instance).exists(), f"{ctrl or 'the'} groups of the daemon remain"
