"""`silo serve` as an operator runs it: from a config file, under a service manager that listens for
sd_notify (`Type=notify`), probed on `/healthz` and `/readyz`, logging JSON lines."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from silo.runtimes import catalog
from tests.support import SiloServer, create_python_function, make_client, python_runtime

HANDLER = "def handler(event, context):\n    return 'ok'\n"
WAIT_S = 60  # bounds on a hang, not measurements


@pytest.fixture()
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket in the abstract namespace, named in NOTIFY_SOCKET as systemd names its own."""
    name = f"@silo-test-notify-{os.getpid()}-{os.urandom(4).hex()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name[1:])
    sock.settimeout(WAIT_S)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    yield sock
    sock.close()


def until(sock: socket.socket, prefix: bytes) -> list[bytes]:
    """The messages received up to and including the first that starts with `prefix`."""
    seen = []
    while True:
        message = sock.recv(4096)
        seen.append(message)
        if message.startswith(prefix):
            return seen


def template_executables(server: SiloServer) -> list[str]:
    """The interpreters of the templates the server runs (its children running silo.jail.template)."""
    assert server.proc is not None
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == server.proc.pid and b"silo.jail.template" in b" ".join(cmdline):
            found.append(cmdline[0].decode())
    return found


def test_ready_is_told_when_readyz_is_ready_and_stopping_when_stopped(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    config = tmp_path / "silo.toml"
    config.write_text('log_format = "json"\nstems_per_function = 0\n')
    server = SiloServer(tmp_path / "data", "--config", str(config))
    server.start()
    try:
        assert until(notify_socket, b"READY=1")[-1] == b"READY=1\nSTATUS=serving"
        assert requests.get(f"{server.endpoint}/healthz", timeout=WAIT_S).json() == {"status": "up"}
        assert requests.get(f"{server.endpoint}/readyz", timeout=WAIT_S).json() == {"status": "ready"}
        create_python_function(make_client(server.endpoint), "warm-me", HANDLER)

        # Stopped: STOPPING=1. Started again, its function's runtime has a template to warm, and /readyz
        # says 503 for as long as it starts: READY=1 comes once it would say 200.
        server.proc.terminate()  # type: ignore[union-attr]
        assert until(notify_socket, b"STOPPING=1")[-1].startswith(b"STOPPING=1\n")
        server.stop()
        server.start()
        answers = []
        while True:
            answer = requests.get(f"{server.endpoint}/readyz", timeout=WAIT_S)
            answers.append((answer.status_code, answer.json()))
            if answer.status_code == 200:
                break
        before_ready = until(notify_socket, b"READY=1")
        assert all(m.startswith(b"STATUS=starting: ") for m in before_ready[:-1]), before_ready
        for status, body in answers[:-1]:
            assert status == 503 and set(body["Reasons"]) <= {"sandbox"}, body
            assert f"the templates of {python_runtime()}" in body["Reasons"]["sandbox"]
        assert requests.get(f"{server.endpoint}/readyz", timeout=WAIT_S).status_code == 200
        if os.geteuid() == 0:  # the jail: ready means the template of the deployed runtime is up
            wanted = str(catalog.python_interpreters()[python_runtime()].executable)
            assert wanted in template_executables(server), f"no {wanted} template; log:\n{server.log()}"
    finally:
        server.stop()
    # Every line the daemon wrote is one JSON object (log_format from the file), uvicorn's included.
    lines = server.log().splitlines()
    records = [json.loads(line) for line in lines]
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records), "uvicorn's lines are in the same format"


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "silo", "serve", *args], capture_output=True, text=True, timeout=WAIT_S, check=False
    )


def test_a_bad_config_file_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "silo.toml"
    config.write_text("keep_alive = 60\n")
    done = run_serve("--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2
    hint = "did you mean 'keep_alive_s'? (`silo serve --help` lists every setting)"
    assert done.stderr == f"silo: {config}: unknown key 'keep_alive'; {hint}\n"
    config.write_text('port = "high"\n')
    done = run_serve("--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert done.returncode == 2
    assert done.stderr == f"silo: {config}: port must be a whole number, not a string ('high')\n"
    assert not (tmp_path / "data").exists(), "nothing started"


def test_flags_and_environment_win_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    config = tmp_path / "silo.toml"
    config.write_text('port = 1\nlog_level = "error"\naccount_concurrency = 7\n')
    monkeypatch.setenv("SILO_LOG_LEVEL", "info")
    # SiloServer gives --port: the file's port 1 would not listen for a non-root server, and is overridden.
    server = SiloServer(tmp_path / "data", "--config", str(config), "--account-concurrency", "9")
    server.start()
    try:
        settings = make_client(server.endpoint).get_account_settings()
        assert settings["AccountLimit"]["ConcurrentExecutions"] == 9
    finally:
        server.stop()
    assert "silo serving the Lambda API" in server.log(), "the environment's info level won over the file's error"
