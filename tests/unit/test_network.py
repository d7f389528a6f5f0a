"""The host's half of the outbound network: pool, firewall text, resolv.conf, and the netlink calls."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from silo.jail import network
from silo.jail.network import Lease, NetworkUnavailable, OutboundNetwork

ROUTE_TABLE = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
wg0\t00000000\t00000000\t0001\t0\t0\t100\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
"""


def test_leases_are_disjoint_slash_30s_of_the_pool() -> None:
    net = OutboundNetwork("10.99.0.0/28")
    leases = [net.lease() for _ in range(4)]
    assert [(x.link, x.gateway, x.address) for x in leases[:2]] == [
        ("silo0000-0", "10.99.0.1", "10.99.0.2/30"),
        ("silo0000-1", "10.99.0.5", "10.99.0.6/30"),
    ]
    for lease in leases:
        env = ipaddress.IPv4Interface(lease.address)
        assert ipaddress.IPv4Address(lease.gateway) in env.network
        assert env.network.subnet_of(net.pool)
        assert len(lease.link) <= 15, "an interface name has at most 15 characters"
    assert len(f"{net.prefix}{2**16}") <= 15
    with pytest.raises(NetworkUnavailable, match="in use"):
        net.lease()


def test_a_freed_address_is_the_last_to_come_back() -> None:
    net = OutboundNetwork("10.99.0.0/28")
    first = net.lease()
    net.release(first)  # its veth is long gone (it never existed): only the address comes back
    assert [net.lease().slot for _ in range(4)] == [1, 2, 3, first.slot]


def test_daemons_on_one_host_get_their_own_links_tables_and_addresses(tmp_path: Path) -> None:
    a, b, c = (OutboundNetwork(instance=i, locks=tmp_path) for i in ("i0a1", "i0a2", "i0a3"))
    assert (a.prefix, a.table) == ("siloi0a1-", "silo_i0a1")
    assert a.prefix != b.prefix and a.table != b.table
    assert a.pool is None, "a pool is taken only when the first outbound environment needs one"
    # b's pool would be the second /20, but the host routes part of it elsewhere (another daemon's leftover link).
    a._claim_pool(tmp_path, [])
    b._claim_pool(tmp_path, [{"dst": "10.213.16.4/30", "dev": "siloi0ff-1"}])
    assert a.pool is not None and b.pool is not None
    assert (str(a.pool), str(b.pool)) == ("10.213.0.0/20", "10.213.32.0/20")
    assert a.pool.subnet_of(network.ALL_POOL) and b.pool.subnet_of(network.ALL_POOL)
    a.close()  # gives its pool back (nothing of it is in nftables: close finds no table of its own)
    c._claim_pool(tmp_path, [])
    assert str(c.pool) == "10.213.0.0/20"
    pools = [OutboundNetwork(instance=f"i{n:03x}", locks=tmp_path) for n in range(14)]
    for net in pools:
        net._claim_pool(tmp_path, [])
    with pytest.raises(NetworkUnavailable, match="other silo daemons on this host hold the rest"):
        OutboundNetwork(instance="i100", locks=tmp_path)._claim_pool(tmp_path, [])


@pytest.mark.parametrize("pool", ["8.8.8.0/24", "10.0.0.0/31", "not a network"])
def test_pool_must_be_a_private_range_of_slash_30s(pool: str) -> None:
    with pytest.raises(ValueError):
        OutboundNetwork(pool)


def test_uplinks_are_the_interfaces_of_default_routes() -> None:
    assert network.default_route_links(ROUTE_TABLE) == {"eth0", "wg0"}
    assert network.default_route_links(ROUTE_TABLE.splitlines()[0]) == frozenset()


def test_a_pool_overlapping_a_host_route_is_found() -> None:
    routes = [
        {"dst": "default", "dev": "eth0"},
        {"dst": "192.0.2.0/24", "dev": "eth0"},
        {"dst": "10.213.0.4/30", "dev": "silo0000-1"},  # this daemon's own, left from before: not a clash
        {"type": "local", "dst": "10.213.7.9", "dev": "tun0"},
    ]
    assert (
        network.overlapping_route(ipaddress.IPv4Network("10.213.0.0/16"), routes, "silo0000-") == "10.213.7.9 on tun0"
    )
    assert network.overlapping_route(ipaddress.IPv4Network("10.214.0.0/16"), routes, "silo0000-") is None
    # Another daemon's link in the pool is a clash: two daemons must not hand out the same addresses.
    assert network.overlapping_route(ipaddress.IPv4Network("10.213.0.0/24"), routes, "silo0001-") == (
        "10.213.0.4/30 on silo0000-1"
    )


