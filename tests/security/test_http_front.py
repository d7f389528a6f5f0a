"""Attacks on the HTTP front of a real `silo serve`: slow heads and bodies, huge heads, too many headers,
too many connections from one address and in all, and an oversized body sent before the answer is read.

Each attack must be answered (or cut) by the server within its bounds while a polite client is still
served. The server runs with short timeouts and small connection caps so that the attacks are quick.
Every address in 127.0.0.0/8 is loopback here, so binding a client socket to 127.0.0.x stands for
another caller.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import selectors
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import SiloServer, create_python_function, make_client, payload_of, signed_head, signed_request

HEAD_TIMEOUT_S = 2
BODY_TIMEOUT_S = 2
MAX_CONNECTIONS = 400
MAX_PER_ADDRESS = 50
SLACK_S = 15  # generous: the sweep runs once a second, and the two cores are shared
ECHO = "def handler(event, context):\n    return event\n"
INVOKE_ECHO = "/2015-03-31/functions/echo/invocations"


@pytest.fixture(scope="module")
def silo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiloServer]:
    server = SiloServer(tmp_path_factory.mktemp("front") / "data")
    # Settings by environment, which every version of the server reads (unknown ones are ignored).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SILO_HTTP_HEAD_TIMEOUT_S", str(HEAD_TIMEOUT_S))
        mp.setenv("SILO_HTTP_BODY_TIMEOUT_S", str(BODY_TIMEOUT_S))
        mp.setenv("SILO_HTTP_MAX_CONNECTIONS", str(MAX_CONNECTIONS))
        mp.setenv("SILO_HTTP_MAX_CONNECTIONS_PER_ADDRESS", str(MAX_PER_ADDRESS))
        server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo(silo_server: SiloServer) -> str:
    client = make_client(silo_server.endpoint)
    create_python_function(client, "echo", ECHO)
    assert payload_of(client.invoke(FunctionName="echo", Payload=b'{"warm": 1}')) == {"warm": 1}
    return "echo"


def connect(server: SiloServer, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def listing(server: SiloServer, headers: dict[str, str] | None = None) -> bytes:
    """ListFunctions, signed now with the server's administrator key."""
    return signed_head(server.endpoint, "GET", "/2015-03-31/functions/", headers)


def exchange(sock: socket.socket, request: bytes | None, timeout: float = 10) -> tuple[int, Any, bytes]:
    """Send `request` (None: nothing) and read one answer: status, headers, body."""
    sock.settimeout(timeout)
    if request is not None:
        sock.sendall(request)
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.headers, response.read()


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def vm_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


