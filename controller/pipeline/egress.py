"""Egress: containers reach addresses outside the topology through their own host. Pure.

A packet a container sends to its gateway's MAC for an address no route of its topology
covers is routed to the host leg of its network (``l3_router``, below every route to a
topology subnet), with a metadata key of its own (``egress_key``), so that the policy stage and
``l2_forward`` tell it from traffic to the host itself:

- in a topology with policies it passes only where a rule allows it (``to: cidr:...``),
  like every routed new connection; the "same network" and "host" allowances do not apply;
- ``l2_forward`` commits a new connection in the topology's zone (so its replies are known)
  and hands it to the host leg. The host guard is not in the way: it matches the network's
  key, not the egress key. The host's kernel forwards the packet
  and source-NATs it (``plumbing.hostnat``); its nftables table drops what arrives on a leg
  for any other host address, so egress never reaches the host's own listeners.

Replies come back from the host leg with a source that is not the leg's address: they go
through conntrack in the topology's zone and pass only as replies (or related ICMP errors) of
a connection a container opened, or as a new connection to a published port (the host's
table destination-NATs the host's port to it). Nothing else from outside gets in this way.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.pipeline.flows import Ct, DecTtl, Flow, Output, SetField, flow
from controller.pipeline.matches import (
    ALLOWED_MARK,
    CT_EST,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_TRK,
    ETH_IPV4,
    PROTOCOLS,
    ct_state,
    masked,
)
from sbcore.model.naming import network_key
from sbcore.plan.hostplan import NetworkPlan, PublishedPort, TopologyPlan

EGRESS_ROUTE_PRIORITY = 10  # below every route to a topology subnet (100)
OWN_SUBNET_PRIORITY = 20  # the topology's own subnets never leave by egress


def egress_key(net: NetworkPlan) -> int:
    """The metadata of a packet from ``net`` routed to the host for egress: a key of its
    own, as a network's ("/" is in no network name, so it is no network's)."""
    return network_key(net.topology, net.name + "/egress")


def egress_flows(plan: TopologyPlan, ports: Mapping[str, int]) -> list[Flow]:
    """The flows of every network of ``plan`` with egress on or a published port, whose host
    leg is plugged in. A network with published ports and egress off routes only replies
    to the host leg."""
    flows: list[Flow] = []
    after_route = "l2_forward" if plan.policies is None else "policy"
    subnets = [str(n.subnet) for n in plan.networks]
    for net in plan.networks:
        leg_port = ports.get(net.host_leg.port)
        published = [p for p in plan.published if p.network == net.name]
        if leg_port is None or not (net.egress or published):
            continue
        owner = f"{plan.name}/{net.name}/egress"
        key, out_key = net.key, egress_key(net)
        to_gateway = {"metadata": key, "eth_dst": net.gateway_mac, "eth_type": ETH_IPV4}
        flows.append(flow("l3_router", EGRESS_ROUTE_PRIORITY, to_gateway,
                          [SetField("eth_src", net.gateway_mac), DecTtl(),
                           SetField("eth_dst", net.host_leg.mac)],
                          write_metadata=out_key, goto=after_route, owner=owner))
        for subnet in subnets:  # an unrouted network of the same topology stays unreachable:
            # on to L2 output as before egress, which has no port for the gateway's MAC
            flows.append(flow("l3_router", OWN_SUBNET_PRIORITY,
                              {**to_gateway, "ipv4_dst": masked(subnet)}, goto="l2_forward",
                              owner=owner))
        out = {"metadata": out_key, "eth_type": ETH_IPV4}
        new = {**out, "ct_state": ct_state(on=CT_TRK | CT_NEW, off=CT_INV)}
        if plan.policies is not None:
            for state in (CT_EST, CT_REL):
                flows.append(flow("policy", 200,
                                  {**out, "ct_state": ct_state(on=state | CT_TRK),
                                   "ct_mark": ALLOWED_MARK},
                                  goto="l2_forward", owner=owner))
            if not net.egress:  # no rule opens what the network does not do
                flows.append(flow("policy", 190, new, owner=owner))
        flows += [
            flow("l2_forward", 100, new,
                 [Ct(zone=plan.zone, commit=True, mark=ALLOWED_MARK), Output(leg_port)]
                 if net.egress else [], owner=owner),
            flow("l2_forward", 95, {**out, "ct_state": ct_state(on=CT_TRK | CT_INV)},
                 owner=owner),
            # the rest: replies, and what the policy stage committed (a ct action without a
            # table leaves the packet untracked)
            flow("l2_forward", 90, out, [Output(leg_port)], owner=owner),
        ]
        flows += _reply_flows(net, plan.zone, leg_port, owner)
        flows += _published_flows(plan, published, net, owner)
    return flows


def _published_flows(plan: TopologyPlan, published: list[PublishedPort], net: NetworkPlan,
                     owner: str) -> list[Flow]:
    """From the host leg: a new connection the host's table destination-NATed to a published
    port passes (in a topology with policies, where a rule allows it, like any routed new
    connection); the client's address is kept."""
    flows = []
    for pub in published:
        proto = pub.publish.proto
        match = {"metadata": net.key, "eth_type": ETH_IPV4,
                 "ct_state": ct_state(on=CT_TRK | CT_NEW, off=CT_INV), "ipv4_dst": str(pub.ip),
                 "ip_proto": PROTOCOLS[proto], f"{proto}_dst": pub.publish.port}
        if plan.policies is None:
            flows.append(flow("uplink_check", 110, match,
                              [Ct(zone=plan.zone, commit=True, mark=ALLOWED_MARK)],
                              goto="l2_forward", owner=f"{owner}/publish"))
        else:
            flows.append(flow("uplink_check", 110, match, goto="policy",
                              owner=f"{owner}/publish"))
    return flows
def _reply_flows(net: NetworkPlan, zone: int, leg_port: int, owner: str) -> list[Flow]:
    """From the host leg with a source other than the host's: only egress replies pass."""
    ipv4 = {"metadata": net.key, "eth_type": ETH_IPV4}
    return [
        flow("classifier", 90,
             {"in_port": leg_port, "eth_src": net.host_leg.mac, "eth_type": ETH_IPV4},
             write_metadata=net.key, goto="uplink_conntrack", owner=owner),
        flow("uplink_conntrack", 100, ipv4, [Ct(zone=zone, table="uplink_check", nat="")],
             owner=owner),
        flow("uplink_check", 100,
             {**ipv4, "ct_state": ct_state(on=CT_TRK | CT_EST | CT_RPL, off=CT_INV)},
             goto="l2_forward", owner=owner),
        # a published port's connection, after its first packet
        flow("uplink_check", 100,
             {**ipv4, "ct_state": ct_state(on=CT_TRK | CT_EST, off=CT_INV | CT_RPL),
              "ct_mark": ALLOWED_MARK},
             goto="l2_forward", owner=owner),
        flow("uplink_check", 100,
             {**ipv4, "ct_state": ct_state(on=CT_TRK | CT_REL, off=CT_INV | CT_NEW)},
             goto="l2_forward", owner=owner),
    ]
