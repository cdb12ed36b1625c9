"""Flow compiler: host plans + port numbers -> every wanted flow and group. Pure.

Stages, in packet order (numbers in controller/pipeline/tables.py):

- classifier: a port may send only from its own MAC and IP; tags the packet's network
- arp_responder: the switch answers ARP for containers, gateways, host legs and VIPs
- conntrack: IPv4 goes through conntrack in its topology's zone; replies are un-NATed
- service_lb / service_nat: a new connection to a VIP takes one passing instance
- l3_router / l3_neighbor: packets to a gateway MAC are routed where a router joins networks
- policy: in a topology with policies, routed new connections pass only where allowed
- l2_forward: exact (network, MAC) -> port, or -> the tunnel to the host that runs it

Between hosts (one flow-based VXLAN port, the network's tunnel key as VNI): the sending host
does everything (port security, VIP choice, routing, policy) and the packet crosses one
tunnel with its final destination MAC. The receiving host takes the tunnel key as the
network, passes the packet through conntrack in the topology's zone (a reply's service NAT is
undone where it was made), records a new connection as allowed, so the replies its policy
stage sees are established, and delivers it by L2.

Nothing is learned and nothing goes to the controller: every flow comes from the topology.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from controller.pipeline.clientport import client_port_flows, pipeline_flows, vip_entry_flows
from controller.pipeline.egress import egress_flows
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
    flow,
)
from controller.pipeline.hairpin import hairpin_flows
from controller.pipeline.hostguard import guard_flows, host_commit_flows
from controller.pipeline.matches import (
    ALLOWED_MARK,
    CT_DNAT,
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_TRK,
    ETH_ARP,
    ETH_IPV4,
    PROTOCOLS,
    masked,
    port_ranges,
    rule_port_matches,
    to_vip,
)
from controller.pipeline.matches import ct_state as _ct_state
from controller.pipeline.refusal import REJECT_PORT, refusal_flows, refused_policy_flows
from controller.pipeline.tables import TABLES
from sbcore.plan.hostplan import NetworkPlan, ServicePlan, TopologyPlan

__all__ = ["ALLOWED_MARK", "CT_DNAT", "CT_EST", "CT_INV", "CT_NEW", "CT_REL", "CT_RPL", "CT_TRK",
           "Compiled", "compile_flows", "compile_pipeline", "port_ranges"]

ARP_REQUEST = 1
ARP_REPLY = 2
BACKEND_REG = "reg1"  # index of the chosen VIP instance, set by a group bucket

Passing = Mapping[tuple[str, str], frozenset[str]]  # (topology, service) -> containers


@dataclass(frozen=True)
class Compiled:
    """Everything a bridge should hold."""

    flows: list[Flow]
    groups: list[SelectGroup]


# --- stages ---------------------------------------------------------------------------------

def _port_security(port: int, mac: str, ip: str, net_key: int, owner: str) -> list[Flow]:
    """A port may send ARP and IPv4 only from its own MAC and IP; it is then in its network."""
    return [
        flow("classifier", 100,
             {"in_port": port, "eth_src": mac, "eth_type": ETH_ARP,
              "arp_spa": ip, "arp_sha": mac},
             write_metadata=net_key, goto="arp_responder", owner=owner),
        flow("classifier", 100,
             {"in_port": port, "eth_src": mac, "eth_type": ETH_IPV4, "ipv4_src": ip},
             write_metadata=net_key, goto="conntrack", owner=owner),
    ]


def _arp_reply(net_key: int, ip: str, mac: str, owner: str) -> Flow:
    """Answer 'who has ip' on a network with mac, from inside the switch."""
    return flow(
        "arp_responder", 100,
        {"metadata": net_key, "eth_type": ETH_ARP, "arp_op": ARP_REQUEST, "arp_tpa": ip},
        [
            Move("eth_src", "eth_dst", 48),
            SetField("eth_src", mac),
            SetField("arp_op", ARP_REPLY),
            Move("arp_sha", "arp_tha", 48),
            Move("arp_spa", "arp_tpa", 32),
            SetField("arp_sha", mac),
            SetField("arp_spa", ip),
            Output("in_port"),
        ],
        owner=owner,
    )


def _l2_output(net_key: int, mac: str, port: int, owner: str) -> Flow:
    return flow("l2_forward", 100, {"metadata": net_key, "eth_dst": mac}, [Output(port)],
                owner=owner)


def _tunnel_output(net: NetworkPlan, mac: str, tunnel_ip: str, tunnel_port: int,
                   owner: str) -> Flow:
    """A frame for an address on another host leaves through the tunnel to that host."""
    return flow("l2_forward", 100, {"metadata": net.key, "eth_dst": mac},
                [SetField("tunnel_id", net.tunnel_key), SetField("tun_ipv4_dst", tunnel_ip),
                 Output(tunnel_port)], owner=owner)


def _tunnel_ingress(net: NetworkPlan, zone: int, tunnel_port: int) -> list[Flow]:
    """IPv4 from another host on this network: conntrack, record as allowed, deliver."""
    owner = f"{net.topology}/{net.name}/tunnel"
    return [
        flow("classifier", 100,
             {"in_port": tunnel_port, "tunnel_id": net.tunnel_key, "eth_type": ETH_IPV4},
             write_metadata=net.key, goto="tunnel_conntrack", owner=owner),
        flow("tunnel_conntrack", 100, {"metadata": net.key, "eth_type": ETH_IPV4},
             [Ct(zone=zone, table="tunnel_commit", nat="")], owner=owner),
        flow("tunnel_commit", 100,
             {"metadata": net.key, "eth_type": ETH_IPV4,
              "ct_state": _ct_state(on=CT_NEW | CT_TRK)},
             [Ct(zone=zone, commit=True, mark=ALLOWED_MARK)], goto="l2_forward", owner=owner),
        flow("tunnel_commit", 90, {"metadata": net.key, "eth_type": ETH_IPV4},
             goto="l2_forward", owner=owner),
    ]


def _neighbor(net_key: int, ip: IPv4Address, mac: str, after: str, owner: str) -> Flow:
    return flow("l3_neighbor", 100, {"metadata": net_key, "eth_type": ETH_IPV4,
                                     "ipv4_dst": str(ip)},
                [SetField("eth_dst", mac)], goto=after, owner=owner)


def _network_flows(
    net: NetworkPlan, plan: TopologyPlan, ports: Mapping[str, int], tunnel_port: int | None
) -> list[Flow]:
    owner = f"{net.topology}/{net.name}"
    after_route = "l2_forward" if plan.policies is None else "policy"
    flows = [
        _arp_reply(net.key, str(net.gateway), net.gateway_mac, owner + "/gateway"),
        flow("conntrack", 100, {"metadata": net.key, "eth_type": ETH_IPV4},
             [Ct(zone=plan.zone, table="service_lb", nat="")], owner=owner),
    ]
    leg = net.host_leg
    leg_port = ports.get(leg.port)
    if leg_port is not None:
        leg_owner = owner + "/host"
        flows += _port_security(leg_port, leg.mac, str(leg.ip), net.key, leg_owner)
        flows.append(_arp_reply(net.key, str(leg.ip), leg.mac, leg_owner))
        flows += guard_flows(net, plan.zone, leg.mac, str(leg.ip), [Output(leg_port)],
                             plan.host_rules, REJECT_PORT, leg_owner)
        flows += host_commit_flows(net, plan.zone, leg_port, leg_owner)
        flows.append(_neighbor(net.key, leg.ip, leg.mac, after_route, leg_owner))
    if tunnel_port is not None:
        flows += _tunnel_ingress(net, plan.zone, tunnel_port)
        for peer in net.peer_legs:
            peer_owner = f"{owner}/host/{peer.host}"
            flows.append(_arp_reply(net.key, str(peer.ip), peer.mac, peer_owner))
            to_peer = _tunnel_output(net, peer.mac, peer.tunnel_ip, tunnel_port, peer_owner)
            flows += guard_flows(net, plan.zone, peer.mac, str(peer.ip), to_peer.actions,
                                 plan.host_rules, REJECT_PORT, peer_owner)
            flows.append(_neighbor(net.key, peer.ip, peer.mac, after_route, peer_owner))
    return flows


def _router_flows(plan: TopologyPlan) -> list[Flow]:
    """A packet sent to its gateway's MAC for a subnet a router joins is routed there.

    Every network also routes to itself, so a VIP (answered with the gateway MAC) works
    from the VIP's own network.
    """
    nets = {n.name: n for n in plan.networks}
    pairs = set(plan.routes) | {(n, n) for n in nets}
    flows = []
    for src_name, dst_name in sorted(pairs):
        src, dst = nets[src_name], nets[dst_name]
        flows.append(flow(
            "l3_router", 100,
            {"metadata": src.key, "eth_dst": src.gateway_mac, "eth_type": ETH_IPV4,
             "ipv4_dst": masked(str(dst.subnet))},
            [SetField("eth_src", dst.gateway_mac), DecTtl()],
            write_metadata=dst.key, goto="l3_neighbor",
            owner=f"{plan.name}/route/{src_name}/{dst_name}",
        ))
    return flows


def _policy_flows(plan: TopologyPlan) -> list[Flow]:
    """Routed traffic of a topology with policies: replies pass, new connections if allowed."""
    if plan.policies is None:
        return []
    owner = f"{plan.name}/policy"
    zone = plan.zone
    allow = [Ct(zone=zone, commit=True, mark=ALLOWED_MARK)]
    nets = [n.key for n in plan.networks]
    flows = []
    for key in nets:
        for state in (CT_EST, CT_REL):
            flows.append(flow(
                "policy", 200,
                {"metadata": key, "eth_type": ETH_IPV4,
                 "ct_state": _ct_state(on=state | CT_TRK), "ct_mark": ALLOWED_MARK},
                goto="l2_forward", owner=owner))
    for net in plan.networks:  # within a network (e.g. to a VIP on it) nothing is filtered
        flows.append(flow(
            "policy", 150,
            {"metadata": net.key, "eth_type": ETH_IPV4, "ct_state": _ct_state(on=CT_TRK),
             "ipv4_src": masked(str(net.subnet))},
            allow, goto="l2_forward", owner=owner + "/same-network"))
    legs = [str(leg.ip) for net in plan.networks
            for leg in (net.host_leg, *net.peer_legs)]
    for leg_ip in legs:  # every host reaches every container, and they answer it
        for key in nets:
            for match_field in ("ipv4_src", "ipv4_dst"):
                flows.append(flow(
                    "policy", 150,
                    {"metadata": key, "eth_type": ETH_IPV4, "ct_state": _ct_state(on=CT_TRK),
                     match_field: leg_ip},
                    allow, goto="l2_forward", owner=owner + "/host"))
    for index, rule in enumerate(plan.policies):
        port_matches = rule_port_matches(rule.ports)
        for src in rule.sources:
            for dst in rule.destinations:
                for extra in port_matches:
                    match = {"eth_type": ETH_IPV4, "ct_state": _ct_state(on=CT_TRK, off=CT_INV),
                             "ipv4_src": masked(src), "ipv4_dst": masked(dst), **extra}
                    flows.append(flow("policy", 100, match, allow, goto="l2_forward",
                                      owner=f"{owner}/{index}"))
    return flows


def _client_networks(plan: TopologyPlan, service: ServicePlan) -> list[NetworkPlan]:
    """The networks that reach a service's VIP: its own (first) and those routed to it."""
    nets = {n.name: n for n in plan.networks}
    home = next(n for n in plan.networks if service.vip in IPv4Network(n.subnet))
    return [home] + [nets[src] for src, dst in plan.routes if dst == home.name]


