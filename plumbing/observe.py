"""What the namespaces hold: links, IPv4 addresses and default routes, as plain data.

One worker thread enters each namespace in turn (setns) and sends three netlink dumps there
(links, IPv4 addresses, IPv4 routes) on one socket; the root namespace is read the same way.
Replies are parsed with ``struct`` (only the attributes compared are read): 400 namespaces
take a few tens of milliseconds. Nothing here changes anything.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pyroute2.netlink import NETLINK_ROUTE, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETLINK, RTM_GETROUTE
from pyroute2.netlink.rtnl.ifinfmsg import IFF_NOARP, IFF_UP

from plumbing.netns import NETNS_DIR, NetnsError, enter_netns

_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_LINK, _IFLA_LINKINFO = 1, 3, 4, 5, 18
_IFLA_INFO_KIND = 1
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_OIF, _RTA_GATEWAY, _RTA_TABLE = 4, 5, 15
_RT_TABLE_MAIN = 254
_NLA_TYPE_MASK = 0x3FFF  # without the nested / byte-order flags
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type
_RECV = 1 << 20


@dataclass(frozen=True)
class LinkState:
    """One link as the kernel has it."""

    ifname: str
    index: int
    kind: str | None  # "veth", "tun", ... (None: no link info)
    mac: str
    mtu: int
    up: bool
    arp: bool
    peer_index: int | None  # a veth's peer's ifindex (in the peer's namespace)
    addresses: frozenset[tuple[str, int]] = frozenset()  # IPv4 (address, prefix length)


@dataclass(frozen=True)
class NamespaceState:
    """The links of one namespace by name, and its default routes as (gateway, ifname)."""

    links: dict[str, LinkState]
    default_routes: frozenset[tuple[str, str]] = frozenset()


@dataclass
class ObservedInterfaces:
    """Namespaces that could be read, by name; root-namespace links by name; what failed."""

    namespaces: dict[str, NamespaceState] = field(default_factory=dict)
    root: dict[str, LinkState] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # namespace -> why it was not read


# -- netlink dumps --------------------------------------------------------------------------


def _attrs(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + 4 <= end:
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            return
        yield kind & _NLA_TYPE_MASK, data[offset + 4:offset + length]
        offset += (length + 3) & ~3


def _dump(
    sock: socket.socket, kind: int, body: bytes, seq: int, buffer: bytearray
) -> Iterator[bytes]:
    """Payloads of every reply to one dump request (``buffer``: reused for every datagram)."""
    sock.sendall(_HEADER.pack(_HEADER.size + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                 + body)
    while True:
        data = bytes(memoryview(buffer)[:sock.recv_into(buffer)])
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, mtype, _flags, mseq, _pid = _HEADER.unpack_from(data, offset)
            if length < _HEADER.size:
                raise NetnsError("malformed netlink reply")
            if mseq == seq:
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, offset + _HEADER.size)[0]
                    raise NetnsError(f"netlink dump failed: {os.strerror(-code)}")
                yield data[offset + _HEADER.size:offset + length]
            offset += (length + 3) & ~3


def _links(
    sock: socket.socket, buffer: bytearray, only: set[str] | None = None
) -> dict[int, LinkState]:
    """Links by ifindex (``only``: just those names; the name is a link's first attribute)."""
    links = {}
    body = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    for msg in _dump(sock, RTM_GETLINK, body, 1, buffer):
        _family, _type, index, flags, _change = _IFINFO.unpack_from(msg)
        name, mac, mtu, peer, kind = "", "", 0, None, None
        for attr, value in _attrs(msg, _IFINFO.size, len(msg)):
            if attr == _IFLA_IFNAME:
                name = value.rstrip(b"\0").decode()
                if only is not None and name not in only:
                    break
            elif attr == _IFLA_ADDRESS:
                mac = ":".join(f"{b:02x}" for b in value)
            elif attr == _IFLA_MTU:
                mtu = struct.unpack("=I", value[:4])[0]
            elif attr == _IFLA_LINK:
                peer = struct.unpack("=I", value[:4])[0]
            elif attr == _IFLA_LINKINFO:
                for sub, subvalue in _attrs(value, 0, len(value)):
                    if sub == _IFLA_INFO_KIND:
                        kind = subvalue.rstrip(b"\0").decode()
        if only is not None and name not in only:
            continue
        links[index] = LinkState(name, index, kind, mac, mtu, bool(flags & IFF_UP),
                                 not flags & IFF_NOARP, peer)
    return links


def _addresses(sock: socket.socket, buffer: bytearray) -> dict[int, set[tuple[str, int]]]:
    found: dict[int, set[tuple[str, int]]] = {}
    for msg in _dump(sock, RTM_GETADDR, _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0), 2, buffer):
        _family, prefixlen, _flags, _scope, index = _IFADDR.unpack_from(msg)
        attrs = dict(_attrs(msg, _IFADDR.size, len(msg)))
        raw = attrs.get(_IFA_LOCAL, attrs.get(_IFA_ADDRESS))
        if raw is not None:
            found.setdefault(index, set()).add((socket.inet_ntoa(raw), prefixlen))
    return found


