"""An in-memory OpenFlow switch that runs compiled flows and groups on packet descriptions.

Like Faucet's fakeoftable: the pipeline is tested without a switch. A packet is a dict of
OpenFlow field names (``in_port``, ``eth_src``, ``ipv4_dst``, ``tcp_dst``...); ``process``
returns the (port, packet) pairs it leaves by and the tables it went through. Conntrack is
modelled too (zones, commit, marks, source and destination NAT, the
``+snat``/``+dnat`` state bits as OVS sets them, and their reversal on replies).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from controller.pipeline.flows import (
    Ct,
    DecTtl,
    Flow,
    Group,
    Move,
    Output,
    Resubmit,
    SelectGroup,
    SetField,
)
from controller.pipeline.matches import CT_DNAT, CT_EST, CT_NEW, CT_RPL, CT_SNAT, CT_TRK
from controller.pipeline.tables import TABLES, table_name

PORT_FIELDS = {6: ("tcp_src", "tcp_dst"), 17: ("udp_src", "udp_dst")}
CACHED = "_conntrack"  # the (zone, connection, ct_state) a packet was last tracked with


@dataclass
class Result:
    """Where a packet went and how."""

    outputs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [port for port, _ in self.outputs]


@dataclass
class Connection:
    original: tuple[Any, ...]  # (proto, src, sport, dst, dport) as committed
    mark: int = 0
    nat: tuple[str, int | None] | None = None  # destination NAT: (ip, port or None: kept)
    snat: str | None = None  # source NAT: the address (the port is kept)

    def translated(self) -> tuple[Any, ...]:
        """The 5-tuple of its original direction after NAT (what the other end sees)."""
        proto, src, sport, dst, dport = self.original
        if self.nat:
            dst, dport = self.nat[0], dport if self.nat[1] is None else self.nat[1]
        if self.snat:
            src = self.snat
        return (proto, src, sport, dst, dport)

    def reply_tuple(self) -> tuple[Any, ...]:
        """The 5-tuple its replies carry (what the other end answers to)."""
        proto, src, sport, dst, dport = self.translated()
        return (proto, dst, dport, src, sport)


def _five_tuple(pkt: dict[str, Any]) -> tuple[Any, ...]:
    sport, dport = PORT_FIELDS.get(pkt.get("ip_proto", 0), (None, None))
    return (pkt.get("ip_proto"), pkt.get("ipv4_src"), pkt.get(sport) if sport else None,
            pkt.get("ipv4_dst"), pkt.get(dport) if dport else None)


class FakeOFTable:
    """Flows keyed like a switch keys them: (table, priority, match) is unique."""

    def __init__(self) -> None:
        self.flows: dict[tuple[int, int, tuple[Any, ...]], Flow] = {}
        self.groups: dict[int, SelectGroup] = {}
        self.conntrack: dict[tuple[int, tuple[Any, ...]], Connection] = {}

    def apply(self, flows: list[Flow], groups: list[SelectGroup] = ()) -> int:
        """Install flows (OFPFC_ADD semantics) and groups; returns how many entries changed."""
        changed = 0
        for f in flows:
            key = (f.table_id, f.priority, f.match)
            if self.flows.get(key) != f:
                self.flows[key] = f
                changed += 1
        for g in groups:
            if self.groups.get(g.group_id) != g:
                self.groups[g.group_id] = g
                changed += 1
        return changed

    def replace(self, flows: list[Flow], groups: list[SelectGroup] = ()) -> None:
        """Hold exactly these flows and groups (conntrack state is kept, as on a switch)."""
        self.flows, self.groups = {}, {}
        self.apply(flows, groups)

    def lookup(self, table_id: int, packet: dict[str, Any]) -> Flow | None:
        best = None
        for (tid, _, _), f in self.flows.items():
            if tid == table_id and _matches(f, packet) and (
                best is None or f.priority > best.priority
            ):
                best = f
        return best

    def process(self, packet: dict[str, Any]) -> Result:
        """Run a packet through the pipeline from table 0."""
        pkt = dict(packet)
        pkt.setdefault("metadata", 0)
        result = Result()
        self._table(0, pkt, result, depth=0)
        return result

    # --- internals ----------------------------------------------------------------------
    def _table(self, table_id: int, pkt: dict[str, Any], result: Result, depth: int) -> None:
        if depth > 32:
            raise RuntimeError("pipeline loop")
        f = self.lookup(table_id, pkt)
        result.stages.append(table_name(table_id))
        if f is None:
            return
        for action in f.actions:
            if isinstance(action, Ct):
                self._ct(action, pkt)
                if action.table is not None:
                    self._table(TABLES[action.table], pkt, result, depth + 1)
                    return
            elif isinstance(action, Group):
                self._group(action.group_id, pkt, result, depth)
            elif isinstance(action, Resubmit):
                self._table(TABLES[action.table], pkt, result, depth + 1)
            else:
                _run(action, pkt, result)
        if f.write_metadata is not None:
            pkt["metadata"] = f.write_metadata
        if f.goto:
            self._table(TABLES[f.goto], pkt, result, depth + 1)

    def _group(self, group_id: int, pkt: dict[str, Any], result: Result, depth: int) -> None:
        group = self.groups.get(group_id)
        if not group or not group.buckets:
            return
        bucket = group.buckets[zlib.crc32(repr(_five_tuple(pkt)).encode()) % len(group.buckets)]
        for action in bucket:
            if isinstance(action, Resubmit):
                self._table(TABLES[action.table], pkt, result, depth + 1)
            else:
                _run(action, pkt, result)

    def _ct(self, ct: Ct, pkt: dict[str, Any]) -> None:
        key = _five_tuple(pkt)
        cached = pkt.get(CACHED)
        if cached is not None and cached[0] == ct.zone:
            # OVS keeps the connection a packet was tracked with, unless that pass did NAT:
            # another pass in the same zone is that connection, its NAT not done twice.
            _, conn, state = cached
        else:
            # After a pass with NAT, OVS looks the translated packet up again: it finds its
            # connection by the translated tuple, but without the NAT bits (+dnat is gone).
            conn, reply = self.conntrack.get((ct.zone, key)), False
            if conn is None:
                conn = self._reply_of(ct.zone, key)
                reply = conn is not None
            if conn is None:
                conn = self._translated_of(ct.zone, key)
            state = CT_TRK | (CT_NEW if conn is None else CT_EST | (CT_RPL if reply else 0))
            if conn is not None and ct.nat is not None:
                state |= _translate(pkt, conn, reply)
        if ct.commit and conn is None:
            conn = Connection(original=key)
            if ct.nat and ct.nat.startswith("src="):
                conn.snat = ct.nat.removeprefix("src=")
            elif ct.nat:
                ip, _, port = ct.nat.partition(":")
                conn.nat = (ip, int(port) if port else None)
            self.conntrack[(ct.zone, key)] = conn
            state |= _translate(pkt, conn, reply=False)
        if ct.commit and ct.mark is not None:
            conn.mark = ct.mark
        pkt["ct_state"] = state
        pkt["ct_mark"] = conn.mark if conn else 0
        if ct.nat is None:
            pkt[CACHED] = (ct.zone, conn, state)
        else:
            pkt.pop(CACHED, None)

    def _translated_of(self, zone: int, key: tuple[Any, ...]) -> Connection | None:
        """The connection in ``zone`` whose original direction, translated, is ``key``."""
        for (z, _), conn in self.conntrack.items():
            if z == zone and (conn.nat or conn.snat) and conn.translated() == key:
                return conn
        return None

    def _reply_of(self, zone: int, key: tuple[Any, ...]) -> Connection | None:
        """The first connection in ``zone`` whose replies look like ``key`` (as a switch would
        find one: a second connection with the same reply tuple is never reached)."""
        for (z, _), conn in self.conntrack.items():
            if z == zone and conn.reply_tuple() == key:
                return conn
        return None


def _translate(pkt: dict[str, Any], conn: Connection, reply: bool) -> int:
    """Apply a connection's NAT to a packet of it; returns the ct_state NAT bits OVS sets
    (``+dnat``/``+snat`` name what changed in this packet: undoing a destination NAT on a
    reply changes its source, so it is ``+snat``)."""
    bits = 0
    proto, src, sport, dst, dport = conn.original
    if conn.nat:
        if reply:
            _set_src(pkt, dst, dport)
            bits |= CT_SNAT
        else:
            _set_dst(pkt, *conn.nat)
            bits |= CT_DNAT
    if conn.snat:
        if reply:
            _set_dst(pkt, src, sport)
            bits |= CT_DNAT
        else:
            _set_src(pkt, conn.snat, None)
            bits |= CT_SNAT
    return bits


def _set_dst(pkt: dict[str, Any], ip: str, port: int | None) -> None:
    pkt["ipv4_dst"] = ip
    if port is not None and pkt.get("ip_proto") in PORT_FIELDS:
        pkt[PORT_FIELDS[pkt["ip_proto"]][1]] = port


def _set_src(pkt: dict[str, Any], ip: str, port: int | None) -> None:
    pkt["ipv4_src"] = ip
    if port is not None and pkt.get("ip_proto") in PORT_FIELDS:
        pkt[PORT_FIELDS[pkt["ip_proto"]][0]] = port


def _matches(f: Flow, pkt: dict[str, Any]) -> bool:
    for name, want in f.match:
        have = pkt.get(name)
        if name in ("ct_state", "ct_mark") and have is None:
            have = 0
        if have is None:
            return False
        if isinstance(want, tuple):
            value, mask = want
            if isinstance(value, int):
                if int(have) & mask != value & mask:
                    return False
            elif int(ip_address(have)) & int(ip_address(mask)) != int(ip_address(value)):
                return False
        elif str(have).lower() != str(want).lower():
            return False
    return True


def _run(action: Any, pkt: dict[str, Any], result: Result) -> None:
    if isinstance(action, Output):
        port = pkt["in_port"] if action.port == "in_port" else action.port
        if action.port != "in_port" and port == pkt.get("in_port"):
            return  # OpenFlow never sends a packet back out of its ingress port implicitly
        result.outputs.append((port, {k: v for k, v in pkt.items() if k != CACHED}))
    elif isinstance(action, SetField):
        if action.mask is None:
            pkt[action.name] = action.value
        else:
            old = int(pkt.get(action.name, 0))
            pkt[action.name] = (old & ~action.mask) | (int(action.value) & action.mask)
    elif isinstance(action, Move):
        pkt[action.dst] = pkt.get(action.src)
    elif isinstance(action, DecTtl):
        pkt["ip_ttl"] = pkt.get("ip_ttl", 64) - 1
