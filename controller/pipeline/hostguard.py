"""What containers may send to the host: the flows in front of each host address. Pure.

Every host has an address (an OVS internal port, "host leg") on every network, so that it
reaches every container. The host's kernel takes any packet that arrives on that port for
any of its own addresses, so a container could reach whatever listens on the host, on
0.0.0.0 too. Every IPv4 packet whose destination MAC is a host's address on a network (this
host's, or another host's behind the tunnel) therefore passes only if it is:

- part of a connection the host opened (conntrack reply direction; the host's new
  connections are committed in the service_lb stage, so that their replies are known), or
  related to one (ICMP errors);
- DNS (UDP and TCP port 53) to that address, which the daemon's DNS proxy serves;
- a connection to a VIP that has no passing instance, which service_lb NATs to a closed port
  of the client's own host address (ct_state +dnat, to that port only), so that the host
  refuses it at once;
- allowed by a ``to: host`` policy of the topology (from its sources, on its ports).

Everything else to a host address is dropped in l2_forward. What the host sends to
containers is not filtered here.
"""

from __future__ import annotations

from collections.abc import Sequence

from controller.pipeline.flows import Action, Ct, Flow, flow
from controller.pipeline.matches import (
    ALLOWED_MARK,
    CT_DNAT,
    CT_INV,
    CT_NEW,
    CT_REL,
    CT_RPL,
    CT_TRK,
    ETH_IPV4,
    PROTOCOLS,
    ct_state,
    masked,
    rule_port_matches,
)
from sbcore.plan.hostplan import NetworkPlan, PolicyRule

TCP, UDP = PROTOCOLS["tcp"], PROTOCOLS["udp"]
DNS_PORT = 53
GUARD_PRIORITY = 110  # the drop in front of a host address (controller.pipeline.trace names it)


def guard_flows(
    net: NetworkPlan, zone: int, mac: str, ip: str, output: Sequence[Action],
    rules: Sequence[PolicyRule], reject_port: int, owner: str,
) -> list[Flow]:
    """The l2_forward flows of one host address (``mac``, ``ip``) on ``net``: what may reach
    it leaves by ``output``; any other IPv4 packet to it is dropped."""
    to_leg = {"metadata": net.key, "eth_type": ETH_IPV4, "eth_dst": mac}
    out = tuple(output)
    flows = [flow("l2_forward", GUARD_PRIORITY, to_leg, owner=owner + "/guard")]  # the rest
    allowed: list[tuple[dict[str, object], tuple[Action, ...]]] = [
        ({"ct_state": ct_state(on=CT_TRK | CT_RPL, off=CT_INV)}, out),
        ({"ct_state": ct_state(on=CT_TRK | CT_REL, off=CT_INV)}, out),
    ]
    for proto, field in ((UDP, "udp_dst"), (TCP, "tcp_dst")):
        allowed.append(({"ipv4_dst": ip, "ip_proto": proto, field: DNS_PORT}, out))
        allowed.append(({"ipv4_dst": ip, "ip_proto": proto, field: reject_port,
                         "ct_state": ct_state(on=CT_TRK | CT_DNAT, off=CT_INV)}, out))
    commit = (Ct(zone=zone, commit=True, mark=ALLOWED_MARK), *out)
    for rule in rules:
        for source in rule.sources:
            for extra in rule_port_matches(rule.ports):
                allowed.append(({"ipv4_dst": ip, "ipv4_src": masked(source),
                                 "ct_state": ct_state(on=CT_TRK, off=CT_INV), **extra}, commit))
    for match, actions in allowed:
        priority = 115 if actions is commit else 120  # a reply passes as it is
        flows.append(flow("l2_forward", priority, {**to_leg, **match}, actions, owner=owner))
    return flows


def host_commit_flows(net: NetworkPlan, zone: int, leg_port: int, owner: str) -> list[Flow]:
    """service_lb: a new connection the host opens (not to a VIP, whose flows come first) is
    committed, so that the container's replies are known as replies. The host's DNS answers
    are not connections it opened: they pass without an entry."""
    from_leg = {"in_port": leg_port, "eth_type": ETH_IPV4,
                "ct_state": ct_state(on=CT_TRK | CT_NEW, off=CT_INV)}
    flows = [flow("service_lb", 50, from_leg, [Ct(zone=zone, commit=True, mark=ALLOWED_MARK)],
                  goto="l3_router", owner=owner)]
    for proto, field in ((UDP, "udp_src"), (TCP, "tcp_src")):
        flows.append(flow("service_lb", 60, {**from_leg, "ip_proto": proto, field: DNS_PORT},
                          goto="l3_router", owner=owner))
    return flows