class Polite:
    """A client invoking the echo function again and again from another address, until told to stop."""

    def __init__(self, server: SiloServer, function: str) -> None:
        self.client = make_client(server.endpoint, read_timeout=30)
        self.function = function
        self.answers: list[Any] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                n = len(self.answers)
                self.answers.append(
                    payload_of(self.client.invoke(FunctionName=self.function, Payload=b'{"n": %d}' % n))
                )
            except Exception as exc:  # reported by the test
                self.errors.append(exc)
            time.sleep(0.1)

    def __enter__(self) -> Polite:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_slowloris_heads_are_closed_while_others_are_served(silo_server: SiloServer, echo: str) -> None:
    # 300 connections from ten addresses (under the per-address cap), each sending its head a byte at a time.
    socks = [connect(silo_server, f"127.0.0.{10 + i % 10}") for i in range(300)]
    answers: dict[socket.socket, bytes] = {s: b"" for s in socks}
    selector = selectors.DefaultSelector()
    try:
        for sock in socks:
            sock.sendall(b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: silo\r\nX-Slow: ")
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        alive = set(socks)
        started = time.monotonic()
        with Polite(silo_server, echo) as polite:
            while alive and time.monotonic() - started < HEAD_TIMEOUT_S + SLACK_S:
                for key, _ in selector.select(0.5):
                    sock = key.fileobj  # type: ignore[assignment]
                    try:
                        data = sock.recv(65536)
                    except ConnectionError:
                        data = b""
                    if data:
                        answers[sock] += data
                    elif sock in alive:
                        alive.discard(sock)
                        selector.unregister(sock)
                for sock in list(alive):
                    try:
                        sock.send(b"a")
                    except OSError:
                        alive.discard(sock)
                        selector.unregister(sock)
        assert not alive, f"{len(alive)} of 300 slow heads still open {HEAD_TIMEOUT_S + SLACK_S} s later"
        assert not polite.errors, polite.errors[:3]
        assert len(polite.answers) >= 3 and all(a == {"n": i} for i, a in enumerate(polite.answers))
        got = [a for a in answers.values() if a]
        assert got and all(a.startswith(b"HTTP/1.1 408 ") for a in got), got[:3]
        assert b"x-amzn-ErrorType: RequestTimeoutException" in got[0]
    finally:
        selector.close()
        for sock in socks:
            sock.close()


def test_slow_bodies_are_closed(silo_server: SiloServer, echo: str) -> None:
    socks = [connect(silo_server, "127.0.0.20") for _ in range(20)]
    try:
        for sock in socks:
            # Signed, so that authentication lets it through to wait for its body.
            head = signed_head(silo_server.endpoint, "POST", INVOKE_ECHO, {"Content-Length": "100000"})
            sock.sendall(head + b"{")
        started = time.monotonic()
        seen: list[bytes] = []
        for sock in socks:
            sock.settimeout(0.5)
            answer = b""
            while time.monotonic() - started < 2 * BODY_TIMEOUT_S + SLACK_S:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    with contextlib.suppress(OSError):
                        sock.send(b" ")  # a byte of body now and then: too slow
                    continue
                except ConnectionError:
                    data = b""
                if not data:
                    break
                answer += data
            else:
                pytest.fail("a body trickling a byte every half second is still being read")
            seen.append(answer)
        assert seen[0].startswith(b"HTTP/1.1 408 ")
        with connect(silo_server, "127.0.0.20") as sock:
            status, _, body = exchange(sock, listing(silo_server))
        assert status == 200, body
    finally:
        for sock in socks:
            sock.close()


def test_huge_header_gets_431_and_memory_stays_bounded(silo_server: SiloServer) -> None:
    assert silo_server.proc is not None
    pid = silo_server.proc.pid
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # the peak resident size starts again from the current one
    before = vm_kib(pid, "VmHWM")
    sock = connect(silo_server)
    try:
        sock.settimeout(60)
        sock.sendall(b"GET /2015-03-31/functions/ HTTP/1.1\r\nHost: silo\r\nX-Big: ")
        chunk = b"a" * (1 << 20)
        with contextlib.suppress(ConnectionError):
            for _ in range(64):
                sock.sendall(chunk)
        status, headers, body = exchange(sock, None)
    finally:
        sock.close()
    grown_mib = (vm_kib(pid, "VmHWM") - before) / 1024
    assert status == 431, body
    assert headers["x-amzn-ErrorType"] == "RequestHeaderFieldsTooLargeException"
    assert "larger than 65536 bytes" in json.loads(body)["message"]
    assert grown_mib < 32, f"the daemon's peak memory grew by {grown_mib:.0f} MiB for a 64 MiB header"


def test_too_many_headers_get_431(silo_server: SiloServer) -> None:
    def with_headers(n: int) -> bytes:
        # Two of the 100 fields allowed go to the signature (X-Amz-Date, Authorization).
        return listing(silo_server, {f"X-Field-{i}": "v" for i in range(n)})

    with connect(silo_server) as sock:
        assert exchange(sock, with_headers(90))[0] == 200
    with connect(silo_server) as sock:
        status, headers, body = exchange(sock, with_headers(1000))
    assert status == 431, body
    assert headers["x-amzn-ErrorType"] == "RequestHeaderFieldsTooLargeException"
    assert "more than 100 header fields" in json.loads(body)["message"]


def test_connections_per_address_are_capped(silo_server: SiloServer) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_PER_ADDRESS):
            held.append(connect(silo_server, "127.0.0.3"))
            assert exchange(held[-1], listing(silo_server))[0] == 200  # served, then idle in keep-alive
        with connect(silo_server, "127.0.0.3") as extra:
            status, headers, body = exchange(extra, None)  # answered at once, before any request
        assert status == 429, body
        assert headers["x-amzn-ErrorType"] == "TooManyRequestsException"
        assert headers["Retry-After"] == "1"
        message = json.loads(body)["message"]
        assert "Too many connections from 127.0.0.3" in message and f"at most {MAX_PER_ADDRESS}" in message
        with connect(silo_server, "127.0.0.2") as other:
            assert exchange(other, listing(silo_server))[0] == 200, "another address is still served"
        held.pop().close()
        deadline = time.monotonic() + SLACK_S
        while True:
            with connect(silo_server, "127.0.0.3") as again:
                status = exchange(again, listing(silo_server))[0]
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status == 200, "a connection closed gives its place back"
    finally:
        for sock in held:
            sock.close()


