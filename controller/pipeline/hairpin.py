"""Hairpin: an instance connecting to its own service's VIP, balanced to itself. Pure.

Without help such a connection fails twice over: after destination NAT the packet goes from
X back to X, and a switch never sends a packet out of the port it came in by; and X would
drop a packet that claims to come from its own address. So, for that case only, the source
is NATed to the VIP, in a conntrack zone of its own (a connection can have one NAT per zone,
and the topology's zone already holds the destination NAT):

- l3_router: a packet from X to X (only a hairpin connection looks like that: port security
  keeps X from sending to itself otherwise) is committed in the hairpin zone with
  ``nat(src=VIP)`` and goes to hairpin_output, which sends it back out of X's port, as from
  the gateway (MAC rewrite, TTL decrement), like a routed packet.
- X sees a connection from ``VIP:port'`` and answers it. Its replies (from X to the VIP)
  first pass the hairpin zone, which undoes the source NAT (the destination is X again),
  then the topology's zone, which undoes the destination NAT (the source is ``VIP:port``);
  a reply of the hairpin zone then takes hairpin_output back to X. X's client socket so
  sees exactly the addresses it connected to. Any other packet from X to the VIP (a new
  connection; one balanced to another instance) passes the hairpin zone untouched and goes
  on through the topology's zone to service_lb as usual.

The hairpin zone is ``zone ^ 0x8000``. Should it equal another topology's zone, nothing
mixes: a host's topologies never share an address, and conntrack keys on addresses.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.pipeline.flows import Ct, DecTtl, Flow, Output, SetField, flow
from sbcore.plan.hostplan import Endpoint, NetworkPlan, TopologyPlan

ETH_IPV4 = 0x0800
CT_RPL, CT_TRK = 0x08, 0x20  # OVS ct_state bits (as controller.pipeline.compiler)


def hairpin_zone(zone: int) -> int:
    """The conntrack zone of a topology's hairpin source NAT (16 bits, never ``zone``)."""
    return (zone ^ 0x8000) or 0xFFFF


def _local_backends(plan: TopologyPlan) -> list[tuple[str, Endpoint]]:
    """(VIP, endpoint) of every instance behind a VIP that runs on this host."""
    local = {(ep.container, ep.ip): ep for ep in plan.local_view().endpoints()}
    found = []
    for service in plan.services:
        for backend in service.backends:
            ep = local.get((backend.container, backend.ip))
            if ep is not None:
                found.append((str(service.vip), ep))
    return found


def hairpin_flows(plan: TopologyPlan, ports: Mapping[str, int]) -> list[Flow]:
    """The flows that let each local instance reach its own VIP (see the module doc);
    ``ports``: port name -> ofport (an instance not plugged in yet gets none)."""
    nets: dict[str, NetworkPlan] = {n.name: n for n in plan.networks}
    zone, hz = plan.zone, hairpin_zone(plan.zone)
    flows: list[Flow] = []
    networks = set()
    for vip, ep in _local_backends(plan):
        ofport = ports.get(ep.port)
        if ofport is None:
            continue
        net = nets[ep.network]
        networks.add(ep.network)
        owner = f"{plan.name}/hairpin/{ep.container}/{ep.network}"
        ip = str(ep.ip)
        flows.append(flow("conntrack", 110, {"metadata": net.key, "eth_type": ETH_IPV4,
                                             "ipv4_src": ip, "ipv4_dst": vip},
                          [Ct(zone=hz, nat="", table="hairpin_conntrack")], owner=owner))
        flows.append(flow("l3_router", 110, {"metadata": net.key, "eth_type": ETH_IPV4,
                                             "ipv4_src": ip, "ipv4_dst": ip},
                          [Ct(zone=hz, commit=True, nat=f"src={vip}", table="hairpin_output")],
                          owner=owner))
        flows.append(flow("hairpin_output", 100,
                          {"in_port": ofport, "eth_type": ETH_IPV4, "ipv4_src": vip,
                           "ipv4_dst": ip},
                          [SetField("eth_src", net.gateway_mac), SetField("eth_dst", ep.mac),
                           DecTtl(), Output("in_port")], owner=owner))
    for name in sorted(networks):
        key = nets[name].key
        owner = f"{plan.name}/hairpin/{name}"
        flows.append(flow("hairpin_conntrack", 110,
                          {"metadata": key, "eth_type": ETH_IPV4,
                           "ct_state": (CT_RPL | CT_TRK, CT_RPL | CT_TRK)},
                          [Ct(zone=zone, nat="", table="hairpin_reply")], owner=owner))
        flows.append(flow("hairpin_conntrack", 100, {"metadata": key, "eth_type": ETH_IPV4},
                          goto="vip_source", owner=owner))
    return flows
