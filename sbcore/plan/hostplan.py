"""What one host must hold for a topology: namespaces, interfaces, host legs, and where the
containers of other hosts are (behind which tunnel address). Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network

from sbcore.model import (
    DEFAULT_MTU,
    Publish,
    Topology,
    TopologyError,
    ipam,
    naming,
)
from sbcore.model.image import ImageRun, image_run
from sbcore.plan.policies import PolicyRule, host_rules, policy_rules
from sbcore.plan.publishing import PublishedVip, published_vips

VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8


@dataclass(frozen=True)
class PeerHost:
    """Another host of the cluster, as this host's data path needs it."""

    slot: int  # the host's number: which host address it has on every network
    tunnel_ip: str | None  # its underlay address; None: it cannot be reached by tunnel


@dataclass(frozen=True)
class Site:
    """This host's place in the cluster. The default is a host alone (no overlay)."""

    host: str = ""  # this host's name ("" for a host alone: every container is here)
    slot: int = 0
    unplaced_host: str = ""  # who runs a container the placement leaves out ("": this host)
    peers: Mapping[str, PeerHost] = field(default_factory=dict)  # other hosts by name
    netns_prefix: str = naming.NETNS_PREFIX
    max_mtu: int | None = None  # what fits in the tunnel; None: no overlay
    tx_offload: bool = True  # False: containers checksum what they send (docs/many-hosts.md)

    def host_of(self, container: str, placement: Mapping[str, str]) -> str:
        """The host that runs ``container``: its placement, else the host that runs unplaced
        containers (this one when none is named)."""
        return placement.get(container) or self.unplaced_host or self.host

    @property
    def default_mtu(self) -> int:
        """The MTU of a network whose file gives none: overlay-safe where there is one."""
        return min(DEFAULT_MTU, self.max_mtu) if self.max_mtu else DEFAULT_MTU


def overlay_mtu(underlay_mtus: list[int | None]) -> int | None:
    """The largest MTU of a container network whose frames fit in a VXLAN packet on every
    underlay; None when there is only one host (no tunnel)."""
    known = [m for m in underlay_mtus if m]
    if len(underlay_mtus) < 2:
        return None
    return min(known or [DEFAULT_MTU]) - VXLAN_OVERHEAD


def mtu_problems(topology: Topology, max_mtu: int | None) -> list[str]:
    """Networks whose explicit ``mtu`` does not fit in the overlay."""
    if max_mtu is None:
        return []
    return [
        f"networks.{name}.mtu: {net.mtu} does not fit in the tunnel between hosts "
        f"(at most {max_mtu}: the underlay's MTU minus {VXLAN_OVERHEAD} bytes of VXLAN)"
        for name, net in topology.networks.items()
        if net.mtu is not None and net.mtu > max_mtu
    ]


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
    tx_offload: bool = True  # False: transmit checksum offload turned off in the container


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
class PeerLeg:
    """Another host's address on a network, reached through the tunnel."""

    host: str
    ip: IPv4Address
    mac: str
    tunnel_ip: str


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
    tunnel_key: int = 0  # VXLAN network identifier between hosts
    peer_legs: tuple[PeerLeg, ...] = ()
    egress: bool = False  # containers reach addresses outside the topology through the host


@dataclass(frozen=True)
class ContainerPlan:
    """A container: its namespace, what runs in it and its interfaces."""

    topology: str
    name: str
    netns: str
    command: str | None
    attach_pid: int | None
    endpoints: tuple[Endpoint, ...]
    host: str = ""  # the host that runs it ("": this one)
    restart: str = "always"  # restart policy of its command (always, on-failure, never)
    attach_path: str | None = None  # an existing namespace by its path (CNI's CNI_NETNS)
    image: ImageRun | None = None  # an OCI image run in the namespace (command: its args)
    attach_name: tuple[str, str] | None = None  # (runtime, name): attach_pid found from it
    runtime: str | None = None  # set by the plumber: the runtime whose client ``command`` is

    @property
    def attached(self) -> bool:
        """An existing namespace (by pid, path or a runtime container's name), not one
        Switchboard made."""
        return (self.attach_pid is not None or self.attach_path is not None
                or self.attach_name is not None)

    @property
    def attach_source(self) -> int | str | None:
        """The pid or the path of the namespace it attaches to (None: not attached)."""
        return self.attach_pid if self.attach_pid is not None else self.attach_path


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
class PublishedPort:
    """A container port the host's ports reach (on the container's first network)."""

    container: str
    network: str
    ip: IPv4Address
    publish: Publish


