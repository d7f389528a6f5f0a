"""The gVisor backend's pieces that need no runsc: its OCI bundle, exit statuses, and the relay run on the host."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from silo.jail import seccomp
from silo.jail.cgroup_v1 import V1Group
from silo.jail.cgroups import Limits
from silo.sandbox import gvisor
from silo.sandbox.base import LaunchSpec, SandboxUnavailable
from silo.sandbox.layout import runtime_layout
from tests.support import free_port

RELAY = Path(gvisor.RELAY_SOURCE)
FILTER = seccomp.compile_filter(seccomp.load_policy())


def test_exit_status_of_runsc_run() -> None:
    assert gvisor._exit_status(0) == 0
    assert gvisor._exit_status(3) == 3
    assert gvisor._exit_status(137) == -signal.SIGKILL
    assert gvisor._exit_status(139) == -signal.SIGSEGV
    assert gvisor._exit_status(-9) == -9


def test_bundle_is_locked_down(tmp_path: Path) -> None:
    sandbox = gvisor.GvisorSandbox.__new__(gvisor.GvisorSandbox)  # no runsc needed to build a bundle
    spec = LaunchSpec("e1", "provided.al2023", {"SECRET": "s"}, tmp_path, memory_mb=256, ephemeral_mb=600)
    groups = V1Group(Path("/sys/fs/cgroup"), gvisor.CGROUP_PARENT, "e1", Limits(256))  # a handle, not made
    config = sandbox._config(spec, runtime_layout(spec), 300_123, tmp_path, groups)
    process = config["process"]
    assert process["user"] == {"uid": 300_123, "gid": 300_123}
    assert all(caps == [] for caps in process["capabilities"].values())
    assert process["noNewPrivileges"] is True
    assert all("SECRET" not in variable for variable in process["env"]), "the function's variables go on stdin"
    assert config["root"]["readonly"] is True
    by_target = {m["destination"]: m for m in config["mounts"]}
    assert "size=600m" in by_target["/tmp"]["options"]
    assert by_target["/var/task"]["source"] == str(tmp_path) and "ro" in by_target["/var/task"]["options"]
    assert all("ro" in m["options"] for m in config["mounts"] if m["type"] == "bind")
    assert {"type": "network"} in config["linux"]["namespaces"]
    assert config["linux"]["resources"]["memory"]["limit"] == 256 << 20
    assert config["linux"]["cgroupsPath"] == "/silo-gvisor/e1", "the groups the daemon made"
    assert "--network=none" in gvisor.RUNSC_FLAGS and "--platform=ptrace" in gvisor.RUNSC_FLAGS


def _start_relay(
    tmp_path: Path, runtime: str, port: int, seccomp_filter: str = FILTER.hex()
) -> subprocess.Popen[bytes]:
    doc = {
        "argv": [sys.executable, "-c", runtime],
        "environ": {"RUNTIME_VAR": "1"},
        "cwd": str(tmp_path),
        "port": port,
        "upstream": str(tmp_path / "api.sock"),
        "seccomp_filter": seccomp_filter,
    }
    relay = subprocess.Popen(
        [sys.executable, "-s", "-S", "-B", str(RELAY)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={}
    )
    assert relay.stdin is not None
    relay.stdin.write(json.dumps(doc).encode())
    relay.stdin.close()
    return relay


def test_relay_copies_connections_and_passes_the_exit_status_on(tmp_path: Path) -> None:
    port = free_port()
    runtime = (
        "import os, socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        "s.sendall(b'GET /next')\n"
        "print(s.recv(100).decode(), os.environ.get('RUNTIME_VAR'), flush=True)\n"
        "os._exit(3)\n"
    )
    api = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    api.bind(str(tmp_path / "api.sock"))
    api.listen(4)
    received: list[bytes] = []

    def daemon_side() -> None:
        conn, _ = api.accept()
        received.append(conn.recv(100))
        conn.sendall(b"event")
        conn.close()

    thread = threading.Thread(target=daemon_side)
    thread.start()
    relay = _start_relay(tmp_path, runtime, port)
    assert relay.stdout is not None
    with relay.stdout:
        out = relay.stdout.read()
    relay.wait(timeout=30)
    thread.join(timeout=5)
    api.close()
    assert received == [b"GET /next"]
    assert out.decode().split() == ["event", "1"], "the runtime got the answer and its own variables"
    assert relay.returncode == 3


def test_relay_dies_of_the_signal_that_killed_the_runtime(tmp_path: Path) -> None:
    relay = _start_relay(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)", free_port())
    assert relay.stdout is not None
    with relay.stdout:
        relay.stdout.read()
    relay.wait(timeout=30)
    assert relay.returncode == -signal.SIGTERM


def test_relay_refuses_to_start_the_runtime_without_a_seccomp_filter(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    relay = _start_relay(tmp_path, f"open({str(marker)!r}, 'w')", free_port(), seccomp_filter="")
    assert relay.stdout is not None
    with relay.stdout:
        relay.stdout.read()
    relay.wait(timeout=30)
    assert relay.returncode == 126
    assert not marker.exists(), "the runtime never started unfiltered"


def test_the_backend_refuses_an_empty_seccomp_filter(tmp_path: Path) -> None:
    with pytest.raises(SandboxUnavailable, match="empty seccomp filter"):
        gvisor.GvisorSandbox(tmp_path / "gvisor", b"", runsc="/bin/true")
