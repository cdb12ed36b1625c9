"""Whether a topology may join the ones already applied: pure conflict checks.

Two topologies conflict when a host could not realise both: overlapping subnets (the host
would hold two addresses and two routes for one range), or names and identifiers derived
from them that collide (a container namespace, a network's key on the switch, a conntrack
zone, a VIP's group, a network's VXLAN key between hosts). ``switchboard up`` runs these
checks as part of its atomic admission (switchboard.apply); the daemon runs them again over
whatever the desired state holds and keeps, of each conflicting pair, the topology applied
first (``first_come``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from sbcore.model import Topology, TopologyError, naming

__all__ = ["check_against_applied", "conflicts", "first_come"]

ADVICE = {  # what to do about a clash of this kind (else: rename one of them)
    "published host port": "publish another host port, or take the other topology down first",
}


def _identifiers(topology: Topology) -> dict[str, dict[object, str]]:
    """Kind of identifier -> identifier -> what in the topology derives it."""
    name = topology.name
    return {
        "namespace": {naming.netns_name(name, c): f"container {c!r}"
                      for c in topology.containers},
        "network key": {naming.network_key(name, n): f"network {n!r}"
                        for n in topology.networks},
        "tunnel key": {naming.tunnel_key(name, n): f"network {n!r}"
                       for n in topology.networks},
        "conntrack zone": {naming.ct_zone(name): "the topology"},
        "VIP group": {naming.group_id(name, s): f"service {s!r}" for s in topology.vips()},
        "published host port": {f"{port}/{proto}": what
                                for (proto, port), what in topology.host_ports().items()},
    }


def conflicts(topology: Topology, applied: Iterable[Topology]) -> list[str]:
    """Every reason ``topology`` cannot be applied beside ``applied`` (its own earlier
    version, by name, is ignored); empty when it can."""
    problems = []
    mine = _identifiers(topology)
    for other in applied:
        if other.name == topology.name:
            continue
        for name, net in topology.networks.items():
            for oname, onet in other.networks.items():
                if net.subnet.overlaps(onet.subnet):
                    problems.append(
                        f"topology {topology.name!r}: networks.{name}.subnet: subnet "
                        f"{net.subnet} of network {name!r} overlaps subnet {onet.subnet} of "
                        f"network {oname!r} in applied topology {other.name!r}; pick another "
                        f"subnet or take {other.name!r} down first"
                    )
        theirs = _identifiers(other)
        for kind, ids in mine.items():
            for ident, what in ids.items():
                if ident in theirs[kind]:
                    problems.append(
                        f"topology {topology.name!r}: {what} gets the same {kind} ({ident}) "
                        f"as {theirs[kind][ident]} of applied topology {other.name!r}; "
                        f"{ADVICE.get(kind, 'rename one of them')}"
                    )
    return problems


def check_against_applied(topology: Topology, applied: Iterable[Topology]) -> None:
    """Raise TopologyError listing every conflict of ``topology`` with ``applied``."""
    problems = conflicts(topology, applied)
    if problems:
        raise TopologyError(problems)


T = TypeVar("T")


def first_come(
    candidates: Iterable[tuple[Topology, T]],
) -> tuple[list[T], dict[str, str]]:
    """Admit topologies in the order given (the order they were applied): each one that
    conflicts with one admitted before it is rejected with the reason. Returns the admitted
    items and topology name -> reason for the rejected ones."""
    admitted: list[tuple[Topology, T]] = []
    rejected: dict[str, str] = {}
    for topology, item in candidates:
        problems = conflicts(topology, (t for t, _ in admitted))
        if problems:
            rejected[topology.name] = (
                "conflicts with a topology applied before it, so this host does not "
                "realise it: " + "; ".join(problems)
            )
        else:
            admitted.append((topology, item))
    return [item for _, item in admitted], rejected
