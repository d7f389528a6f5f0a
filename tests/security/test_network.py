"""Outbound network (silo setting `Network: outbound`): the world is reachable, the host and other environments are not.

A fake "outside world" stands in for the internet: a network namespace made here, behind a veth of
its own, with a TCP server on an address that is not the host's and a default route of the host
through it (with a worse metric than the real one, so the host's own traffic is untouched). Every
test runs through the real server with the jail backend.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from silo.sandbox.identity import instance_of
from tests.security.test_auth import silo_cli
from tests.support import ROLE, SiloServer, make_client, payload_of, python_runtime, signed_request, zip_files

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root; CI runs these as root")

PROBE = """
import json, socket, subprocess, traceback
def handler(event, context):
    scope = {"result": None}
    try:
        exec(event["code"], scope)
    except BaseException as exc:
        return {"raised": type(exc).__name__, "error": str(exc), "trace": traceback.format_exc()}
    return {"result": scope["result"]}
"""

# Tries every (host, port) and says what happened; "connected" is what must not happen to the host.
CONNECT = """
import socket
from concurrent.futures import ThreadPoolExecutor
def attempt(target):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(target)
    except OSError as exc:
        s.close()
        return type(exc).__name__
    try:
        s.sendall(b"hello")
        return "connected:" + s.recv(64).decode(errors="replace")
    except OSError:
        return "connected:"
    finally:
        s.close()
with ThreadPoolExecutor(len(TARGETS)) as pool:
    result = {f"{h}:{p}": r for (h, p), r in zip(TARGETS, pool.map(attempt, TARGETS))}
"""

WORLD_NS = f"swt-world-{os.getpid()}"
WORLD_HOST_LINK = f"swt{os.getpid() % 100000}h"
WORLD_HOST = "198.51.100.1"  # the host's end: one of the host's own addresses
WORLD = "198.51.100.2"  # the world's server: not the host's
METADATA = "169.254.169.254"  # also served by the world: a cloud's metadata service, never to be reached
ANSWER = b"world says hi"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def silo_links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n.startswith("silo") and "-" in n}


def host_addresses() -> list[str]:
    out = json.loads(sh("ip", "-j", "-4", "addr").stdout)
    return [a["local"] for link in out for a in link.get("addr_info", []) if a.get("family") == "inet"]


@pytest.fixture(scope="module")
def world() -> Iterator[str]:
    """The outside world: a namespace behind a veth, with an echo server on WORLD and METADATA."""
    server: subprocess.Popen[bytes] | None = None
    try:
        for cmd in (
            ["ip", "netns", "add", WORLD_NS],
            ["ip", "link", "add", WORLD_HOST_LINK, "type", "veth", "peer", "name", "eth0", "netns", WORLD_NS],
            ["ip", "addr", "add", f"{WORLD_HOST}/30", "dev", WORLD_HOST_LINK],
            ["ip", "link", "set", WORLD_HOST_LINK, "up"],
            ["ip", "-n", WORLD_NS, "addr", "add", f"{WORLD}/30", "dev", "eth0"],
            ["ip", "-n", WORLD_NS, "addr", "add", f"{METADATA}/32", "dev", "eth0"],
            ["ip", "-n", WORLD_NS, "link", "set", "eth0", "up"],
            ["ip", "-n", WORLD_NS, "link", "set", "lo", "up"],
            ["ip", "-n", WORLD_NS, "route", "add", "default", "via", WORLD_HOST],
            ["ip", "route", "replace", f"{METADATA}/32", "via", WORLD],
            # A way out of the host, like the real one but never preferred: it makes this link an uplink.
            ["ip", "route", "replace", "default", "via", WORLD, "dev", WORLD_HOST_LINK, "metric", "4000"],
        ):
            sh(*cmd)
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                WORLD_NS,
                sys.executable,
                "-c",
                textwrap.dedent(f"""
                    import socketserver
                    class Echo(socketserver.BaseRequestHandler):
                        def handle(self):
                            self.request.recv(64)
                            self.request.sendall({ANSWER!r})
                    socketserver.ThreadingTCPServer.allow_reuse_address = True
                    socketserver.ThreadingTCPServer(("0.0.0.0", 8080), Echo).serve_forever()
                """),
            ]
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection((WORLD, 8080), timeout=1) as s:
                    s.sendall(b"x")
                    assert s.recv(64) == ANSWER
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield WORLD
    finally:
        if server is not None:
            server.kill()
            server.wait()
        sh("ip", "route", "del", f"{METADATA}/32", check=False)
        sh("ip", "netns", "del", WORLD_NS, check=False)  # takes the veth and the default route with it
        sh("ip", "link", "del", WORLD_HOST_LINK, check=False)


@pytest.fixture()
def host_listener() -> Iterator[int]:
    """A service of the host on every address: environments must not reach it on any of them."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(16)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"host service")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(srv.getsockname()[1])
    stop.set()
    thread.join()
    srv.close()