def _service_flows(
    plan: TopologyPlan, service: ServicePlan, passing: Passing | None,
    clients: list[NetworkPlan],
) -> tuple[list[Flow], list[SelectGroup]]:
    """ARP for the VIP; new connections to it, from each network routed to the VIP's, go
    through a select group whose buckets NAT to one passing instance (``clients``: those
    networks, the VIP's first). With no instance passing they are refused at once
    (``controller.pipeline.refusal``)."""
    owner = f"{plan.name}/service/{service.name}"
    backends = service.active_backends(passing)
    vip = str(service.vip)
    flows = [_arp_reply(clients[0].key, vip, clients[0].gateway_mac, owner),
             *vip_entry_flows(plan, service, clients)]
    if not backends:
        return flows + refusal_flows(plan, service, clients), []
    new_conn = _ct_state(on=CT_NEW | CT_TRK)
    for net in clients:
        for proto in ("tcp", "udp"):
            match = {**to_vip(net.key, vip, service.port, proto), "ct_state": new_conn}
            flows.append(flow("service_lb", 100, match, [Group(service.group_id)],
                              owner=owner))
    buckets = []
    for index, backend in enumerate(backends):
        buckets.append((SetField(BACKEND_REG, index), Resubmit("service_nat")))
        for proto in ("tcp", "udp"):
            match = {"eth_type": ETH_IPV4, BACKEND_REG: index, "ipv4_dst": vip,
                     "ip_proto": PROTOCOLS[proto]}
            target = f"{backend.ip}:{backend.port}"
            flows.append(flow("service_nat", 100, match,
                              [Ct(zone=plan.zone, table="l3_router", commit=True, nat=target)],
                              owner=owner))
    return flows, [SelectGroup(service.group_id, tuple(buckets), owner)]


