"""An in-memory OpenFlow switch that runs compiled flows and groups on packet descriptions.

Like Faucet's fakeoftable: the pipeline is tested without a switch. A packet is a dict of
OpenFlow field names (``in_port``, ``eth_src``, ``ipv4_dst``, ``tcp_dst``...); ``process``
returns the (port, packet) pairs it leaves by and the tables it went through. Conntrack is
modelled too (zones, commit, marks, source and destination NAT, its ``+dnat`` state bit and its
reversal on replies).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from controller.compiler import CT_DNAT, CT_EST, CT_NEW, CT_RPL, CT_TRK
from controller.flows import (
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
from controller.tables import TABLES, table_name

PORT_FIELDS = {6: ("tcp_src", "tcp_dst"), 17: ("udp_src", "udp_dst")}


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
    mark: int = 0
    nat: tuple[str, int | None] | None = None  # translated (dst ip, dst port)
    snat: str | None = None  # translated source address (source NAT keeps the port)


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
        conn = self.conntrack.get((ct.zone, key))
        state = CT_TRK
        if conn is not None:
            state |= CT_EST
            if conn.nat and ct.nat is not None:
                _set_dst(pkt, *conn.nat)
                state |= CT_DNAT
            if conn.snat and ct.nat is not None:
                pkt["ipv4_src"] = conn.snat
        else:
            reply = self._reply_of(ct.zone, key)
            if reply is not None:
                conn, original = reply
                state |= CT_EST | CT_RPL
                if conn.nat and ct.nat is not None:
                    _set_src(pkt, original[3], original[4])
                if conn.snat and ct.nat is not None:
                    _set_dst(pkt, original[1], original[2])
            else:
                state |= CT_NEW
        pkt["ct_state"] = state
        pkt["ct_mark"] = conn.mark if conn else 0
        if ct.commit:
            if conn is None:
                conn = Connection()
                self.conntrack[(ct.zone, key)] = conn
                if ct.nat and ct.nat.startswith("src="):
                    conn.snat = ct.nat.removeprefix("src=")
                    pkt["ipv4_src"] = conn.snat
                elif ct.nat:
                    ip, _, port = ct.nat.partition(":")
                    conn.nat = (ip, int(port) if port else None)
                    _set_dst(pkt, *conn.nat)
                    pkt["ct_state"] |= CT_DNAT
            if ct.mark is not None:
                conn.mark = ct.mark
                pkt["ct_mark"] = ct.mark

    def _reply_of(
        self, zone: int, key: tuple[Any, ...]
    ) -> tuple[Connection, tuple[Any, ...]] | None:
        proto, src, sport, dst, dport = key
        for (z, original), conn in self.conntrack.items():
            if z != zone or original[0] != proto:
                continue
            o_dst, o_dport = conn.nat if conn.nat else (original[3], original[4])
            if o_dport is None:
                o_dport = original[4]
            o_src = conn.snat or original[1]
            if (src, sport, dst, dport) == (o_dst, o_dport, o_src, original[2]):
                return conn, original
        return None


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
        result.outputs.append((port, dict(pkt)))
    elif isinstance(action, SetField):
        pkt[action.name] = action.value
    elif isinstance(action, Move):
        pkt[action.dst] = pkt.get(action.src)
    elif isinstance(action, DecTtl):
        pkt["ip_ttl"] = pkt.get("ip_ttl", 64) - 1
