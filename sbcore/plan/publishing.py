"""Published VIPs: a service's ``publish`` as each host's table needs it. Pure.

Every host destination-NATs the host port to the VIP and masquerades the connection to its
own address on the VIP's network, so the switch balances it like any connection of the
host's and the replies come back through the host. The switch then sees the host, not the
client: in a topology with policies, who may connect is decided on the host, from the
``from: cidr:...`` rules to the service (``sources``).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from sbcore.model import CIDR_PREFIX, PortSpec, Topology


@dataclass(frozen=True)
class PublishedVip:
    """A service's VIP that ``host_port`` of every host reaches."""

    service: str
    network: str  # the VIP's network: the host leg its connections leave by
    vip: IPv4Address
    port: int  # the VIP's port
    proto: str
    host_port: int
    sources: tuple[str, ...] | None = None  # CIDRs that may connect; None: anyone


def _allows(ports: tuple[PortSpec, ...], proto: str, instance_ports: set[int]) -> bool:
    """Whether a rule's port specs (empty: the instances' own ports) let ``proto`` reach an
    instance's port."""
    return not ports or any(
        spec.proto == proto and spec.lo is not None and spec.hi is not None
        and any(spec.lo <= p <= spec.hi for p in instance_ports) for spec in ports)


def published_vips(topology: Topology) -> tuple[PublishedVip, ...]:
    """The published VIPs of a validated topology, with who may reach each when it has
    policies between containers (the ``from: cidr:...`` of rules ``to: service:NAME``)."""
    between = [p for p in topology.policies if topology.endpoint_kind(p.to) != "host"]
    found = []
    for name, settings in sorted(topology.services.items()):
        spub, vip, port = settings.published, settings.vip, topology.vip_port(name)
        if spub is None or vip is None or port is None:
            continue
        home = next(n for n, net in topology.networks.items() if vip in net.subnet)
        sources = None
        if between:
            instance_ports = {i.port for _, i in topology.declared_services().get(name, [])}
            sources = tuple(sorted({
                str(IPv4Network(p.from_[len(CIDR_PREFIX):])) for p in between
                if p.to_service == name and topology.endpoint_kind(p.from_) == "cidr"
                and _allows(tuple(p.port_specs), spub.proto, instance_ports)}))
        found.append(PublishedVip(name, home, vip, port, spub.proto, spub.host_port, sources))
    return tuple(found)
