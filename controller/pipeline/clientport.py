"""The client port of a VIP connection: swapped out of Linux's ephemeral range. Pure.

A connection to a VIP is destination-NATed to one instance in the topology's conntrack zone,
so its replies there are ``instance:port -> client:cport``. A direct connection from the same
client to the same instance with the same source port has exactly those replies too, and
Linux gives a new connection to another destination the same source port as an earlier one:
without more, the direct connection's SYN-ACK is taken for the VIP connection's, un-NATed to
come from the VIP, and the connection waits for the client's SYN retransmit (1 s).

So the source port of every TCP and UDP packet from a container to a VIP is swapped, before
the topology's zone, by a fixed one-to-one map (``SWAPS``) between the blocks that hold
Linux's ephemeral range (32768-60999) and blocks of 1024-32767, which Linux does not give
out. The swap is stateless: it rewrites the port's top bits (a masked set-field), and it is
its own inverse, so a reply's destination port is swapped back the same way. Two live
connections of a client to one VIP never share a port, so their swapped ports differ too, and
a swapped port never equals the port of a direct connection. Nothing is searched for and no
conntrack entry is added. The instance sees the client's own address and the swapped port.

Where a reply gets its port back: after the topology's zone has undone the VIP's NAT (OVS
marks that ``+snat``), in vip_reply (on the way from service_lb or, for an instance on
another host, tunnel_commit, to l3_router) or, for a connection balanced to its own client,
in hairpin_reply (to hairpin_output). Connection state is untouched, so the policy stage
still reads the connection's mark.

The host's own connections to a VIP keep their port: the host turns a refused one back
statelessly (see controller.pipeline.compiler), which needs its ports as they are.
"""

from __future__ import annotations

from collections.abc import Iterable

from controller.pipeline.flows import Ct, Flow, SetField, flow
from controller.pipeline.matches import CT_RPL, CT_SNAT, CT_TRK, ETH_IPV4, PROTOCOLS, to_vip
from controller.pipeline.matches import ct_state as _ct_state
from sbcore.plan.hostplan import NetworkPlan, ServicePlan, TopologyPlan

# (ephemeral block, its partner below 32768, prefix mask): a port in one block is swapped to
# the same offset in the other. Together the first blocks cover 32768-61439.
SWAPS: tuple[tuple[int, int, int], ...] = (
    (0x8000, 0x4000, 0xC000),  # 32768-49151 <-> 16384-32767
    (0xC000, 0x2000, 0xE000),  # 49152-57343 <-> 8192-16383
    (0xE000, 0x0800, 0xF800),  # 57344-59391 <-> 2048-4095
    (0xE800, 0x0400, 0xFC00),  # 59392-60415 <-> 1024-2047
    (0xEC00, 0x1000, 0xFC00),  # 60416-61439 <-> 4096-5119
)
ENTRY_PRIORITY = 105  # conntrack: above the topology's zone (100), below the hairpin's (110)


# (block, its partner, mask) both ways: what a port in ``block`` is swapped to
_MOVES = tuple(move for high, low, mask in SWAPS
               for move in ((high, low, mask), (low, high, mask)))


def swapped(port: int) -> int:
    """The port a client port becomes (and a swapped port goes back to); others stay."""
    for block, partner, mask in _MOVES:
        if port & mask == block:
            return (port & ~mask & 0xFFFF) | partner
    return port


def _swap_flows(table: str, then: str, match: dict, direction: str) -> list[Flow]:
    """In ``table``: a TCP/UDP packet's ``direction`` ("src"/"dst") port swapped, then
    ``then``."""
    flows = []
    for block, partner, mask in _MOVES:
        for proto in ("tcp", "udp"):
            field = f"{proto}_{direction}"
            flows.append(flow(
                table, 100,
                {**match, "eth_type": ETH_IPV4, "ip_proto": PROTOCOLS[proto],
                 field: (block, mask)},
                [SetField(field, partner, mask)], goto=then, owner="pipeline/client-port"))
    return flows


def pipeline_flows() -> list[Flow]:
    """The swaps, shared by every topology: client ports on the way to a VIP (vip_source),
    back on replies (vip_reply, hairpin_reply); anything else passes on unchanged."""
    flows = _swap_flows("vip_source", "vip_conntrack", {}, "src")
    for table, then in (("vip_reply", "l3_router"), ("hairpin_reply", "hairpin_output")):
        flows += _swap_flows(table, then, {"ct_state": _ct_state(on=CT_TRK | CT_SNAT)}, "dst")
        flows.append(flow(table, 1, goto=then, owner="pipeline/client-port"))
    flows.append(flow("vip_source", 1, goto="vip_conntrack", owner="pipeline/client-port"))
    return flows


def vip_entry_flows(plan: TopologyPlan, service: ServicePlan,
                    clients: Iterable[NetworkPlan]) -> list[Flow]:
    """conntrack: TCP and UDP to the VIP (on its port, if it has one) from each network routed
    to it have their client port swapped before the topology's zone."""
    owner = f"{plan.name}/service/{service.name}/client-port"
    return [flow("conntrack", ENTRY_PRIORITY, to_vip(net.key, str(service.vip), service.port,
                                                      proto), goto="vip_source", owner=owner)
            for net in clients for proto in ("tcp", "udp")]


def client_port_flows(plan: TopologyPlan, clients: Iterable[NetworkPlan],
                      tunnel: bool) -> list[Flow]:
    """Per client network: to a VIP, the topology's zone after the swap; the host's own
    connections not swapped; a VIP's replies (``+snat``) to vip_reply. ``tunnel``: the host
    has a tunnel port (replies also come from instances on other hosts)."""
    flows: list[Flow] = []
    for net in clients:
        owner = f"{plan.name}/{net.name}/client-port"
        leg = str(net.host_leg.ip)
        flows.append(flow("vip_conntrack", 100, {"metadata": net.key, "eth_type": ETH_IPV4},
                          [Ct(zone=plan.zone, nat="", table="service_lb")], owner=owner))
        flows.append(flow("vip_source", 110, {"metadata": net.key, "eth_type": ETH_IPV4,
                                              "ipv4_src": leg},
                          goto="vip_conntrack", owner=owner))
        flows.append(flow("vip_reply", 110, {"eth_type": ETH_IPV4, "ipv4_dst": leg},
                          goto="l3_router", owner=owner))
        replies = [("service_lb", 120)] + ([("tunnel_commit", 110)] if tunnel else [])
        for table, priority in replies:
            flows.append(flow(table, priority,
                              {"metadata": net.key, "eth_type": ETH_IPV4,
                               "ct_state": _ct_state(on=CT_TRK | CT_RPL | CT_SNAT)},
                              goto="vip_reply", owner=owner))
    return flows

