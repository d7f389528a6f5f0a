"""Several daemons on one host: tenants of one never share a uid or an address with tenants of another,
and a daemon that stops takes its host-wide state with it."""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from silo.sandbox.identity import UID_BASE, UID_COUNT, instance_of
from tests.support import SiloServer, create_python_function, make_client, payload_of, signed_request

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the jail needs root; CI runs these as root")

WHO = """
import fcntl, os, socket, struct
def handler(event, context):
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = fcntl.ioctl(s, 0x8915, struct.pack("16s24x", b"eth0"))  # SIOCGIFADDR
        address = socket.inet_ntoa(raw[20:24])
    except OSError:
        address = None
    return {"uid": os.getuid(), "address": address}
"""


def colliding_data_dirs(base: Path) -> tuple[Path, Path]:
    """Two data directories to which a hash of the path gives the same slot: the first four hex digits
    of the sha256 of their environments' directory, modulo 1,024 uid ranges (and so modulo 16 pools)."""
    seen: dict[int, Path] = {}
    for n in itertools.count():
        data = base / f"d{n}" / "data"
        digest = hashlib.sha256(str((data / "environments").resolve()).encode()).hexdigest()
        slot = int(digest[:4], 16) % 1024
        if slot in seen:
            for d in (seen[slot], data):
                d.parent.mkdir()
            return seen[slot], data
        seen[slot] = data
    raise AssertionError("unreachable")


def silo_tables() -> set[str]:
    out = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return {t["table"]["name"] for t in json.loads(out)["nftables"] if "table" in t}


def who(server: SiloServer, network: str) -> dict[str, Any]:
    """The uid and eth0 address of a new environment of a function with that Network setting."""
    client = make_client(server.endpoint)
    name = f"who-{network}"
    create_python_function(client, name, WHO, per_tenant=True, MemorySize=128)
    if network != "none":
        request = signed_request(
            server.endpoint,
            f"/silo/v1/functions/{name}/settings",
            data=json.dumps({"Network": network}).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=30).close()
    response = client.invoke(FunctionName=name, TenantId="t")
    body: dict[str, Any] = payload_of(response)
    assert "FunctionError" not in response, body
    return body


@pytest.fixture()
def two_daemons(tmp_path: Path) -> Iterator[tuple[SiloServer, SiloServer]]:
    first, second = (SiloServer(d, "--stems-per-function", "0") for d in colliding_data_dirs(tmp_path))
    first.start()
    try:
        second.start()
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_two_daemons_never_share_uids_or_addresses(two_daemons: tuple[SiloServer, SiloServer]) -> None:
    # A hash of the data directory gave these two daemons one uid range and one pool: the first
    # environment of each ran as the same uid (so they shared per-user kernel limits), and the second
    # daemon found its pool taken by the first one's links.
    first, second = (who(server, "none")["uid"] for server in two_daemons)
    assert first != second
    assert (first - UID_BASE) // UID_COUNT != (second - UID_BASE) // UID_COUNT, "one uid range"
    addresses = [who(server, "outbound")["address"] for server in two_daemons]
    assert all(addresses), addresses
    pools = [ipaddress.IPv4Interface(f"{a}/20").network for a in addresses]
    assert pools[0] != pools[1], f"the two daemons hand out addresses of one pool: {addresses}"
    instances = [instance_of(server.data_dir / "environments") for server in two_daemons]
    assert instances[0] != instances[1]
    assert {f"silo_{i}" for i in instances} <= silo_tables(), "each has a firewall table of its own"


def test_a_stopped_daemon_leaves_no_firewall_table_or_link(tmp_path: Path) -> None:
    server = SiloServer(tmp_path / "data", "--stems-per-function", "0")
    server.start()
    try:
        assert who(server, "outbound")["address"]
        instance = instance_of(server.data_dir / "environments")
        assert f"silo_{instance}" in silo_tables()
    finally:
        server.stop()
    assert f"silo_{instance}" not in silo_tables(), "a clean stop removes the daemon's table"
    assert not [n for n in os.listdir("/sys/class/net") if n.startswith(f"silo{instance}-")]