@dataclass(frozen=True)
class TopologyPlan:
    """Everything a host needs to realise one topology."""

    name: str
    networks: tuple[NetworkPlan, ...]
    containers: tuple[ContainerPlan, ...]
    allocation: dict[tuple[str, str], IPv4Address] = field(default_factory=dict, compare=False)
    routes: tuple[tuple[str, str], ...] = ()  # (from network, to network) a router joins
    policies: tuple[PolicyRule, ...] | None = None  # None: no policy between containers
    # ``to: host`` policies: new connections from ``sources`` to the hosts' own addresses on
    # the topology's networks (``destinations`` is empty); DNS on them is always allowed
    host_rules: tuple[PolicyRule, ...] = ()
    services: tuple[ServicePlan, ...] = ()
    zone: int = 1  # conntrack zone of the topology
    site: Site = field(default_factory=Site, compare=False)
    published: tuple[PublishedPort, ...] = ()
    published_vips: tuple[PublishedVip, ...] = ()  # on every host

    def endpoints(self) -> list[Endpoint]:
        return [ep for c in self.containers for ep in c.endpoints]

    def is_local(self, container: ContainerPlan) -> bool:
        return container.host == self.site.host

    def local_view(self) -> TopologyPlan:
        """The same plan with only the containers this host runs (what it plumbs)."""
        return replace(self, containers=tuple(c for c in self.containers if self.is_local(c)))

    def remote_endpoints(self) -> list[tuple[Endpoint, str]]:
        """Interfaces of containers on other hosts, with the tunnel address of their host
        (those whose host has none are left out: nothing can reach them)."""
        found = []
        for container in self.containers:
            peer = None if self.is_local(container) else self.site.peers.get(container.host)
            if peer is not None and peer.tunnel_ip:
                found += [(ep, peer.tunnel_ip) for ep in container.endpoints]
        return found


def _routes(topology: Topology) -> tuple[tuple[str, str], ...]:
    pairs = {
        (a, b)
        for router in topology.routers.values()
        for a in router.networks
        for b in router.networks
        if a != b
    }
    return tuple(sorted(pairs))


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


def _peer_legs(
    topology: Topology, net_name: str, allocation: ipam.Allocation, site: Site
) -> tuple[PeerLeg, ...]:
    legs = []
    for host, peer in sorted(site.peers.items()):
        if host == site.host or not peer.tunnel_ip:
            continue
        ip = ipam.host_leg_address(topology, net_name, peer.slot, allocation)
        mac = naming.host_leg_mac(topology.name, net_name, peer.slot)
        legs.append(PeerLeg(host, ip, mac, peer.tunnel_ip))
    return tuple(legs)


def plan_topology(
    topology: Topology,
    allocation: ipam.Allocation | None = None,
    placement: Mapping[str, str] | None = None,
    site: Site | None = None,
) -> TopologyPlan:
    """Derive the host plan of a validated topology; ``allocation`` defaults to fresh IPAM.

    ``placement`` maps containers to the hosts that run them (a container it leaves out runs
    here); ``site`` is this host's place in the cluster (default: a host alone).
    """
    if allocation is None:
        allocation = ipam.allocate(topology)
    site = site or Site()
    placement = placement or {}
    problems = mtu_problems(topology, site.max_mtu)
    if problems:
        raise TopologyError(problems)
    topo = topology.name
    networks = []
    for net_name, net in topology.networks.items():
        mtu = net.mtu if net.mtu is not None else site.default_mtu
        leg = HostLeg(
            topology=topo,
            network=net_name,
            port=naming.host_leg_name(topo, net_name),
            mac=naming.host_leg_mac(topo, net_name, site.slot),
            ip=ipam.host_leg_address(topology, net_name, site.slot, allocation),
            prefixlen=net.subnet.prefixlen,
            mtu=mtu,
        )
        networks.append(
            NetworkPlan(
                topology=topo,
                name=net_name,
                key=naming.network_key(topo, net_name),
                subnet=net.subnet,
                gateway=net.effective_gateway,
                gateway_mac=naming.gateway_mac(topo, net_name),
                mtu=mtu,
                host_leg=leg,
                tunnel_key=naming.tunnel_key(topo, net_name),
                peer_legs=_peer_legs(topology, net_name, allocation, site),
                egress=net.egress,
            )
        )
    mtus = {n.name: n.mtu for n in networks}
    containers = []
    for c_name, container in topology.containers.items():
        netns = naming.netns_name(topo, c_name, site.netns_prefix)
        endpoints = []
        for index, (net_name, attachment) in enumerate(container.networks.items()):
            net = topology.networks[net_name]
            endpoints.append(
                Endpoint(
                    topology=topo,
                    container=c_name,
                    network=net_name,
                    netns=netns,
                    ifname=(container.attach.ifname if index == 0 and container.attach
                            and container.attach.ifname else naming.container_ifname(index)),
                    port=naming.veth_name(topo, c_name, net_name),
                    mac=attachment.mac or naming.container_mac(topo, c_name, net_name),
                    ip=allocation[(c_name, net_name)],
                    prefixlen=net.subnet.prefixlen,
                    mtu=mtus[net_name],
                    default_gateway=net.effective_gateway if index == 0 else None,
                    tx_offload=site.tx_offload,
                )
            )
        containers.append(
            ContainerPlan(
                topology=topo,
                name=c_name,
                netns=netns,
                command=container.command if container.image is None else None,
                attach_pid=container.attach.pid if container.attach else None,
                attach_path=container.attach.netns if container.attach else None,
                endpoints=tuple(endpoints),
                host=site.host_of(c_name, placement),
                restart=container.restart_policy,
                image=image_run(container),
                attach_name=container.attach.by_name if container.attach else None,
            )
        )
    return TopologyPlan(
        name=topo, networks=tuple(networks), containers=tuple(containers), allocation=allocation,
        routes=_routes(topology), policies=policy_rules(topology, allocation),
        host_rules=host_rules(topology, allocation),
        services=_services(topology, allocation), zone=naming.ct_zone(topo), site=site,
        published=tuple(
            PublishedPort(c_name, container.default_network,
                          allocation[(c_name, container.default_network)], pub)
            for c_name, container in topology.containers.items() for pub in container.published
        ),
        published_vips=published_vips(topology),
    )
