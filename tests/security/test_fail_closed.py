"""silo fails closed: without the means to isolate tenants it refuses to start, and the jail never lets an
environment run without its seccomp filter, whatever the daemon sent it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from silo.jail import seccomp, syscalls
from silo.jail.spec import Bind, JailSpec
from silo.sandbox.jail import JAIL_ENTRY
from silo.sandbox.layout import SYSTEM_BINDS
from tests.support import CREDENTIALS, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root; CI runs these as root")


def _not_root() -> None:
    # A user namespace of its own with nothing mapped: the server is uid 65534 there, as a user's
    # `make run` would be, while it still reaches files owned by root (its interpreter, this checkout).
    syscalls.unshare(syscalls.CLONE_NEWUSER)


def serve_as_a_user(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "silo", "serve", "--port", str(free_port()), "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **CREDENTIALS},
        preexec_fn=_not_root,
    )


def test_auto_without_root_refuses_to_start_and_says_what_to_do(tmp_path: Path) -> None:
    # Without root neither the jail nor gVisor can run. Before, silo fell back to the unisolated backend
    # with one warning line and served.
    server = serve_as_a_user(tmp_path / "data")
    try:
        out, _ = server.communicate(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 78, out  # a refusal: deploy/silo.service does not start it again
    assert "no backend that isolates tenants can run here" in out, out
    assert "jail: the jail backend needs root" in out and "gvisor: the gvisor backend needs" in out, out
    assert "--sandbox process" in out and "sudo make run" in out, out
    assert "Traceback" not in out, out
    assert "serving the Lambda API" not in out, out
    # Named, the unisolated backend starts, and says what it is.
    server = serve_as_a_user(tmp_path / "data", "--sandbox", "process")
    assert server.stdout is not None
    lines = []
    try:
        for line in server.stdout:
            lines.append(line)
            if "serving the Lambda API" in line:
                break
    finally:
        server.kill()
        server.communicate()
    out = "".join(lines)
    assert "serving the Lambda API" in out, out
    assert any("WARNING" in line and "does NOT isolate tenants" in line for line in lines), out


def run_jail(tmp_path: Path, seccomp_filter: str) -> tuple[bytes, int]:
    """Run the jail as the daemon does, up to its answer; (the answer, the jail's exit status)."""
    root = tmp_path / "root"
    root.mkdir(parents=True)
    spec = JailSpec(
        env_id="fail-closed",
        argv=["/bin/true"],
        environ={},
        uid=3_999_999,
        gid=3_999_999,
        root_dir=str(root),
        binds=[Bind(p, p) for p in SYSTEM_BINDS if os.path.exists(p)],
        tmp_mb=1,
        cgroups={},
        cwd="/",
        seccomp_filter=seccomp_filter,
    )
    spec_r, spec_w = os.pipe()
    os.write(spec_w, spec.encode())
    os.close(spec_w)
    control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with control:
        jail = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", JAIL_ENTRY, str(spec_r), str(control_child.fileno())],
            pass_fds=(spec_r, control_child.fileno()),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={},
        )
        os.close(spec_r)
        control_child.close()
        control.settimeout(30)
        answer, fds, _, _ = socket.recv_fds(control, 4096, 2)
        for fd in fds:
            os.close(fd)
        return answer, jail.wait(timeout=30)


def test_the_jail_refuses_to_run_an_environment_without_a_seccomp_filter(tmp_path: Path) -> None:
    # Before, the jail skipped the step when the filter was empty and the runtime ran unfiltered.
    answer, status = run_jail(tmp_path / "unfiltered", "")
    assert answer.startswith(b"error install the seccomp filter: "), answer
    assert b"empty" in answer, answer
    assert status == 126
    # The same jail with its filter gets ready: the case above fails at the seccomp step, not before it.
    answer, status = run_jail(tmp_path / "filtered", seccomp.compile_filter(seccomp.load_policy()).hex())
    assert answer == b"ready", answer
    assert status == 0


def test_auto_with_unusable_cgroups_refuses_to_start(tmp_path: Path) -> None:
    # As root, with the jail made unavailable by an unusable cgroup base (on a v1 host any base is, since it
    # is a v2 setting; on v2, one that does not exist): neither the jail nor gVisor can run, so nothing starts.
    server = subprocess.run(
        [
            sys.executable,
            "-m",
            "silo",
            "serve",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
            "--cgroup-base",
            "no-such-group/for-silo",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **CREDENTIALS},
        timeout=120,
    )
    out = server.stdout + server.stderr
    assert server.returncode == 78, out  # a refusal: deploy/silo.service does not start it again
    assert "no backend that isolates tenants can run here" in out, out
    assert "jail: the jail backend cannot use this host's cgroups" in out, out
    assert "gvisor: the gvisor backend" in out, out
    assert "serving the Lambda API" not in out and "Traceback" not in out, out