def settings_request(server: SiloServer, name: str, body: dict[str, Any]) -> urllib.request.Request:
    return signed_request(
        server.endpoint,
        f"/silo/v1/functions/{name}/settings",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )


def put_settings(server: SiloServer, name: str, body: dict[str, Any]) -> dict[str, Any]:
    with urllib.request.urlopen(settings_request(server, name, body), timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def make_probe(client: Any, server: SiloServer, network: str) -> str:
    name = f"net-{network}-{os.urandom(3).hex()}"
    client.create_function(
        FunctionName=name,
        Runtime=python_runtime(),
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": zip_files({"app.py": PROBE})},
        TenancyConfig={"TenantIsolationMode": "PER_TENANT"},
        MemorySize=128,
        Timeout=20,
    )
    client.get_waiter("function_active_v2").wait(FunctionName=name)
    if network != "none":
        assert put_settings(server, name, {"Network": network})["Network"] == network
    return name


def run(client: Any, function: str, tenant: str, code: str) -> Any:
    response = client.invoke(
        FunctionName=function, TenantId=tenant, Payload=json.dumps({"code": textwrap.dedent(code)}).encode()
    )
    out = payload_of(response)
    assert "result" in out and not response.get("FunctionError"), out
    return out["result"]


def connect(client: Any, function: str, tenant: str, targets: list[tuple[str, int]]) -> dict[str, str]:
    result: dict[str, str] = run(client, function, tenant, f"TARGETS = {targets!r}\n{CONNECT}")
    return result


def my_address(client: Any, function: str, tenant: str) -> str | None:
    """The environment's eth0 address, or None when it has loopback only."""
    code = """
        import fcntl, socket, struct
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                raw = fcntl.ioctl(s, 0x8915, struct.pack("16s24x", b"eth0"))  # SIOCGIFADDR
            result = socket.inet_ntoa(raw[20:24])
        except OSError:
            result = None
    """
    address: str | None = run(client, function, tenant, code)
    return address


@pytest.fixture(scope="module")
def client(silo_server: SiloServer) -> Any:
    return make_client(silo_server.endpoint)


def test_outbound_reaches_the_world_and_default_does_not(client: Any, silo_server: SiloServer, world: str) -> None:
    outbound = make_probe(client, silo_server, "outbound")
    default = make_probe(client, silo_server, "none")
    reached = connect(client, outbound, "a", [(world, 8080)])
    assert reached == {f"{world}:8080": f"connected:{ANSWER.decode()}"}
    refused = connect(client, default, "a", [(world, 8080)])
    assert not any(v.startswith("connected") for v in refused.values()), refused
    assert my_address(client, default, "a") is None, "the default environment has loopback only"
    resolv = run(client, outbound, "a", "result = open('/etc/resolv.conf').read()")
    assert "127.0.0." not in resolv, "a resolver on the host's loopback is unreachable, so it is not listed"


def test_outbound_cannot_reach_the_host(client: Any, silo_server: SiloServer, world: str, host_listener: int) -> None:
    outbound = make_probe(client, silo_server, "outbound")
    address = my_address(client, outbound, "h")
    assert address is not None
    gateway = gateway_of(address)
    hosts = sorted({"127.0.0.1", gateway, WORLD_HOST, *host_addresses()})
    ports = [silo_server.port, 5432, 6379, host_listener]
    targets = [(h, p) for h in hosts for p in ports] + [(METADATA, 8080), (world, 8080)]
    result = connect(client, outbound, "h", targets)
    connected = sorted(k for k, v in result.items() if v.startswith("connected"))
    assert connected == [f"{world}:8080"], result
    # The check itself can fail: from the host, its service answers on all those addresses, and so
    # does the "metadata service" of the world.
    for host in hosts:
        if host != gateway:
            with socket.create_connection((host, host_listener), timeout=2) as s:
                assert s.recv(64) == b"host service"
    with socket.create_connection((METADATA, 8080), timeout=2):
        pass


def test_outbound_cannot_reach_the_host_through_dnat(
    client: Any, silo_server: SiloServer, world: str, host_listener: int
) -> None:
    """A port the host forwards to a container (as Docker publishes one) is the host's too."""
    outbound = make_probe(client, silo_server, "outbound")
    table = f"swt_dnat_{os.getpid()}"
    address = next(a for a in host_addresses() if not a.startswith(("127.", "10.213.", "198.51.100.")))
    rules = f"""
        table ip {table} {{
          chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
            ip daddr {address} tcp dport 18080 dnat to {WORLD}:8080; }}
        }}
    """
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    try:
        result = connect(client, outbound, "d", [(address, 18080), (WORLD, 8080)])
    finally:
        sh("nft", "delete", "table", "ip", table, check=False)
    assert result[f"{address}:18080"] != f"connected:{ANSWER.decode()}", result
    assert result[f"{WORLD}:8080"].startswith("connected"), result


def test_outbound_environments_cannot_reach_each_other(client: Any, silo_server: SiloServer, world: str) -> None:
    outbound = make_probe(client, silo_server, "outbound")
    listen = """
        import builtins, socket
        srv = socket.socket()
        srv.bind(("0.0.0.0", 7777))
        srv.listen(8)
        builtins.SERVER = srv  # kept open for the next invocations of this environment
        result = True
    """
    run(client, outbound, "listener", listen)
    victim = my_address(client, outbound, "listener")
    attacker = my_address(client, outbound, "intruder")
    assert victim and attacker and victim != attacker
    result = connect(client, outbound, "intruder", [(victim, 7777)])
    assert not any(v.startswith("connected") for v in result.values()), result
    # The check itself can fail: the listener does accept connections, from inside its environment.
    own = connect(client, outbound, "listener", [(victim, 7777)])
    assert own[f"{victim}:7777"].startswith("connected"), own


def test_switching_back_to_none_and_deleting_leave_nothing(client: Any, silo_server: SiloServer, world: str) -> None:
    outbound = make_probe(client, silo_server, "outbound")
    address = my_address(client, outbound, "s")
    assert address is not None
    link = host_link_of(address)
    assert link in silo_links()
    put_settings(silo_server, outbound, {"Network": "none"})
    refused = connect(client, outbound, "s", [(world, 8080)])
    assert not any(v.startswith("connected") for v in refused.values()), refused
    assert my_address(client, outbound, "s") is None, "a settings change retires the old environment"
    wait_until_gone(link)

    put_settings(silo_server, outbound, {"Network": "outbound"})
    address = my_address(client, outbound, "s")
    assert address is not None
    link = host_link_of(address)
    client.delete_function(FunctionName=outbound)
    wait_until_gone(link)
    assert gateway_of(address) not in host_addresses(), "no address of it is left"
    table = sh("nft", "list", "table", "inet", daemon_table(silo_server)).stdout
    assert address not in table and link not in table, "no rule names the environment"


def daemon_table(server: SiloServer) -> str:
    """The nftables table of the server under test: each daemon has its own."""
    return f"silo_{instance_of(server.data_dir / 'environments')}"


def gateway_of(address: str) -> str:
    """The host end's address: the environment has .2 of its /30, the host .1."""
    return str(ipaddress.IPv4Address(address) - 1)


def host_link_of(address: str) -> str:
    """The host end of the veth whose /30 holds `address`."""
    for line in sh("ip", "-o", "-4", "addr", "show").stdout.splitlines():
        fields = line.split()
        if fields[1].startswith("silo") and "-" in fields[1] and fields[3].split("/")[0] == gateway_of(address):
            return str(fields[1])
    raise AssertionError(f"no host end of a veth for {address}")


def wait_until_gone(link: str) -> None:
    deadline = time.monotonic() + 20
    while link in silo_links():
        assert time.monotonic() < deadline, f"{link} is still there"
        time.sleep(0.05)
    assert not Path(f"/sys/class/net/{link}").exists()


def test_a_removed_firewall_is_back_before_the_next_environment(
    client: Any, silo_server: SiloServer, world: str, host_listener: int
) -> None:
    """`nft flush ruleset` or a firewall service's reload removes silo's table; no new environment runs without it."""
    outbound = make_probe(client, silo_server, "outbound")
    assert my_address(client, outbound, "before") is not None
    sh("nft", "delete", "table", "inet", daemon_table(silo_server))
    address = next(a for a in host_addresses() if not a.startswith(("127.", "10.213.", "198.51.100.")))
    result = connect(client, outbound, "after", [(address, host_listener), (WORLD, 8080)])
    assert result == {
        f"{address}:{host_listener}": "TimeoutError",  # dropped, as before the table went
        f"{WORLD}:8080": f"connected:{ANSWER.decode()}",
    }, result


def test_outbound_environments_have_no_ipv6(client: Any, silo_server: SiloServer, world: str) -> None:
    """Not even a link-local address, on either end of the veth: environments have no IPv6."""
    outbound = make_probe(client, silo_server, "outbound")
    inside = run(
        client,
        outbound,
        "v6",
        """
        import os
        path = "/proc/net/if_inet6"
        result = [line.split() for line in open(path)] if os.path.exists(path) else []
    """,
    )
    assert [f for f in inside if f[-1] != "lo"] == [], inside
    address = my_address(client, outbound, "v6")
    assert address is not None
    link = host_link_of(address)
    assert sh("ip", "-6", "-o", "addr", "show", "dev", link).stdout == ""
    # The check itself can fail: the world's veth, made the usual way, has a link-local address.
    assert "fe80::" in sh("ip", "-6", "-o", "addr", "show", "dev", WORLD_HOST_LINK).stdout


def tracked_from(address: str) -> list[str]:
    """The host's conntrack entries of connections started from `address`."""
    return [line for line in Path("/proc/net/nf_conntrack").read_text().splitlines() if f" src={address} " in line]


def test_a_released_address_keeps_no_tracked_connection(client: Any, silo_server: SiloServer, world: str) -> None:
    """Late replies to a retired environment's connections must not reach the next one given its address."""
    outbound = make_probe(client, silo_server, "outbound")
    hold = f"""
        import builtins, socket
        tcp = socket.create_connection(({world!r}, 8080), timeout=5)  # the world waits for its question
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.sendto(b"x", ({world!r}, 5353))
        builtins.HELD = (tcp, udp)
        result = True
    """
    run(client, outbound, "c", hold)
    address = my_address(client, outbound, "c")
    assert address is not None
    held = tracked_from(address)
    assert any(" tcp " in e and "ESTABLISHED" in e for e in held) and any(" udp " in e for e in held), held
    link = host_link_of(address)
    client.delete_function(FunctionName=outbound)
    wait_until_gone(link)
    deadline = time.monotonic() + 10
    while tracked_from(address) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tracked_from(address) == [], "the released address's connections are still tracked"


def host_service_elements(server: SiloServer) -> str:
    """What the daemon's host_services set and host_dnat map hold now."""
    table = daemon_table(server)
    kinds = (("set", "host_services"), ("map", "host_dnat"))
    return "".join(sh("nft", "list", kind, "inet", table, name).stdout for kind, name in kinds)


def test_host_services_reach_exactly_their_ports(
    client: Any, silo_server: SiloServer, world: str, host_listener: int
) -> None:
    named = make_probe(client, silo_server, "outbound")
    services = [f"127.0.0.1:{host_listener}", "127.0.0.1:5432"]
    assert put_settings(silo_server, named, {"HostServices": services})["HostServices"] == services
    other = make_probe(client, silo_server, "outbound")
    address = my_address(client, named, "a")
    assert address is not None
    gateway = gateway_of(address)
    hosts = sorted({"127.0.0.1", gateway, WORLD_HOST, *host_addresses()})
    ports = [silo_server.port, 5432, 6379, host_listener, host_listener + 1]
    result = connect(client, named, "a", [(h, p) for h in hosts for p in ports] + [(world, 8080)])
    connected = sorted(k for k, v in result.items() if v.startswith("connected"))
    # The two services at the gateway's address and nothing else of the host; the world as before.
    assert connected == sorted([f"{gateway}:{host_listener}", f"{gateway}:5432", f"{world}:8080"]), result
    assert result[f"{gateway}:{host_listener}"] == "connected:host service", result
    # Another tenant's environment of the same function reaches them too; another function's does not.
    b_gateway = gateway_of(my_address(client, named, "b") or "")
    b_result = connect(client, named, "b", [(b_gateway, host_listener)])
    assert b_result[f"{b_gateway}:{host_listener}"] == "connected:host service", b_result
    theirs = my_address(client, other, "a")
    assert theirs is not None
    refused = connect(client, other, "a", [(gateway_of(theirs), host_listener), (gateway_of(theirs), 5432)])
    assert not any(v.startswith("connected") for v in refused.values()), refused
    # Retired, its environments leave no element behind, so the next environment at their address gets nothing.
    assert address in host_service_elements(silo_server) or gateway in host_service_elements(silo_server)
    link = host_link_of(address)
    client.delete_function(FunctionName=named)
    wait_until_gone(link)
    deadline = time.monotonic() + 30
    while gateway in host_service_elements(silo_server) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gateway not in host_service_elements(silo_server), host_service_elements(silo_server)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"HostServices": ["127.0.0.1:5432"]}, "set Network to outbound"),
        ({"Network": "outbound", "HostServices": ["10.0.0.1:5432"]}, "host's loopback"),
        ({"Network": "outbound", "HostServices": ["127.0.0.1:0"]}, "host's loopback"),
        ({"Network": "outbound", "HostServices": ["localhost:5432"]}, "host's loopback"),
        ({"Network": "outbound", "HostServices": ["127.0.0.1:5432", "127.0.0.2:5432"]}, "port 5432 twice"),
        ({"Network": "outbound", "HostServices": "127.0.0.1:5432"}, "must be a list"),
    ],
)
def test_host_services_that_make_no_sense_are_refused(
    client: Any, silo_server: SiloServer, settings: dict[str, Any], says: str
) -> None:
    name = make_probe(client, silo_server, "none")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(settings_request(silo_server, name, settings), timeout=30)
    body = json.loads(refused.value.read())
    assert refused.value.code == 400 and says in (body.get("message") or body.get("Message", "")), body
    client.delete_function(FunctionName=name)


def test_the_silo_cli_sets_and_removes_host_services(client: Any, silo_server: SiloServer) -> None:
    name = make_probe(client, silo_server, "none")
    shown = silo_cli(
        silo_server,
        "settings",
        name,
        "--network",
        "outbound",
        "--host-service",
        "127.0.0.1:5432",
        "--host-service",
        "127.0.0.1:6379",
    )
    assert shown.returncode == 0, shown.stderr
    assert "HostServices           127.0.0.1:5432, 127.0.0.1:6379" in shown.stdout, shown.stdout
    removed = silo_cli(silo_server, "settings", name, "--host-service", "none")
    assert removed.returncode == 0 and "HostServices           none" in removed.stdout, removed.stdout
    refused = silo_cli(silo_server, "settings", name, "--network", "none", "--host-service", "127.0.0.1:5432")
    assert refused.returncode == 1 and "set Network to outbound" in refused.stderr, refused.stderr
    client.delete_function(FunctionName=name)
