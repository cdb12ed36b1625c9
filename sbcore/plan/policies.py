"""The policies of a topology as address rules: who may open connections to whom. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

from sbcore.model import CIDR_PREFIX, PortSpec, Topology, ipam


@dataclass(frozen=True)
class PolicyRule:
    """One allowed direction: new connections from ``sources`` to ``destinations`` on ``ports``.

    Addresses are CIDR strings (a network's subnet or a container's /32); empty ``ports``
    allows every protocol and port.
    """

    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    ports: tuple[PortSpec, ...]


def _addresses(topology: Topology, allocation: ipam.Allocation, ref: str) -> tuple[str, ...]:
    if topology.endpoint_kind(ref) == "cidr":
        return (str(IPv4Network(ref[len(CIDR_PREFIX):])),)
    if ref in topology.networks:
        return (str(topology.networks[ref].subnet),)
    return tuple(f"{ip}/32" for (c, _), ip in sorted(allocation.items()) if c == ref)


def host_rules(topology: Topology, allocation: ipam.Allocation) -> tuple[PolicyRule, ...]:
    """``to: host`` rules: new connections from their sources to the hosts' own addresses."""
    return tuple(PolicyRule(_addresses(topology, allocation, p.from_), (), p.port_specs)
                 for p in topology.policies if topology.endpoint_kind(p.to) == "host")


def policy_rules(
    topology: Topology, allocation: ipam.Allocation
) -> tuple[PolicyRule, ...] | None:
    """Rules between containers; None when there are none (``to: host`` rules do not count:
    they open the host, and leave routed traffic as open as before)."""
    between = [p for p in topology.policies if topology.endpoint_kind(p.to) != "host"]
    if not between:
        return None
    rules = []
    for policy in between:
        sources = _addresses(topology, allocation, policy.from_)
        service = policy.to_service
        if service is None:
            destinations = _addresses(topology, allocation, policy.to)
            rules.append(PolicyRule(sources, destinations, policy.port_specs))
            continue
        for container, instance in topology.declared_services().get(service, []):
            ip = allocation[(container, instance.network)]
            ports = policy.port_specs or (
                PortSpec("tcp", instance.port, instance.port),
                PortSpec("udp", instance.port, instance.port),
            )
            rules.append(PolicyRule(sources, (f"{ip}/32",), ports))
    return tuple(rules)
