"""Outbound network for jailed environments whose function asks for it (silo setting `Network: outbound`).

Every environment has its own network namespace with loopback only. An outbound one also gets a veth
pair: `eth0` inside, `silo<instance>-<slot>` on the host, a /30 of the pool (host end .1, environment .2) and a
default route through the host end. The host routes and masquerades its traffic out through the
uplinks (the interfaces of the host's default routes) and one nftables table per daemon,
`inet silo_<instance>`, owned by it alone and replaced atomically, keeps the promises:

- nothing from an environment reaches any address of the host itself (loopback, the uplink's
  address, bridges, its own veth end), checked in prerouting before any DNAT can rewrite a host
  address into a container's;
- nothing reaches link-local addresses (cloud metadata at 169.254.169.254) or another environment;
- an environment leaves only through an uplink, so the host's bridges and containers stay out of reach;
- nothing from outside opens a connection to an environment; no IPv6 at all;
- the one exception, per environment of a function whose silo setting `HostServices` names them: TCP
  ports of the host's loopback (`127.0.0.1:5432`), reached at the environment's gateway address and
  the same port, translated (DNAT) to the loopback address. The `host_services` set holds (gateway,
  link, port) for each such environment, the `host_dnat` map its target; both are emptied of an
  environment's elements before its address is given to another, and the link alone accepts
  loopback destinations (`route_localnet`), only as translated.

The rules match the daemon's link prefix and the pool, so an environment adds no rule: launching one costs
two netlink requests (the veth, the host end's address) and a sysctl write (no IPv6 on the host end); the
jail configures its own
end with ioctls too. No process is started per environment. This is the host's
half, run by the daemon (blocking calls: run them off the event loop); the jail addresses its own end
inside the namespace before it drops its capabilities (`silo.jail.enter`). Nothing here imports the
daemon, and the jail does not import this module, which would add milliseconds to every start.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import ipaddress
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from silo.jail.netlink import (
    NetworkUnavailable,
    address_link,
    create_veth,
    delete_link,
    disable_ipv6,
    firewall_loaded,
    forget_connections,
    route_localnet,
)

log = logging.getLogger(__name__)

DEFAULT_POOL = "10.213.0.0/16"
# Every silo daemon's veths start with this; each daemon's own with `silo<instance>-` (see OutboundNetwork),
# so that daemons sharing a host (tests, several data directories) never touch each other's links.
ALL_PREFIX = "silo"
ALL_POOL = ipaddress.IPv4Network(DEFAULT_POOL)
# Marks the rule that exists because silo switched IPv4 forwarding on: the host forwards nothing else.
FORWARD_GUARD = "silo switched forwarding on"
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
ROUTES = Path("/proc/net/route")
LINK_LOCAL = "169.254.0.0/16"
LOOPBACK = "127.0.0.0/8"


@dataclass(frozen=True, slots=True)
class Lease:
    """One environment's place in the pool."""

    slot: int
    link: str  # host end of the veth
    gateway: str  # the host end's address, the environment's default route
    address: str  # the environment's address with its prefix, on its eth0


