"""The jail on cgroup v2: boots a VM whose kernel has only the unified hierarchy (scripts/cgroup2-vm) and
runs there the tests that depend on cgroups: the v2 checks of guest_cgroup2.py, the spare groups, the
attack suite, and the limits and kills seen through a real server. One VM for all of them, since it
costs seconds to boot and every Python start in it is 15-40 times slower than on the host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VM = REPO / "scripts" / "cgroup2-vm"
GUEST_TESTS = (
    "tests/cgroup2/guest_cgroup2.py",
    "tests/unit/test_spares.py",
    "tests/security/test_attacks.py",
    "tests/security/test_leftovers.py::test_stems_retired_while_they_grow_leave_nothing",
    "tests/security/test_leftovers.py::test_a_stopped_server_leaves_nothing",
    "tests/compat/test_invoke.py::test_tenants_get_separate_environments",
    "tests/compat/test_invoke.py::test_timeout_kills_the_environment",
    "tests/compat/test_invoke.py::test_crash_is_an_exit_error",
    "tests/security/test_availability.py::test_a_printer_left_running_after_its_call_is_frozen",
    "tests/security/test_availability.py::test_a_spinner_left_running_after_its_call_gets_no_cpu",
    "tests/security/test_availability.py::test_socket_buffers_count_against_the_environment",
)
# The whole VM run, boot included; about 8 minutes on a 2-core host.
TIMEOUT_S = 1500

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the VM and the jail need root; CI runs this as root")


@pytest.mark.timeout(TIMEOUT_S + 120)
def test_the_jail_and_its_attacks_hold_on_cgroup_v2(tmp_path: Path) -> None:
    command = " ".join(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", *GUEST_TESTS]
    )
    env = {**os.environ, "SILO_VM_TIMEOUT": str(TIMEOUT_S), "SILO_VM_MODULES": "nf_tables veth"}
    # The guest's output goes to a file as it comes, so that a run cut short still shows how far it got.
    log = tmp_path / "vm.log"
    with open(log, "w") as out:
        done = subprocess.run([str(VM), command], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    output = log.read_text(errors="replace")
    assert done.returncode == 0, f"in the cgroup-v2 VM (exit {done.returncode}):\n{output[-20000:]}"
    assert " passed" in output and "skipped" not in output, output[-5000:]
