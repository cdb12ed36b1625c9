"""One batch of netlink requests that makes a namespace's interfaces right: MAC, MTU, link
up, address and default route, sent on one socket, acknowledged one by one."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyroute2.netlink import (
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE, rtprotos, rtypes
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import RT_SCOPE_UNIVERSE, rtmsg

_RT_TABLE_MAIN = 254
_RTN_UNICAST = rtypes["RTN_UNICAST"]
_RTPROT_BOOT = rtprotos["RTPROT_BOOT"]  # what ``ip route add`` records


@dataclass(frozen=True)
class IfaceConfig:
    """How an interface must look: in a namespace (``netns``) or in the root one (None)."""

    ifname: str
    mac: str | None
    ip: IPv4Address
    prefixlen: int
    mtu: int
    netns: str | None = None
    default_gateway: IPv4Address | None = None
    tx_offload: bool = True  # False: the kernel checksums what it sends (no offload)


def _message(cls: type, kind: int, flags: int, fields: dict, attrs: list, seq: int) -> bytes:
    msg = cls()
    for key, value in fields.items():
        msg[key] = value
    msg["attrs"] = attrs
    msg["header"]["type"] = kind
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | flags
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return msg.data


def _requests(cfg: IfaceConfig, index: int) -> list[tuple[str, int, type, int, dict, list]]:
    """(what, type, message class, flags, fields, attributes) that make one interface right."""
    link = [("IFLA_MTU", cfg.mtu)] + ([("IFLA_ADDRESS", cfg.mac)] if cfg.mac else [])
    replace = NLM_F_CREATE | NLM_F_REPLACE
    out = [
        ("setting MAC, MTU and up", RTM_NEWLINK, ifinfmsg, 0,
         {"index": index, "flags": IFF_UP, "change": IFF_UP}, link),
        (f"adding address {cfg.ip}/{cfg.prefixlen}", RTM_NEWADDR, ifaddrmsg, replace,
         {"index": index, "family": socket.AF_INET, "prefixlen": cfg.prefixlen},
         [("IFA_LOCAL", str(cfg.ip)), ("IFA_ADDRESS", str(cfg.ip))]),
    ]
    if cfg.default_gateway is not None:
        out.append(
            (f"adding default route via {cfg.default_gateway}", RTM_NEWROUTE, rtmsg, replace,
             {"family": socket.AF_INET, "table": _RT_TABLE_MAIN, "proto": _RTPROT_BOOT,
              "scope": RT_SCOPE_UNIVERSE, "type": _RTN_UNICAST},
             [("RTA_GATEWAY", str(cfg.default_gateway)), ("RTA_OIF", index)])
        )
    return out


def netlink_batch(configs: Sequence[IfaceConfig], loopback: bool, where: str) -> list[str]:
    """Configure interfaces of the current thread's namespace with one batch of netlink
    requests on one socket; return what failed."""
    errors: list[str] = []
    batch: list[bytes] = []
    what: dict[int, str] = {}

    def add(label: str, kind: int, cls: type, flags: int, fields: dict, attrs: list) -> None:
        seq = len(batch) + 1
        what[seq] = label
        batch.append(_message(cls, kind, flags, fields, attrs, seq))

    if loopback:
        add("lo: setting up", RTM_NEWLINK, ifinfmsg, 0,
            {"index": socket.if_nametoindex("lo"), "flags": IFF_UP, "change": IFF_UP}, [])
    for cfg in configs:
        try:
            index = socket.if_nametoindex(cfg.ifname)
        except OSError:
            errors.append(f"{where}interface {cfg.ifname}: no such interface")
            continue
        for label, *request in _requests(cfg, index):
            add(f"{cfg.ifname}: {label}", *request)
    if not batch:
        return errors
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.settimeout(5.0)
        sock.bind((0, 0))
        sock.sendall(b"".join(batch))
        pending = set(what)
        while pending:
            data = sock.recv(65536)
            for seq, code in _acks(data):
                pending.discard(seq)
                if code and seq in what:
                    errors.append(f"{where}{what[seq]}: {os.strerror(-code)}")
    return errors


def _acks(data: bytes) -> list[tuple[int, int]]:
    """(sequence number, error code) of every NLMSG_ERROR (ack) in a netlink datagram."""
    acks, offset = [], 0
    while offset + 16 <= len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, offset)
        if kind == NLMSG_ERROR:
            acks.append((seq, struct.unpack_from("=i", data, offset + 16)[0]))
        offset += (length + 3) & ~3
    return acks
