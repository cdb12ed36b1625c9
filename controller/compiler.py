"""Flow compiler: host plans + port numbers -> the complete list of wanted flows. Pure.

Stages (see controller/tables.py): classifier (port security) -> arp_responder |
l3_router -> l2_forward. Nothing is learned and nothing goes to the controller: every flow
is computed from the topology.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.flows import Flow, Move, Output, SetField, flow
from controller.tables import TABLES
from switchboard.hostplan import NetworkPlan, TopologyPlan

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
ARP_REQUEST = 1
ARP_REPLY = 2


def _owner(*parts: str) -> str:
    return "/".join(parts)


def _port_security(
    port: int, mac: str, ip: str, net_key: int, owner: str
) -> list[Flow]:
    """A port may send ARP and IPv4 only from its own MAC and IP; it is then in its network."""
    return [
        flow(
            "classifier", 100,
            {"in_port": port, "eth_src": mac, "eth_type": ETH_ARP,
             "arp_spa": ip, "arp_sha": mac},
            write_metadata=net_key, goto="arp_responder", owner=owner,
        ),
        flow(
            "classifier", 100,
            {"in_port": port, "eth_src": mac, "eth_type": ETH_IPV4, "ipv4_src": ip},
            write_metadata=net_key, goto="l3_router", owner=owner,
        ),
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
    return flow(
        "l2_forward", 100, {"metadata": net_key, "eth_dst": mac}, [Output(port)], owner=owner
    )


def _network_flows(net: NetworkPlan, ports: Mapping[str, int]) -> list[Flow]:
    owner = _owner(net.topology, net.name)
    flows = [_arp_reply(net.key, str(net.gateway), net.gateway_mac, owner + "/gateway")]
    leg = net.host_leg
    leg_port = ports.get(leg.port)
    if leg_port is not None:
        leg_owner = owner + "/host"
        flows += _port_security(leg_port, leg.mac, str(leg.ip), net.key, leg_owner)
        flows.append(_arp_reply(net.key, str(leg.ip), leg.mac, leg_owner))
        flows.append(_l2_output(net.key, leg.mac, leg_port, leg_owner))
    return flows


def _topology_flows(plan: TopologyPlan, ports: Mapping[str, int]) -> list[Flow]:
    keys = {net.name: net.key for net in plan.networks}
    flows: list[Flow] = []
    for net in plan.networks:
        flows += _network_flows(net, ports)
    for ep in plan.endpoints():
        port = ports.get(ep.port)
        if port is None:
            continue  # not plugged in yet: no flows, so it cannot send or receive
        key = keys[ep.network]
        owner = _owner(ep.topology, ep.container, ep.network)
        flows += _port_security(port, ep.mac, str(ep.ip), key, owner)
        flows.append(_arp_reply(key, str(ep.ip), ep.mac, owner))
        flows.append(_l2_output(key, ep.mac, port, owner))
    return flows


def _pipeline_flows() -> list[Flow]:
    """Fixed skeleton: l3_router passes to l2_forward; every table's miss is an explicit drop."""
    flows = [flow(name, 0, owner="pipeline/drop") for name in TABLES]
    flows.append(flow("l3_router", 1, goto="l2_forward", owner="pipeline/switching"))
    return flows


def compile_flows(plans: Iterable[TopologyPlan], ports: Mapping[str, int]) -> list[Flow]:
    """Every flow the bridge should hold for these topologies, given port name -> ofport."""
    flows = _pipeline_flows()
    for plan in plans:
        flows += _topology_flows(plan, ports)
    return sorted(set(flows), key=lambda f: (f.table_id, -f.priority, f.cookie))