def _topology(
    plan: TopologyPlan, ports: Mapping[str, int], passing: Passing | None,
    tunnel_port: int | None,
) -> Compiled:
    keys = {net.name: net.key for net in plan.networks}
    after_route = "l2_forward" if plan.policies is None else "policy"
    flows: list[Flow] = []
    groups: list[SelectGroup] = []
    for net in plan.networks:
        flows += _network_flows(net, plan, ports, tunnel_port)
    flows += _router_flows(plan)
    flows += _policy_flows(plan)
    flows += refused_policy_flows(plan)
    flows += hairpin_flows(plan, ports)
    flows += egress_flows(plan, ports)
    clients = {service.name: _client_networks(plan, service) for service in plan.services}
    reaching = {net.name: net for nets in clients.values() for net in nets}
    flows += client_port_flows(plan, reaching.values(), tunnel_port is not None)
    for service in plan.services:
        svc_flows, svc_groups = _service_flows(plan, service, passing, clients[service.name])
        flows += svc_flows
        groups += svc_groups
    for ep in plan.local_view().endpoints():
        port = ports.get(ep.port)
        if port is None:
            continue  # not plugged in yet: no flows, so it cannot send or receive
        key = keys[ep.network]
        owner = f"{ep.topology}/{ep.container}/{ep.network}"
        flows += _port_security(port, ep.mac, str(ep.ip), key, owner)
        flows.append(_arp_reply(key, str(ep.ip), ep.mac, owner))
        flows.append(_l2_output(key, ep.mac, port, owner))
        flows.append(_neighbor(key, ep.ip, ep.mac, after_route, owner))
    if tunnel_port is not None:
        nets = {net.name: net for net in plan.networks}
        for ep, tunnel_ip in plan.remote_endpoints():
            owner = f"{ep.topology}/{ep.container}/{ep.network}"
            flows.append(_arp_reply(keys[ep.network], str(ep.ip), ep.mac, owner))
            flows.append(_tunnel_output(nets[ep.network], ep.mac, tunnel_ip, tunnel_port,
                                        owner))
            flows.append(_neighbor(keys[ep.network], ep.ip, ep.mac, after_route, owner))
    return Compiled(flows, groups)


