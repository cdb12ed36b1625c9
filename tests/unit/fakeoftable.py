"""An in-memory OpenFlow table that runs compiled Flows on packet descriptions.

Like Faucet's fakeoftable: the pipeline is tested without a switch. A packet is a dict of
OpenFlow field names (``in_port``, ``eth_src``, ``ipv4_dst``...); ``process`` returns the
(port, packet) pairs it leaves by, plus the names of the tables it went through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any

from controller.flows import DecTtl, Flow, Move, Output, SetField
from controller.tables import TABLES


@dataclass
class Result:
    """Where a packet went and how."""

    outputs: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [port for port, _ in self.outputs]


class FakeOFTable:
    """Holds flows keyed like a switch does: (table, priority, match) is unique."""

    def __init__(self) -> None:
        self.flows: dict[tuple[int, int, tuple[Any, ...]], Flow] = {}

    def apply(self, flows: list[Flow]) -> int:
        """Install flows (OFPFC_ADD semantics); returns how many entries changed."""
        changed = 0
        for f in flows:
            key = (f.table_id, f.priority, f.match)
            if self.flows.get(key) != f:
                self.flows[key] = f
                changed += 1
        return changed

    def delete_cookies(self, cookies: set[int]) -> None:
        self.flows = {k: f for k, f in self.flows.items() if f.cookie not in cookies}

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
        table_id: int | None = 0
        while table_id is not None:
            f = self.lookup(table_id, pkt)
            result.stages.append(_table_name(table_id))
            if f is None:
                break
            for action in f.actions:
                _run(action, pkt, result)
            if f.write_metadata is not None:
                pkt["metadata"] = f.write_metadata
            table_id = TABLES[f.goto] if f.goto else None
        return result


def _table_name(table_id: int) -> str:
    return next(name for name, number in TABLES.items() if number == table_id)


def _matches(f: Flow, pkt: dict[str, Any]) -> bool:
    for name, want in f.match:
        have = pkt.get(name)
        if have is None:
            return False
        if isinstance(want, tuple):
            value, mask = want
            if int(ip_address(have)) & int(ip_address(mask)) != int(ip_address(value)):
                return False
        elif str(have).lower() != str(want).lower():
            return False
    return True


def _run(action: Any, pkt: dict[str, Any], result: Result) -> None:
    if isinstance(action, Output):
        port = pkt["in_port"] if action.port == "in_port" else action.port
        result.outputs.append((port, dict(pkt)))
    elif isinstance(action, SetField):
        pkt[action.name] = action.value
    elif isinstance(action, Move):
        pkt[action.dst] = pkt.get(action.src)
    elif isinstance(action, DecTtl):
        pkt["ip_ttl"] = pkt.get("ip_ttl", 64) - 1
