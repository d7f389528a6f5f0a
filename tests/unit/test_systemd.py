"""sd_notify, to a real datagram socket as systemd listens on one: a path or an abstract name (`@...`)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from silo.api.health import Readiness
from silo.cli import systemd


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = name = str(tmp_path / "notify")
    else:
        name = f"@silo-test-{os.getpid()}-{os.urandom(4).hex()}"
        address = "\0" + name[1:]
    sock.bind(address)
    sock.settimeout(10)  # a bound on a hang, not a measurement
    yield sock, name
    sock.close()


def test_notify_reaches_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, name = listener
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": name})
    assert sock.recv(4096) == b"READY=1"


def test_without_a_socket_nothing_is_sent() -> None:
    assert not systemd.notify("READY=1", {})
    assert not systemd.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not systemd.notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify"})


def test_ready_only_once_listening_and_ready_then_stopping(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, name = listener
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    readiness = Readiness()
    state = {"listening": False, "stopping": False}
    received: list[bytes] = []

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        task = loop.create_task(systemd.announce(readiness, lambda: state["listening"], lambda: state["stopping"]))

        async def next_message() -> bytes:
            message = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
            received.append(message)
            return message

        assert await next_message() == b"STATUS=starting: server: not listening yet"
        state["listening"] = True
        message = await next_message()
        assert message.startswith(b"STATUS=starting: store: the database is not open yet; sandbox: "), message
        readiness.up("store")
        assert await next_message() == b"STATUS=starting: sandbox: the environment backend has not started yet"
        readiness.up("sandbox")
        assert await next_message() == b"READY=1\nSTATUS=serving"
        assert readiness.reasons() == {}
        state["stopping"] = True
        assert await next_message() == b"STOPPING=1\nSTATUS=stopping: cleaning up environments"
        await asyncio.wait_for(task, 10)
        assert readiness.reasons() == {"server": "silo is stopping"}

    asyncio.run(scenario())
    assert sum(m.startswith(b"READY=1") for m in received) == 1
