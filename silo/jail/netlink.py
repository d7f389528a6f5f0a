"""The host's side of the outbound network over netlink: veth pairs and their addresses, IPv6 off on a
link, the nftables table's presence, and the conntrack entries of a released address. Plain requests on
short-lived netlink sockets, no process started; blocking calls, run off the event loop. Used by
silo.jail.network, which decides what to make; this module only speaks the protocol.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path


class NetworkUnavailable(Exception):
    """The host cannot give environments an outbound network; the message says why and what to do."""


# rtnetlink and ioctl numbers (linux/rtnetlink.h, linux/if_link.h, linux/veth.h, linux/sockios.h).
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_NEWADDR = 20
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFLA_IFNAME = 3
IFLA_LINKINFO = 18
IFLA_NET_NS_FD = 28
IFLA_INFO_KIND = 1
IFLA_INFO_DATA = 2
VETH_INFO_PEER = 1
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFF_UP = 0x1
# nftables and conntrack over netlink (linux/netfilter/nfnetlink*.h, nf_tables.h), to check the table
# cheaply and forget a released address's connections.
NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_NFTABLES = 10
IPCTNL_MSG_CT_NEW = 0
IPCTNL_MSG_CT_GET = 1
IPCTNL_MSG_CT_DELETE = 2
NLMSG_DONE = 3
NLM_F_DUMP = 0x300
NLA_F_NESTED = 0x8000
NLA_TYPE_MASK = 0x3FFF
CTA_TUPLE_ORIG = 1
CTA_TUPLE_IP = 1
CTA_IP_V4_SRC = 1
CTA_ID = 12
CTA_FILTER = 25
CTA_FILTER_ORIG_FLAGS = 1
CTA_FILTER_FLAG_CTA_IP_SRC = 1
NFT_MSG_GETCHAIN = 4
NFPROTO_INET = 1
NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_NAME = 3


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _ifinfomsg(flags: int = 0) -> bytes:
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, flags, flags)


def _netlink(protocol: int, kind: int, flags: int, body: bytes) -> int:
    """Send one netlink request; 0 when the kernel answered or acknowledged it, else its (positive) errno."""
    header = struct.pack("=LHHLL", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol) as nl:
        nl.send(header + body)
        reply = nl.recv(65536)
    _, reply_kind = struct.unpack_from("=LH", reply)
    return -int(struct.unpack_from("=i", reply, 16)[0]) if reply_kind == NLMSG_ERROR else 0


def _rtnetlink(kind: int, flags: int, body: bytes, what: str) -> None:
    code = _netlink(socket.NETLINK_ROUTE, kind, flags, body)
    if code:
        raise NetworkUnavailable(f"{what}: {os.strerror(code)}")


def _attrs(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(type, payload, the whole attribute) of each netlink attribute in `data`."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & NLA_TYPE_MASK, data[offset + 4 : offset + length], data[offset : offset + length]
        offset += (length + 3) & ~3


def _source_of(tuple_attr: bytes) -> bytes:
    for kind, payload, _ in _attrs(tuple_attr):
        if kind == CTA_TUPLE_IP:
            for ip_kind, ip, _ in _attrs(payload):
                if ip_kind == CTA_IP_V4_SRC:
                    return ip
    return b""


def connections_from(address: str) -> list[bytes]:
    """The conntrack entries (original tuple and id attributes) of connections started from `address`."""
    source = socket.inet_aton(address)
    tuple_orig = _attr(NLA_F_NESTED | CTA_TUPLE_ORIG, _attr(NLA_F_NESTED | CTA_TUPLE_IP, _attr(CTA_IP_V4_SRC, source)))
    # The kernel filters the dump by source (5.8 and later); an older one ignores the filter, and the
    # entries are filtered here as well.
    flags = _attr(
        NLA_F_NESTED | CTA_FILTER, _attr(CTA_FILTER_ORIG_FLAGS, struct.pack("=I", CTA_FILTER_FLAG_CTA_IP_SRC))
    )
    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + tuple_orig + flags
    kind = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
    header = struct.pack("=LHHLL", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    found: list[bytes] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as nl:
        nl.send(header + body)
        while True:
            data = nl.recv(1 << 20)
            offset = 0
            while offset + 16 <= len(data):
                length, msg_kind = struct.unpack_from("=LH", data, offset)
                if msg_kind == NLMSG_DONE:
                    return found
                if msg_kind == NLMSG_ERROR:
                    code = -int(struct.unpack_from("=i", data, offset + 16)[0])
                    if code:
                        raise NetworkUnavailable(f"list the connections of {address}: {os.strerror(code)}")
                    return found
                if msg_kind == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW:
                    entry = {k: whole for k, _, whole in _attrs(data[offset + 20 : offset + length])}
                    orig = entry.get(CTA_TUPLE_ORIG, b"")
                    if _source_of(orig[4:]) == source:
                        found.append(orig + entry.get(CTA_ID, b""))
                offset += (length + 3) & ~3


def forget_connections(address: str) -> None:
    """Delete the host's conntrack entries of connections started from `address` (`conntrack -D -s`)."""
    try:
        entries = connections_from(address)
    except OSError as exc:
        raise NetworkUnavailable(f"list the connections of {address}: {exc}") from exc
    kind = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE
    for entry in entries:
        code = _netlink(NETLINK_NETFILTER, kind, 0, struct.pack("=BBH", socket.AF_INET, 0, 0) + entry)
        # Gone meanwhile (it timed out) is as good as deleted.
        if code and code != errno.ENOENT:
            raise NetworkUnavailable(f"forget a connection of {address}: {os.strerror(code)}")


