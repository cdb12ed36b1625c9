"""The client port of a VIP connection: moved out of Linux's ephemeral range. Pure.

A connection to a VIP is destination-NATed to one instance in the topology's conntrack zone,
so its replies there are ``instance:port -> client:cport``. A direct connection from the same
client to the same instance with the same source port has exactly those replies too, and
Linux gives a new connection to another destination the same source port as an earlier one:
without more, the direct connection's SYN-ACK is taken for the VIP connection's, un-NATed to
come from the VIP, and the connection waits for the client's SYN retransmit (1 s).

So a new TCP or UDP connection from a container to a VIP first passes a zone of its own (the
client-port zone) and is source-NATed there to the same address and a port in
``CLIENT_PORTS``, which Linux does not give out (its default ephemeral range is 32768-60999);
only then is it destination-NATed in the topology's zone. The instance sees the client's own
address and that port. A reply passes the topology's zone first (the VIP's NAT undone, which
OVS marks ``+snat``) and everything that zone decides (policy reads its connection mark);
then, in front of the client's port in l2_forward (whichever host the reply came from), the
client-port zone restores the client's port and the reply goes on to that port. A hairpin
reply (a connection balanced to its own client) takes hairpin_reply instead, which does the
same before hairpin_output.

The host's own connections to a VIP keep their port: they pass the zone untouched (a refused
one is turned back statelessly, see controller.compiler, which needs its ports as they are).
The client-port zone is ``zone ^ 0x4000``; should it equal another topology's zone, nothing
mixes: a host's topologies never share an address, and conntrack keys on addresses.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.flows import Ct, Flow, flow
from controller.matches import CT_NEW, CT_REL, CT_RPL, CT_SNAT, CT_TRK, ETH_IPV4, PROTOCOLS
from controller.matches import ct_state as _ct_state
from switchboard.hostplan import NetworkPlan, ServicePlan, TopologyPlan

CLIENT_PORTS = (1024, 32767)  # below Linux's ephemeral range, above the privileged ports
ENTRY_PRIORITY = 105  # conntrack: above the topology's zone (100), below the hairpin's (110)
RESTORE_PRIORITY = 130  # l2_forward: before the output to the client (and any host guard)


def client_port_zone(zone: int) -> int:
    """The conntrack zone of a topology's client-port NAT (16 bits, never ``zone``)."""
    return (zone ^ 0x4000) or 0xFFFE


def vip_entry_flows(plan: TopologyPlan, service: ServicePlan,
                    clients: Iterable[NetworkPlan]) -> list[Flow]:
    """conntrack: TCP and UDP to the VIP (on its port, if it has one) from each network routed
    to it pass the client-port zone before the topology's."""
    owner = f"{plan.name}/service/{service.name}/client-port"
    zone = client_port_zone(plan.zone)
    flows = []
    for net in clients:
        for proto in ("tcp", "udp"):
            match = {"metadata": net.key, "eth_type": ETH_IPV4, "ipv4_dst": str(service.vip),
                     "ip_proto": PROTOCOLS[proto]}
            if service.port is not None:
                match[f"{proto}_dst"] = service.port
            flows.append(flow("conntrack", ENTRY_PRIORITY, match,
                              [Ct(zone=zone, nat="", table="vip_source")], owner=owner))
    return flows


def client_port_flows(plan: TopologyPlan, clients: Iterable[NetworkPlan]) -> list[Flow]:
    """Per client network: the new connections of its containers on this host get their port
    NATed, everything to a VIP then passes the topology's zone, and replies get their port
    back (the stages in the module doc)."""
    zone, cz = plan.zone, client_port_zone(plan.zone)
    nets = {net.name: net for net in clients}
    flows: list[Flow] = []
    for ep in plan.local_view().endpoints():
        net = nets.get(ep.network)
        if net is None:
            continue
        owner = f"{ep.topology}/{ep.container}/{ep.network}/client-port"
        ip = str(ep.ip)
        for proto in ("tcp", "udp"):
            flows.append(flow(
                "vip_source", 100,
                {"metadata": net.key, "eth_type": ETH_IPV4, "ipv4_src": ip,
                 "ip_proto": PROTOCOLS[proto], "ct_state": _ct_state(on=CT_NEW | CT_TRK)},
                [Ct(zone=cz, commit=True, nat=f"src={ip}:{CLIENT_PORTS[0]}-{CLIENT_PORTS[1]}",
                    table="vip_conntrack")], owner=owner))
        for state in (CT_RPL, CT_REL):
            flows.append(flow(
                "l2_forward", RESTORE_PRIORITY,
                {"metadata": net.key, "eth_type": ETH_IPV4, "eth_dst": ep.mac,
                 "ct_state": _ct_state(on=CT_TRK | CT_SNAT | state)},
                [Ct(zone=cz, nat="", table="l2_forward")], owner=owner))
    for net in nets.values():
        owner = f"{plan.name}/{net.name}/client-port"
        flows.append(flow("vip_conntrack", 100, {"metadata": net.key, "eth_type": ETH_IPV4},
                          [Ct(zone=zone, nat="", table="service_lb")], owner=owner))
        for state in (CT_RPL, CT_REL):
            flows.append(flow(
                "hairpin_reply", 100,
                {"metadata": net.key, "eth_type": ETH_IPV4,
                 "ct_state": _ct_state(on=CT_TRK | CT_SNAT | state)},
                [Ct(zone=cz, nat="", table="hairpin_output")], owner=owner))
    return flows
