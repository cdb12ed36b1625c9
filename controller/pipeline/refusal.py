"""A VIP with no passing instance: new connections are refused at once. Pure.

A new connection to such a VIP is destination-NATed to a closed port (``REJECT_PORT``) of the
host's address on the client's own network, so the host's kernel answers with a reset, which
leaves by the same leg and is turned back into one from ``vip:port`` by conntrack.

Policies decide who is refused, as they decide who reaches an instance:

- the VIP's own network is never filtered (as inside any network): it is always refused;
- a routed network is refused only from the sources a policy lets reach one of the service's
  instances (its address and port); any other source gets nothing back, as it would with an
  instance passing. A topology without policies refuses every routed network.

The refusal is committed with the allowed mark, and the policy stage passes it on without
another conntrack pass: a second pass would look the NATed packet up as a new connection,
without ``+dnat``, and the host guard would then drop it.

The host itself, on the VIP's network, cannot be NATed to its own address (it would drop the
packet as a martian): its TCP SYN is turned back to it statelessly, from the VIP to the closed
port, and the reset it answers is turned back as if from ``vip:port``.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import ip_address, ip_network

from controller.pipeline.flows import Ct, Flow, Output, SetField, flow
from controller.pipeline.matches import (
    ALLOWED_MARK,
    CT_DNAT,
    CT_INV,
    CT_NEW,
    CT_TRK,
    ETH_IPV4,
    PROTOCOLS,
    ct_state,
    masked,
    to_vip,
)
from sbcore.plan.hostplan import NetworkPlan, PolicyRule, ServicePlan, TopologyPlan

REJECT_PORT = 1  # closed port on the host leg: a VIP with no instance is refused at once
REFUSED_PRIORITY = 160  # policy stage: above the same-network and host flows (150)


def _admits(rule: PolicyRule, service: ServicePlan, proto: str) -> bool:
    """True when ``rule`` lets a ``proto`` connection reach one of the service's instances."""
    for backend in service.backends:
        if not any(ip_address(backend.ip) in ip_network(dst) for dst in rule.destinations):
            continue
        if not rule.ports:
            return True
        for spec in rule.ports:
            if spec.proto != proto:
                continue
            if spec.lo is None or spec.hi is None or spec.lo <= backend.port <= spec.hi:
                return True
    return False


def refused_sources(
    plan: TopologyPlan, service: ServicePlan, net: NetworkPlan, home: NetworkPlan, proto: str
) -> tuple[str, ...] | None:
    """The source CIDRs on ``net`` whose ``proto`` connections to the VIP are refused (those a
    policy lets reach an instance); None: every source (the VIP's own network, or a topology
    without policies)."""
    if net.name == home.name or plan.policies is None:
        return None
    subnet = ip_network(net.subnet)
    found: list[str] = []
    for rule in plan.policies:
        if _admits(rule, service, proto):
            found += [s for s in rule.sources
                      if s not in found and ip_network(s).overlaps(subnet)]
    return tuple(found)


def refusal_flows(
    plan: TopologyPlan, service: ServicePlan, clients: Sequence[NetworkPlan]
) -> list[Flow]:
    """service_lb flows of a VIP that has no passing instance (``clients``: the networks that
    reach it, its own first)."""
    owner = f"{plan.name}/service/{service.name}"
    home = clients[0]
    vip = str(service.vip)
    new_conn = ct_state(on=CT_NEW | CT_TRK)
    flows: list[Flow] = []
    for net in clients:
        refuse = [Ct(zone=plan.zone, table="l3_router", commit=True,
                     nat=f"{net.host_leg.ip}:{REJECT_PORT}", mark=ALLOWED_MARK)]
        for proto in ("tcp", "udp"):
            match = {**to_vip(net.key, vip, service.port, proto), "ct_state": new_conn}
            sources = refused_sources(plan, service, net, home, proto)
            if sources is None:
                flows.append(flow("service_lb", 100, match, refuse, owner=owner))
                continue
            flows.append(flow("service_lb", 100, match, owner=owner + "/silent"))  # drop
            flows += [flow("service_lb", 105, {**match, "ipv4_src": masked(src)}, refuse,
                           owner=owner) for src in sources]
    if service.port is not None:
        flows += _host_turn_flows(service, home, owner)
    return flows


def _host_turn_flows(service: ServicePlan, home: NetworkPlan, owner: str) -> list[Flow]:
    """The host's own TCP connection to the VIP, turned back to it statelessly."""
    leg, vip = str(home.host_leg.ip), str(service.vip)
    turn = [SetField("eth_src", home.gateway_mac), SetField("eth_dst", home.host_leg.mac),
            SetField("ipv4_src", vip), SetField("ipv4_dst", leg)]
    from_host = {"metadata": home.key, "eth_type": ETH_IPV4, "ip_proto": PROTOCOLS["tcp"],
                 "ipv4_src": leg, "ipv4_dst": vip}
    return [
        flow("service_lb", 110,
             {**from_host, "ct_state": ct_state(on=CT_NEW | CT_TRK), "tcp_dst": service.port},
             [*turn, SetField("tcp_dst", REJECT_PORT), Output("in_port")], owner=owner),
        flow("service_lb", 110, {**from_host, "tcp_src": REJECT_PORT},
             [*turn, SetField("tcp_src", service.port), Output("in_port")], owner=owner),
    ]


def refused_policy_flows(plan: TopologyPlan) -> list[Flow]:
    """Policy stage of a topology with policies: a refused connection (NATed by service_lb to
    a host address's closed port) goes on to l2_forward as it is, with no second conntrack
    pass, so it keeps its ``+dnat`` for the host guard."""
    if plan.policies is None or not plan.services:
        return []
    flows = []
    for net in plan.networks:
        for proto in ("tcp", "udp"):
            flows.append(flow(
                "policy", REFUSED_PRIORITY,
                {"metadata": net.key, "eth_type": ETH_IPV4,
                 "ct_state": ct_state(on=CT_TRK | CT_DNAT, off=CT_INV),
                 "ipv4_dst": str(net.host_leg.ip), "ip_proto": PROTOCOLS[proto],
                 f"{proto}_dst": REJECT_PORT},
                goto="l2_forward", owner=f"{plan.name}/policy/refused"))
    return flows