def firewall_loaded(table: str) -> bool:
    """Whether the table's prerouting chain is there (`nft list chain inet silo prerouting`, without a process).

    Something else can remove it (`nft flush ruleset`, a firewall service reloading); then it must be
    loaded again before another environment gets a route out.
    """
    body = struct.pack("=BBH", NFPROTO_INET, 0, 0)
    body += _attr(NFTA_CHAIN_TABLE, table.encode() + b"\0") + _attr(NFTA_CHAIN_NAME, b"prerouting\0")
    return _netlink(NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETCHAIN, 0, body) == 0


def create_veth(link: str, netns_fd: int) -> None:
    """A veth pair: `link` up on the host, `eth0` in the namespace behind `netns_fd` (`ip link add`, one request)."""
    peer = _ifinfomsg() + _attr(IFLA_IFNAME, b"eth0\0") + _attr(IFLA_NET_NS_FD, struct.pack("=i", netns_fd))
    info = _attr(IFLA_INFO_KIND, b"veth") + _attr(IFLA_INFO_DATA, _attr(VETH_INFO_PEER, peer))
    body = _ifinfomsg(IFF_UP) + _attr(IFLA_IFNAME, link.encode() + b"\0") + _attr(IFLA_LINKINFO, info)
    # EXCL: a leftover of the same name is an error to see, never a link to reuse.
    _rtnetlink(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, f"create the veth {link}")


def disable_ipv6(link: str) -> None:
    """No IPv6 on the host end `link`, not even a link-local address.

    Written before the jail brings its end up: until then the link has no carrier, so the kernel has
    not made a link-local address yet (the jail does the same for eth0 inside)."""
    try:
        Path(f"/proc/sys/net/ipv6/conf/{link}/disable_ipv6").write_text("1")
    except FileNotFoundError:
        if Path("/proc/sys/net/ipv6").exists():
            raise NetworkUnavailable(f"switch IPv6 off on {link}: the link is gone") from None
    except OSError as exc:
        raise NetworkUnavailable(f"switch IPv6 off on {link}: {exc}") from exc


def route_localnet(link: str) -> None:
    """Let `link` carry loopback addresses, which the kernel otherwise drops as martians: the host end of an
    environment whose host services are translated to the loopback (silo.jail.network)."""
    try:
        Path(f"/proc/sys/net/ipv4/conf/{link}/route_localnet").write_text("1")
    except OSError as exc:
        raise NetworkUnavailable(f"let {link} carry loopback addresses: {exc}") from exc


def delete_link(link: str) -> None:
    """Delete `link` (with its veth peer); one already gone, as when its namespace died first, is fine."""
    try:
        _rtnetlink(RTM_DELLINK, 0, _ifinfomsg() + _attr(IFLA_IFNAME, link.encode() + b"\0"), f"delete {link}")
    except NetworkUnavailable:
        if os.path.exists(f"/sys/class/net/{link}"):
            raise


def address_link(link: str, address: str, prefix: int) -> None:
    """Give `link` its IPv4 address and prefix at once, as `ip addr add` would.

    Not SIOCSIFADDR: that first applies the address's classful mask (a /8 for 10.x), and for that
    instant the host would route a whole foreign network into the environment.
    """
    packed = socket.inet_aton(address)
    body = struct.pack("=BBBBI", socket.AF_INET, prefix, 0, 0, socket.if_nametoindex(link))
    body += _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed)
    _rtnetlink(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body, f"address {link}")
