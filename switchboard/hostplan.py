"""What one host must hold for a topology: namespaces, interfaces, host legs. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from switchboard import ipam, naming
from switchboard.model import PortSpec, Topology


@dataclass(frozen=True)
class Endpoint:
    """A container's interface on one network, plugged into the bridge as ``port``."""

    topology: str
    container: str
    network: str
    netns: str
    ifname: str
    port: str
    mac: str
    ip: IPv4Address
    prefixlen: int
    mtu: int
    default_gateway: IPv4Address | None  # set on the container's first network only


@dataclass(frozen=True)
class HostLeg:
    """The host's own interface on a network (an OVS internal port)."""

    topology: str
    network: str
    port: str
    mac: str
    ip: IPv4Address
    prefixlen: int
    mtu: int


@dataclass(frozen=True)
class NetworkPlan:
    """A network as the switch sees it."""

    topology: str
    name: str
    key: int
    subnet: IPv4Network
    gateway: IPv4Address
    gateway_mac: str
    mtu: int
    host_leg: HostLeg


@dataclass(frozen=True)
class ContainerPlan:
    """A container: its namespace, what runs in it and its interfaces."""

    topology: str
    name: str
    netns: str
    command: str | None
    attach_pid: int | None
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class PolicyRule:
    """One allowed direction: new connections from ``sources`` to ``destinations`` on ``ports``.

    Addresses are CIDR strings (a network's subnet or a container's /32); empty ``ports``
    allows every protocol and port.
    """

    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    ports: tuple[PortSpec, ...]


@dataclass(frozen=True)
class Backend:
    """One instance behind a service VIP."""

    container: str
    ip: IPv4Address
    port: int


@dataclass(frozen=True)
class ServicePlan:
    """A service with a virtual IP, load-balanced over its instances."""

    topology: str
    name: str
    vip: IPv4Address
    port: int | None  # VIP port; None: each instance's own port
    backends: tuple[Backend, ...]
    group_id: int

    def active_backends(
        self, passing: Mapping[tuple[str, str], frozenset[str]] | None
    ) -> tuple[Backend, ...]:
        """Instances that take new connections: the passing ones (``passing`` maps
        (topology, service) to containers), or all of them while health is unknown."""
        alive = passing.get((self.topology, self.name)) if passing is not None else None
        return tuple(b for b in self.backends if alive is None or b.container in alive)


@dataclass(frozen=True)
class TopologyPlan:
    """Everything a host needs to realise one topology."""

    name: str
    networks: tuple[NetworkPlan, ...]
    containers: tuple[ContainerPlan, ...]
    allocation: dict[tuple[str, str], IPv4Address] = field(default_factory=dict, compare=False)
    routes: tuple[tuple[str, str], ...] = ()  # (from network, to network) a router joins
    policies: tuple[PolicyRule, ...] | None = None  # None: the file has no policies
    services: tuple[ServicePlan, ...] = ()
    zone: int = 1  # conntrack zone of the topology

    def endpoints(self) -> list[Endpoint]:
        return [ep for c in self.containers for ep in c.endpoints]


def _routes(topology: Topology) -> tuple[tuple[str, str], ...]:
    pairs = {
        (a, b)
        for router in topology.routers.values()
        for a in router.networks
        for b in router.networks
        if a != b
    }
    return tuple(sorted(pairs))


def _addresses(topology: Topology, allocation: ipam.Allocation, ref: str) -> tuple[str, ...]:
    if ref in topology.networks:
        return (str(topology.networks[ref].subnet),)
    return tuple(f"{ip}/32" for (c, _), ip in sorted(allocation.items()) if c == ref)


def _policy_rules(
    topology: Topology, allocation: ipam.Allocation
) -> tuple[PolicyRule, ...] | None:
    if not topology.policies:
        return None
    rules = []
    for policy in topology.policies:
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


def _services(topology: Topology, allocation: ipam.Allocation) -> tuple[ServicePlan, ...]:
    plans = []
    declared = topology.declared_services()
    for name, vip in sorted(topology.vips().items()):
        backends = tuple(
            Backend(container, allocation[(container, inst.network)], inst.port)
            for container, inst in declared.get(name, [])
        )
        plans.append(ServicePlan(
            topology=topology.name, name=name, vip=vip, port=topology.services[name].port,
            backends=backends, group_id=naming.group_id(topology.name, name),
        ))
    return tuple(plans)


def plan_topology(
    topology: Topology, allocation: ipam.Allocation | None = None
) -> TopologyPlan:
    """Derive the host plan of a validated topology; ``allocation`` defaults to fresh IPAM."""
    if allocation is None:
        allocation = ipam.allocate(topology)
    topo = topology.name
    networks = []
    for net_name, net in topology.networks.items():
        leg = HostLeg(
            topology=topo,
            network=net_name,
            port=naming.host_leg_name(topo, net_name),
            mac=naming.host_leg_mac(topo, net_name),
            ip=ipam.host_leg_address(topology, net_name),
            prefixlen=net.subnet.prefixlen,
            mtu=net.effective_mtu,
        )
        networks.append(
            NetworkPlan(
                topology=topo,
                name=net_name,
                key=naming.network_key(topo, net_name),
                subnet=net.subnet,
                gateway=net.effective_gateway,
                gateway_mac=naming.gateway_mac(topo, net_name),
                mtu=net.effective_mtu,
                host_leg=leg,
            )
        )
    containers = []
    for c_name, container in topology.containers.items():
        endpoints = []
        for index, (net_name, attachment) in enumerate(container.networks.items()):
            net = topology.networks[net_name]
            endpoints.append(
                Endpoint(
                    topology=topo,
                    container=c_name,
                    network=net_name,
                    netns=naming.netns_name(topo, c_name),
                    ifname=naming.container_ifname(index),
                    port=naming.veth_name(topo, c_name, net_name),
                    mac=attachment.mac or naming.container_mac(topo, c_name, net_name),
                    ip=allocation[(c_name, net_name)],
                    prefixlen=net.subnet.prefixlen,
                    mtu=net.effective_mtu,
                    default_gateway=net.effective_gateway if index == 0 else None,
                )
            )
        containers.append(
            ContainerPlan(
                topology=topo,
                name=c_name,
                netns=naming.netns_name(topo, c_name),
                command=container.command,
                attach_pid=container.attach.pid if container.attach else None,
                endpoints=tuple(endpoints),
            )
        )
    return TopologyPlan(
        name=topo, networks=tuple(networks), containers=tuple(containers), allocation=allocation,
        routes=_routes(topology), policies=_policy_rules(topology, allocation),
        services=_services(topology, allocation), zone=naming.ct_zone(topo),
    )