def test_total_connections_are_capped(silo_server: SiloServer) -> None:
    held: list[socket.socket] = []
    refused: tuple[int, Any, bytes] | None = None
    try:
        for i in range(MAX_CONNECTIONS + 50):
            sock = connect(silo_server, f"127.0.1.{1 + i // 40}")  # 40 from each address: under its cap
            held.append(sock)
            status, headers, body = exchange(sock, listing(silo_server))
            if status != 200:
                refused = (status, headers, body)
                break
        assert refused is not None, f"{len(held)} connections were all served"
        status, headers, body = refused
        assert status == 503, body
        assert headers["x-amzn-ErrorType"] == "ServiceUnavailableException"
        assert "http_max_connections" in json.loads(body)["Message"]
        assert len(held) - 1 <= MAX_CONNECTIONS
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + SLACK_S
    while True:
        with connect(silo_server, "127.0.1.200") as sock:
            status = exchange(sock, listing(silo_server))[0]
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200


def test_oversized_invoke_from_urllib_gets_413_not_a_reset(silo_server: SiloServer, echo: str) -> None:
    # urllib (http.client) writes its whole body, then reads; it asks for Connection: close.
    path = f"/2015-03-31/functions/{echo}/invocations"
    request = signed_request(silo_server.endpoint, path, data=json.dumps({"x": "a" * (7 << 20)}).encode())
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 413
    assert raised.value.headers["x-amzn-ErrorType"] == "RequestEntityTooLargeException"
    assert json.loads(raised.value.read()) == {
        "Message": "Request must be smaller than 6291456 bytes for the InvokeFunction operation"
    }
    raised.value.close()


def test_body_after_an_early_answer_is_not_read_forever(silo_server: SiloServer, echo: str) -> None:
    with connect(silo_server) as sock:
        sock.sendall(signed_head(silo_server.endpoint, "POST", INVOKE_ECHO, {"Content-Length": "4000000000"}))
        sent = 0
        chunk = b"a" * (1 << 20)
        try:
            while sent < 1 << 30:
                sent += sock.send(chunk)
        except ConnectionError:
            pass
        assert sent < 512 << 20, f"the server read and dropped {sent >> 20} MiB after answering 413"


def test_answers_a_client_never_reads_are_not_kept(silo_server: SiloServer, echo: str) -> None:
    # Each connection asks for a 5 MB answer and never reads it: the daemon held every answer for as long
    # as the connection lived. Now a connection whose unsent answer does not go down is aborted: what the
    # kernel already holds of the answer still arrives, then the end, and the daemon lets go of the rest.
    assert silo_server.proc is not None
    pid = silo_server.proc.pid
    before = vm_kib(pid, "VmRSS")
    payload = json.dumps({"x": "a" * (5 << 20)}).encode()
    request = signed_head(silo_server.endpoint, "POST", INVOKE_ECHO, body=payload) + payload
    socks = []
    for i in range(30):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answer waits in the daemon, not here
        sock.bind((f"127.0.0.{30 + i % 10}", 0))
        sock.connect(("127.0.0.1", silo_server.port))
        sock.sendall(request)
        socks.append(sock)
    try:
        time.sleep(1)
        held_mib = (vm_kib(pid, "VmRSS") - before) / 1024
        time.sleep(BODY_TIMEOUT_S + 2)
        deadline = time.monotonic() + SLACK_S
        received = []
        for sock in socks:
            got = 0
            with contextlib.suppress(ConnectionError, TimeoutError):
                while True:
                    sock.settimeout(max(0.1, deadline - time.monotonic()))
                    data = sock.recv(1 << 16)
                    if not data:
                        received.append(got)
                        break
                    got += len(data)
    finally:
        for sock in socks:
            sock.close()
    # (What the daemon let go of is not seen in its resident size: the allocator keeps freed memory for reuse.)
    assert held_mib > 30, f"the answers waited in the daemon ({held_mib:.0f} MiB): the attack took place"
    assert len(received) == len(socks), f"{len(received)} of {len(socks)} connections were ended"
    assert all(got < len(payload) for got in received), "each answer was cut short"