def _pipeline_flows() -> list[Flow]:
    """Fixed skeleton: what no other flow claims is dropped, with explicit table misses."""
    flows = [flow(name, 0, owner="pipeline/drop") for name in TABLES]
    flows.append(flow("service_lb", 1, goto="l3_router", owner="pipeline/no-service"))
    flows.append(flow("l3_router", 1, goto="l2_forward", owner="pipeline/switching"))
    flows += pipeline_flows()
    return flows


def compile_pipeline(
    plans: Iterable[TopologyPlan], ports: Mapping[str, int], passing: Passing | None = None,
    tunnel_port: int | None = None,
) -> Compiled:
    """Every flow and group the bridge should hold, given port name -> ofport.

    ``passing`` says which instances of each VIP service may take new connections; a
    service missing from it uses all of its instances. ``tunnel_port``: the OpenFlow port of
    the flow-based VXLAN port (None: a host alone, nothing crosses to other hosts).
    """
    flows = _pipeline_flows()
    groups: list[SelectGroup] = []
    for plan in plans:
        compiled = _topology(plan, ports, passing, tunnel_port)
        flows += compiled.flows
        groups += compiled.groups
    ordered = sorted(set(flows), key=lambda f: (f.table_id, -f.priority, f.cookie))
    return Compiled(ordered, sorted(groups, key=lambda g: g.group_id))


def compile_flows(plans: Iterable[TopologyPlan], ports: Mapping[str, int]) -> list[Flow]:
    """The flows alone (see ``compile_pipeline``)."""
    return compile_pipeline(plans, ports).flows
