"""The jail on cgroup v2: boots a VM whose kernel has only the unified hierarchy (scripts/cgroup2-vm) and
runs there the tests that depend on cgroups: the v2 checks of guest_cgroup2.py, the spare groups, the
attack suite, and the limits and kills seen through a real server. One VM for all of them, since it
costs seconds to boot and every Python start in it is 15-40 times slower than on the host; and a second,
short one on a 6.12 kernel, the first whose `memory.peak` can be reset, where spare groups are reused."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VM = REPO / "scripts" / "cgroup2-vm"
GUEST_TESTS = (
    "tests/cgroup2/guest_cgroup2.py",
    "tests/unit/test_spares.py",
    "tests/unit/test_sandbox_choice.py",
    "tests/unit/test_tenant_invariant.py",
    "tests/unit/test_health.py",
    "tests/security/test_fail_closed.py",
    "tests/security/test_platform_failures.py",
    "tests/security/test_attacks.py",
    "tests/security/test_leftovers.py::test_stems_retired_while_they_grow_leave_nothing",
    "tests/security/test_leftovers.py::test_a_stopped_server_leaves_nothing",
    "tests/compat/test_invoke.py::test_tenants_get_separate_environments",
    "tests/compat/test_invoke.py::test_timeout_kills_the_environment",
    "tests/compat/test_invoke.py::test_crash_is_an_exit_error",
)
# What only a kernel that can reset `memory.peak` (6.12+) exercises: groups reused as spares.
REUSE_TESTS = (
    "tests/unit/test_spares.py",
    "tests/cgroup2/guest_cgroup2.py::test_groups_are_reused_only_where_their_peak_can_be_reset",
    "tests/cgroup2/guest_cgroup2.py::test_an_oom_kills_the_whole_environment_and_is_reported",
    "tests/cgroup2/guest_cgroup2.py::test_an_environments_group_has_every_limit",
)
# The whole VM run, boot included: about 10 minutes on a 2-core host with nothing else running.
TIMEOUT_S = 1800

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the VM and the jail need root; CI runs this as root")


def run_in_vm(tmp_path: Path, tests: tuple[str, ...], **env: str) -> str:
    """Run `tests` with pytest in a cgroup-v2 VM; its output, once they passed."""
    # The guest's temporary files in a folder of this run's: its /tmp is the host's seen through an overlay,
    # where the host's own test runs have left servers' logs of theirs.
    guest_tmp = f"/tmp/silo-vm-tests-{uuid.uuid4().hex[:8]}"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", "--durations=15"]
    pytest.append(f"--basetemp={guest_tmp}")
    # On a failure, the servers' own logs too: they are gone with the VM.
    command = (
        " ".join([*pytest, *tests])
        + f"; rc=$?; if [ $rc != 0 ]; then for f in {guest_tmp}/*/silo-serve.log; do"
        + ' echo "=== $f"; tail -n 80 "$f"; done; fi; exit $rc'
    )
    environment = {
        **os.environ,
        "SILO_VM_TIMEOUT": str(TIMEOUT_S),
        "SILO_VM_MODULES": "nf_tables veth",
        # tests/support.py waits this many times longer for servers and answers: everything is slower there,
        # and an init phase (a gVisor sandbox's first start above all) may take longer than Lambda's 10 s.
        "SILO_TEST_TIME_SCALE": "10",
        "SILO_INIT_TIMEOUT_S": "120",
        **env,
    }
    # The guest's output goes to a file as it comes, so that a run cut short still shows how far it got.
    log = tmp_path / "vm.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [str(VM), command], cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    output = log.read_text(errors="replace")
    assert done.returncode == 0, f"in the cgroup-v2 VM (exit {done.returncode}):\n{output[-20000:]}"
    assert " passed" in output and "skipped" not in output, output[-5000:]
    return output


def newest_kernel_package(series: str) -> str:
    """Debian's newest kernel package of `series` (6.12: bookworm's backported line), by apt's index."""
    found = subprocess.run(
        ["apt-cache", "search", "--names-only", f"^linux-image-{series}\\.[0-9.]+\\+deb[0-9]+-amd64-unsigned$"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    names = [w for w in found if w.startswith(f"linux-image-{series}.")]
    assert names, f"apt knows no linux-image-{series}.*-amd64-unsigned package (apt-get update?)"

    def version(name: str) -> tuple[int, ...]:
        return tuple(int(p) for p in name.removeprefix("linux-image-").split("+")[0].split("."))

    return max(names, key=version)


@pytest.mark.timeout(TIMEOUT_S + 120)
def test_the_jail_and_its_attacks_hold_on_cgroup_v2(tmp_path: Path) -> None:
    run_in_vm(tmp_path, GUEST_TESTS)


@pytest.mark.timeout(TIMEOUT_S + 120)
def test_spare_groups_are_reused_where_the_kernel_resets_their_peak(tmp_path: Path) -> None:
    run_in_vm(tmp_path, REUSE_TESTS, SILO_VM_KERNEL_PKG=newest_kernel_package("6.12"))