def test_ruleset_keeps_the_promises() -> None:
    text = network._ruleset(ipaddress.IPv4Network("10.213.0.0/16"), frozenset({"eth0"}), False, "silo-", "silo")
    # Any address of the host, dropped before DNAT could rewrite it, but for the named host services of
    # each environment; metadata and other environments too.
    assert (
        "type filter hook prerouting priority raw; policy accept;\n"
        '    iifname "silo-*" ip daddr . iifname . tcp dport @host_services accept\n'
        '    iifname "silo-*" fib daddr type local drop'
    ) in text
    assert 'iifname "silo-*" dnat ip to ip daddr . iifname . tcp dport map @host_dnat' in text
    # The host's input takes from an environment only what host_dnat translated to the loopback.
    assert 'iifname "silo-*" ct status dnat ip daddr 127.0.0.0/8 accept\n    iifname "silo-*" drop' in text
    assert 'iifname "silo-*" ip daddr { 169.254.0.0/16, 10.213.0.0/16 } drop' in text
    assert 'iifname "silo-*" meta nfproto ipv6 drop' in text
    assert 'iifname "silo-*" oifname != @uplinks drop' in text
    assert 'oifname "silo-*" drop' in text
    assert "ip saddr 10.213.0.0/16 oifname @uplinks masquerade" in text
    assert '"eth0"' in text and network.FORWARD_GUARD not in text
    # Loading it replaces any older table in one transaction.
    assert text.index("delete table inet silo") < text.index("table inet silo {\n  set")
    guarded = network._ruleset(ipaddress.IPv4Network("10.213.0.0/16"), frozenset(), True, "silo-", "silo")
    assert network.FORWARD_GUARD in guarded and "elements" not in guarded
    assert network.FORWARD_GUARD in network._guard_only("silo")
    assert 'iifname != "silo*" oifname != "silo*" drop' in guarded, "the guard spares every daemon's links"


def test_resolv_conf_keeps_only_reachable_servers() -> None:
    host = (
        "# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\n"
        "nameserver fd00::53\nnameserver 169.254.169.253\nnameserver nonsense\n"
        "search example.internal\noptions edns0 trust-ad\ndomain x\n"
    )
    assert network.resolv_conf(host) == ("nameserver 10.255.255.53\nsearch example.internal\noptions edns0 trust-ad\n")
    assert network.resolv_conf("nameserver 127.0.0.53\n") == ""


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating links needs root; CI runs as root")


@pytest.fixture()
def namespace() -> Iterator[int]:
    name = f"swt-unit-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)
        subprocess.run(["ip", "netns", "del", name], check=True)


@needs_root
def test_netlink_creates_addresses_and_deletes_a_veth(namespace: int) -> None:
    link = f"silo-u{os.getpid() % 100000}"
    lease = Lease(0, link, "10.254.77.1", "10.254.77.2/30")
    network.create_veth(lease.link, namespace)
    try:
        network.address_link(lease.link, lease.gateway, 30)
        shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", link], capture_output=True, text=True)
        assert "10.254.77.1/30" in shown.stdout, "the prefix comes with the address, never a classful /8"
        assert int(Path(f"/sys/class/net/{link}/flags").read_text(), 16) & 0x1, "the host end is up"
        name = f"swt-unit-{os.getpid()}"
        inside = subprocess.run(["ip", "-n", name, "-o", "link"], capture_output=True, text=True).stdout
        assert " eth0@" in inside
        with pytest.raises(NetworkUnavailable, match="File exists"):
            network.create_veth(lease.link, namespace)
    finally:
        network.delete_link(link)
    assert not Path(f"/sys/class/net/{link}").exists()
    network.delete_link(link)  # already gone: fine


@needs_root
def test_a_missing_firewall_is_noticed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A table of its own name, so a silo running on this machine keeps its own.
    table = f"silo_unit_{os.getpid()}"
    assert not network.firewall_loaded(table)
    text = network._ruleset(ipaddress.IPv4Network("10.213.0.0/16"), frozenset({"eth0"}), False, "silo-", table)
    subprocess.run(["nft", "-f", "-"], input=text, text=True, check=True)
    try:
        assert network.firewall_loaded(table)
        subprocess.run(["nft", "-f", "-"], input=network._guard_only(table), text=True, check=True)
        assert not network.firewall_loaded(table), "the guard alone is no firewall for environments"
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], check=True)
    assert not network.firewall_loaded(table)


def test_silo_tables_are_told_apart_by_what_they_hold() -> None:
    """What close() decides from: which daemons' firewalls are loaded, which tables guard forwarding."""
    ruleset = {
        "nftables": [
            {"metainfo": {"version": "1.0.6"}},
            {"table": {"family": "inet", "name": "silo_i001"}},
            {"chain": {"family": "inet", "table": "silo_i001", "name": "prerouting"}},
            {"table": {"family": "inet", "name": "silo_i002"}},
            {"chain": {"family": "inet", "table": "silo_i002", "name": "forward"}},
            {"rule": {"family": "inet", "table": "silo_i002", "chain": "forward", "comment": network.FORWARD_GUARD}},
            {"table": {"family": "ip", "name": "silo_nat"}},
            {"table": {"family": "inet", "name": "filter"}},
        ]
    }
    assert network.silo_tables(ruleset) == {
        "silo_i001": network.SiloTable(loaded=True, guard=False),
        "silo_i002": network.SiloTable(loaded=False, guard=True),
    }