def _run(what: str, argv: list[str], stdin: str = "") -> str:
    try:
        done = subprocess.run(argv, input=stdin.encode(), capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkUnavailable(f"{what}: {exc}") from exc
    if done.returncode != 0:
        raise NetworkUnavailable(f"{what}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode()


def _ruleset(pool: ipaddress.IPv4Network, uplinks: frozenset[str], guard: bool, prefix: str, table: str) -> str:
    """This daemon's whole table, replacing any previous one in the same transaction."""
    elements = ", ".join(json.dumps(u) for u in sorted(uplinks))
    # The guard spares every silo daemon's links, not only this one's: it must not cut off another daemon.
    guard_rule = f'iifname != "{ALL_PREFIX}*" oifname != "{ALL_PREFIX}*" drop comment "{FORWARD_GUARD}"'
    return f"""
table inet {table} {{}}
delete table inet {table}
table inet {table} {{
  set uplinks {{ type ifname; {f"elements = {{ {elements} }}" if elements else ""} }}
  set host_services {{ type ipv4_addr . ifname . inet_service; }}
  map host_dnat {{ type ipv4_addr . ifname . inet_service : ipv4_addr; }}
  chain prerouting {{
    type filter hook prerouting priority raw; policy accept;
    iifname "{prefix}*" ip daddr . iifname . tcp dport @host_services accept
    iifname "{prefix}*" fib daddr type local drop
    iifname "{prefix}*" ip daddr {{ {LINK_LOCAL}, {ALL_POOL} }} drop
    iifname "{prefix}*" meta nfproto ipv6 drop
  }}
  chain dstnat {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{prefix}*" dnat ip to ip daddr . iifname . tcp dport map @host_dnat
  }}
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname "{prefix}*" ct status dnat ip daddr {LOOPBACK} accept
    iifname "{prefix}*" drop
  }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname "{prefix}*" oifname != @uplinks drop
    oifname "{prefix}*" ct state established,related accept
    oifname "{prefix}*" drop
    {guard_rule if guard else ""}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {pool} oifname @uplinks masquerade
  }}
}}
"""


def _guard_only(table: str) -> str:
    """The table when no environment is outbound but silo once switched forwarding on."""
    return f"""
table inet {table} {{}}
delete table inet {table}
table inet {table} {{
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname != "{ALL_PREFIX}*" oifname != "{ALL_PREFIX}*" drop comment "{FORWARD_GUARD}"
  }}
}}
"""


@dataclass(frozen=True, slots=True)
class SiloTable:
    """What close() needs to know of a daemon's table: is its firewall loaded, does it guard forwarding."""

    loaded: bool
    guard: bool


def silo_tables(ruleset: dict[str, Any]) -> dict[str, SiloTable]:
    """The `inet silo_*` tables of `nft -j list ruleset` output, by name."""
    items = ruleset.get("nftables", [])
    names = [
        str(x["table"]["name"])
        for x in items
        if "table" in x and x["table"].get("family") == "inet" and str(x["table"].get("name")).startswith("silo_")
    ]
    chains = {(x["chain"].get("table"), x["chain"].get("name")) for x in items if "chain" in x}
    guards = {x["rule"].get("table") for x in items if "rule" in x and x["rule"].get("comment") == FORWARD_GUARD}
    return {n: SiloTable(loaded=(n, "prerouting") in chains, guard=n in guards) for n in names}


def default_route_links(route_table: str) -> frozenset[str]:
    """Interfaces carrying an IPv4 default route in `route_table` (/proc/net/route): the ways out of the host."""
    links = set()
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 7 and fields[1] == "00000000" and fields[7] == "00000000":
            links.add(fields[0])
    return frozenset(links)


def overlapping_route(pool: ipaddress.IPv4Network, routes: list[dict[str, str]], prefix: str) -> str | None:
    """The first route of the host (`ip -j route` output) whose destination overlaps `pool`, but this daemon's."""
    for route in routes:
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst in ("", "default") or dev.startswith(prefix):
            continue
        if ipaddress.IPv4Network(dst, strict=False).overlaps(pool):
            return f"{dst} on {dev}"
    return None


class OutboundNetwork:
    """The host's half: the address pool, the firewall table, and each environment's veth."""

    def __init__(self, pool: str | None = None, instance: str = "0000", locks: Path | None = None) -> None:
        """`instance` (4 characters, unique on the host) names this daemon's links and table. `locks`: a
        directory of lock files shared by every daemon on the host (pools, forwarding).

        Without a `pool`, the daemon's is a /20 of DEFAULT_POOL: given `locks`, the first /20 no other
        live daemon holds and no route of the host overlaps, taken before the first outbound environment
        and held until `close`; without, the first /20 (tests)."""
        self.prefix = f"{ALL_PREFIX}{instance}-"
        self.table = f"silo_{instance}"
        self._locks = locks
        self._pool_locks = locks if pool is None else None
        self._pool_lock_fd = -1
        # First in, first out: an address freed now is the last handed out again, so late replies to
        # a retired environment's connections do not reach its successor. lease() runs on the event
        # loop, release() in worker threads; a deque's popleft and append are atomic.
        self._free: collections.deque[int] = collections.deque()
        self.pool: ipaddress.IPv4Network | None = None
        if self._pool_locks is None:
            self._use_pool(ipaddress.IPv4Network(pool or str(next(ALL_POOL.subnets(new_prefix=20)))))
        self._lock = threading.Lock()
        self._ready = False
        self._guard = False
        self._uplinks: frozenset[str] = frozenset()
        self._host_services: dict[int, str] = {}  # slot: the elements it added, to delete with it

    def sweep(self) -> None:
        """At daemon start: remove the veths and the table a previous run left, keeping its forwarding guard."""
        for name in os.listdir("/sys/class/net"):
            if name.startswith(self.prefix):
                # Deleting the host end of a veth deletes the pair; their namespaces died with the old daemon.
                delete_link(name)
        if shutil.which("nft") is None:
            return
        try:
            old = _run("read silo's old firewall table", ["nft", "list", "table", "inet", self.table])
        except NetworkUnavailable:
            return  # no table: nothing to remove
        # If silo once switched forwarding on, the guard must outlive the table, or the host would
        # route for anyone while no environment is outbound.
        self._guard = FORWARD_GUARD in old
        if self._guard:
            _run("keep the forwarding guard", ["nft", "-f", "-"], _guard_only(self.table))
        else:
            _run("remove silo's old firewall table", ["nft", "delete", "table", "inet", self.table])

    def ensure_ready(self) -> None:
        """Before each outbound environment: on the first, check the pool is free; (re)load the firewall if
        it is not there; switch forwarding on."""
        with self._lock, self._forwarding_locked():
            if self._ready and firewall_loaded(self.table):
                return
            if self._ready:
                log.error(
                    "silo's firewall table was removed by something else; outbound environments started "
                    "before now were unfiltered until this reload"
                )
            # Without nft there is no firewall, and without the firewall no environment may have a route out.
            if shutil.which("nft") is None:
                raise NetworkUnavailable("outbound network needs nftables: install the `nftables` package")
            self._ready = False
            self._check_pool_is_free()
            # The firewall goes in before forwarding is on, so not one packet is routed unfiltered.
            self._guard = self._guard or IP_FORWARD.read_text().strip() != "1"
            self._uplinks = default_route_links(ROUTES.read_text())
            pool = self.pool
            if pool is None:
                raise NetworkUnavailable("no address pool was taken for this daemon's environments")
            _run(
                "load silo's firewall table",
                ["nft", "-f", "-"],
                _ruleset(pool, self._uplinks, self._guard, self.prefix, self.table),
            )
            try:
                IP_FORWARD.write_text("1")
            except OSError as exc:
                raise NetworkUnavailable(f"switch IPv4 forwarding on: {exc}") from exc
            self._ready = True

    def close(self) -> None:
        """At daemon stop, once every environment is gone: remove this daemon's table, give its pool back.

        The forwarding guard outlives the table only while it is needed. If silo switched forwarding on
        and another daemon's firewall is loaded, that daemon routes through it, so forwarding stays on and
        the guard with it (a table of this name holding nothing else), unless that daemon's table carries
        a guard of its own. When no other daemon's firewall is loaded, forwarding goes back off as it was
        before silo, and the guards other daemons left (guard-only tables) go with it."""
        with self._lock, self._forwarding_locked():
            self._ready = False
            if shutil.which("nft") is not None:
                self._remove_table()
            if self._pool_lock_fd >= 0:
                os.close(self._pool_lock_fd)
                self._pool_lock_fd = -1
                self.pool = None

    def _remove_table(self) -> None:
        tables = silo_tables(json.loads(_run("read the firewall", ["nft", "-j", "list", "ruleset"]) or "{}"))
        if self.table not in tables:
            return
        mine = tables.pop(self.table)
        self._guard = self._guard or mine.guard
        loaded = [t for t in tables.values() if t.loaded]
        if self._guard and loaded and not any(t.guard for t in loaded):
            _run("keep the forwarding guard", ["nft", "-f", "-"], _guard_only(self.table))
            return
        if not loaded and (self._guard or any(t.guard for t in tables.values())):
            # Nothing of silo routes any more: forwarding off first, so no packet is routed unguarded.
            try:
                IP_FORWARD.write_text("0")
            except OSError as exc:
                raise NetworkUnavailable(f"switch IPv4 forwarding back off: {exc}") from exc
            for name, table in tables.items():
                if table.guard:
                    _run("remove a forwarding guard no longer needed", ["nft", "delete", "table", "inet", name])
        _run("remove silo's firewall table", ["nft", "delete", "table", "inet", self.table])

    @contextlib.contextmanager
    def _forwarding_locked(self) -> Iterator[None]:
        """Host-wide: whether forwarding must be on, and which table guards it, is decided by one daemon at a time."""
        if self._locks is None:
            yield
            return
        try:
            self._locks.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self._locks / "forwarding.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise NetworkUnavailable(f"cannot open the forwarding lock in {self._locks}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _use_pool(self, pool: ipaddress.IPv4Network) -> None:
        if pool.prefixlen > 30 or not pool.is_private:
            raise ValueError(f"the environments' network pool must be a private IPv4 range of /30 or more: {pool}")
        self.pool = pool
        self._free = collections.deque(range(pool.num_addresses // 4))

    def _check_pool_is_free(self) -> None:
        # A pool that overlaps a route of the host would hijack that network for the environments.
        routes = json.loads(_run("read the host's routes", ["ip", "-j", "-4", "route", "show", "table", "all"]) or "[]")
        if self.pool is None and self._pool_locks is not None:
            self._claim_pool(self._pool_locks, routes)
            return
        if self.pool is None:
            raise NetworkUnavailable("no address pool was given for this daemon's environments")
        clash = overlapping_route(self.pool, routes, self.prefix)
        if clash:
            raise NetworkUnavailable(
                f"the environments' network pool {self.pool} overlaps the host's route to {clash}; "
                "choose another private range"
            )

    def _claim_pool(self, locks: Path, routes: list[dict[str, str]]) -> None:
        """Take the first /20 of DEFAULT_POOL that no other live daemon holds (its lock file says) and
        that no route of the host overlaps (another daemon's leftover links, say)."""
        try:
            locks.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise NetworkUnavailable(f"cannot create the address pools' locks in {locks}: {exc}") from exc
        clashes = []
        for n, candidate in enumerate(ALL_POOL.subnets(new_prefix=20)):
            try:
                fd = os.open(locks / f"{n}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise NetworkUnavailable(f"cannot open the lock of the address pool {candidate}: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            clash = overlapping_route(candidate, routes, self.prefix)
            if clash is None:
                self._pool_lock_fd = fd
                self._use_pool(candidate)
                return
            os.close(fd)
            clashes.append(f"{candidate} overlaps the host's route to {clash}")
        raise NetworkUnavailable(
            f"no part of {ALL_POOL} is free for this daemon's environments: the other silo daemons on this host "
            f"hold the rest{'; ' + '; '.join(clashes) if clashes else ''}. Stop a daemon that no longer needs an "
            "outbound network"
        )

    def lease(self) -> Lease:
        """Take a free /30 of the pool."""
        if self.pool is None:
            raise NetworkUnavailable("the network is not ready: no address pool is held yet")
        try:
            slot = self._free.popleft()
        except IndexError:
            raise NetworkUnavailable(f"every address of the pool {self.pool} is in use") from None
        base = self.pool.network_address + 4 * slot
        return Lease(slot, f"{self.prefix}{slot}", str(base + 1), f"{base + 2}/30")

    def attach(self, lease: Lease, netns_fd: int) -> None:
        """Create the environment's veth: `eth0` in the namespace behind `netns_fd`, the addressed host end up."""
        self._follow_uplinks()
        create_veth(lease.link, netns_fd)
        disable_ipv6(lease.link)
        address_link(lease.link, lease.gateway, 30)

    def _follow_uplinks(self) -> None:
        # The way out may change (a new default route); egress and masquerading follow it.
        uplinks = default_route_links(ROUTES.read_text())
        with self._lock:
            if uplinks == self._uplinks:
                return
            elements = ", ".join(json.dumps(u) for u in sorted(uplinks))
            _run(
                "update the uplinks",
                ["nft", "-f", "-"],
                f"flush set inet {self.table} uplinks\n"
                + (f"add element inet {self.table} uplinks {{ {elements} }}\n" if elements else ""),
            )
            self._uplinks = uplinks

    def open_host_services(self, lease: Lease, services: tuple[str, ...]) -> None:
        """Let the environment behind `lease` reach each of `services` (`127.0.0.1:5432`) at its gateway's
        address and the service's port, and nothing else of the host."""
        if not services:
            return
        keys, targets = [], []
        for service in services:
            address, _, port = service.rpartition(":")
            key = f"{lease.gateway} . {json.dumps(lease.link)} . {int(port)}"
            keys.append(key)
            targets.append(f"{key} : {ipaddress.IPv4Address(address)}")
        # Replies come from the loopback address to a non-loopback link, which the kernel routes only
        # where route_localnet is on; the firewall lets through only what host_dnat translated.
        route_localnet(lease.link)
        elements = (
            f"{{ {', '.join(keys)} }}\n",
            f"{{ {', '.join(targets)} }}\n",
        )
        # One transaction: both elements are added, or neither.
        _run(
            "open the environment's host services",
            ["nft", "-f", "-"],
            f"add element inet {self.table} host_services {elements[0]}"
            f"add element inet {self.table} host_dnat {elements[1]}",
        )
        self._host_services[lease.slot] = (
            f"delete element inet {self.table} host_services {elements[0]}"
            f"delete element inet {self.table} host_dnat {elements[1]}"
        )

    def release(self, lease: Lease) -> None:
        """After the environment died: delete its veth if the kernel has not yet, forget its connections,
        close its host services, and free its address.

        The host's connection tracking keeps an entry per connection the environment made (an
        established TCP one for five days): left there, a late reply would be translated back to the
        address and forwarded, as part of an established connection, to the next environment given it.
        An address whose host services cannot be closed is never given again: the next environment
        there would reach them."""
        delete_link(lease.link)
        forget_connections(lease.address.split("/")[0])
        closing = self._host_services.pop(lease.slot, None)
        if closing is not None:
            try:
                _run("close the environment's host services", ["nft", "-f", "-"], closing)
            except NetworkUnavailable as exc:
                if firewall_loaded(self.table):
                    log.error("address %s is not used again: %s", lease.address, exc)
                    return
                # The table was removed (its elements with it) and is loaded anew before the next use.
        self._free.append(lease.slot)


def resolv_conf(host_resolv: str) -> str:
    """The environment's resolv.conf: the host's name servers that an environment can reach.

    A resolver on the host itself (127.0.0.53 of systemd-resolved, a dnsmasq on loopback) is out of
    reach by design, as is any IPv6 server; such lines are left out.
    """
    lines = []
    for line in host_resolv.splitlines():
        words = line.split()
        if not words or words[0] not in ("nameserver", "search", "options"):
            continue
        if words[0] == "nameserver":
            try:
                server = ipaddress.ip_address(words[1] if len(words) > 1 else "")
            except ValueError:
                continue
            if server.version != 4 or server.is_loopback or server.is_link_local:
                continue
        lines.append(" ".join(words))
    return "".join(f"{line}\n" for line in lines)