def _default_routes(sock: socket.socket, buffer: bytearray) -> set[tuple[str, int]]:
    """(gateway, output ifindex) of the main table's IPv4 default routes."""
    routes = set()
    body = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
    for msg in _dump(sock, RTM_GETROUTE, body, 3, buffer):
        _family, dst_len, _src, _tos, table, *_rest = _RTMSG.unpack_from(msg)
        if dst_len != 0:
            continue
        attrs = dict(_attrs(msg, _RTMSG.size, len(msg)))
        if _RTA_TABLE in attrs:
            table = struct.unpack("=I", attrs[_RTA_TABLE][:4])[0]
        if table != _RT_TABLE_MAIN or _RTA_GATEWAY not in attrs or _RTA_OIF not in attrs:
            continue
        routes.add((socket.inet_ntoa(attrs[_RTA_GATEWAY]),
                    struct.unpack("=I", attrs[_RTA_OIF][:4])[0]))
    return routes


def _read_here(
    routes: bool, buffer: bytearray, only: set[str] | None = None
) -> NamespaceState:
    """The current thread's namespace: links (``only``: those) with their addresses, and
    default routes."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.settimeout(5.0)
        sock.bind((0, 0))
        links = _links(sock, buffer, only)
        addresses = _addresses(sock, buffer)
        defaults = _default_routes(sock, buffer) if routes else set()
    by_name = {}
    for index, link in links.items():
        if index in addresses:
            link = LinkState(**{**vars(link), "addresses": frozenset(addresses[index])})
        by_name[link.ifname] = link
    named = frozenset((gw, links[oif].ifname) for gw, oif in defaults if oif in links)
    return NamespaceState(by_name, named)


def _read_namespaces(names: list[str], out: ObservedInterfaces) -> None:
    """Thread body: read each namespace, come back to where the thread began."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    buffer = bytearray(_RECV)
    try:
        for ns in names:
            try:
                fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            except OSError as err:
                out.errors[ns] = err.strerror or str(err)
                continue
            try:
                enter_netns(fd, f"namespace {ns}")
                out.namespaces[ns] = _read_here(routes=True, buffer=buffer)
            except (NetnsError, OSError) as err:
                out.errors[ns] = str(err)
            finally:
                os.close(fd)
    finally:
        try:
            enter_netns(home, "the root namespace")
        finally:
            os.close(home)


def _read_all(names: list[str], root_links: set[str], out: ObservedInterfaces) -> None:
    """Thread body: the namespaces, then (back home) the wanted root-namespace links."""
    if names:
        _read_namespaces(names, out)
    if root_links:
        out.root = _read_here(routes=False, buffer=bytearray(_RECV), only=root_links).links


class InterfaceReader:
    """Reads namespaces and root-namespace links on a worker thread, so that the caller can
    read OVSDB and its state files meanwhile: ``start()``, then ``result()``."""

    def __init__(self, namespaces: Iterable[str], root_links: Iterable[str]) -> None:
        self._out = ObservedInterfaces()
        self._worker = threading.Thread(
            target=_read_all, args=(sorted(set(namespaces)), set(root_links), self._out),
            name="switchboard-observe", daemon=True,
        )

    def start(self) -> InterfaceReader:
        self._worker.start()
        return self

    def result(self) -> ObservedInterfaces:
        self._worker.join()
        return self._out


def observe_interfaces(namespaces: Iterable[str], root_links: Iterable[str]) -> ObservedInterfaces:
    """Read the named namespaces (one worker thread, setns into each) and the named links of
    the root namespace (veth host ends, host legs); a link or namespace that is absent is
    simply not in the result."""
    return InterfaceReader(namespaces, root_links).start().result()
