"""The pipeline's tables, in packet order. Table numbers are assigned here and nowhere else."""

from __future__ import annotations

# name -> OpenFlow table number. Gaps leave room for stages without renumbering.
TABLES: dict[str, int] = {
    "classifier": 0,  # port security: in_port + own MAC/IP -> network (metadata)
    "arp_responder": 10,  # answers ARP for every known address in the switch
    "tunnel_conntrack": 15,  # from another host: conntrack in the topology's zone, NAT undone
    "tunnel_commit": 16,  # from another host: a new connection is recorded as allowed
    "uplink_conntrack": 17,  # from the host leg, not from its address: conntrack (egress replies)
    "uplink_check": 18,  # from the host leg, not from its address: only egress replies pass
    "conntrack": 20,  # every IPv4 packet through conntrack (zone per topology, NAT undone)
    "hairpin_conntrack": 21,  # from an instance to its VIP, after the hairpin zone: own zone
    "vip_source": 22,  # to a VIP: the client port swapped out of Linux's ephemeral range
    "vip_conntrack": 23,  # to a VIP, after the swap: the topology's zone
    "hairpin_reply": 24,  # a hairpin reply after the topology's zone: its client port back
    "service_lb": 30,  # new connection to a VIP -> select group of its passing instances
    "service_nat": 31,  # chosen instance -> ct commit with destination NAT
    "vip_reply": 32,  # a VIP's reply, its NAT undone: the client port swapped back
    "l3_router": 40,  # routes between networks joined by a router
    "l3_neighbor": 45,  # routed packet: destination IP -> destination MAC
    "policy": 50,  # routed new connections pass only where a policy allows
    "l2_forward": 60,  # exact (network, MAC) -> port
    "hairpin_output": 61,  # an instance's connection to its own VIP: back out of its port
}

# Cookie stage ids (top byte of every cookie). Stages added later take the next numbers, so a
# flow keeps its cookie across upgrades.
_STAGE_ORDER = [
    "classifier", "arp_responder", "conntrack", "service_lb", "service_nat", "l3_router",
    "l3_neighbor", "policy", "l2_forward", "tunnel_conntrack", "tunnel_commit",
    "hairpin_conntrack", "hairpin_output", "vip_source", "vip_conntrack", "hairpin_reply",
    "vip_reply", "uplink_conntrack", "uplink_check",
]
STAGE_IDS: dict[str, int] = {name: index + 1 for index, name in enumerate(_STAGE_ORDER)}
assert set(STAGE_IDS) == set(TABLES), "every table needs a stage id"

DESCRIPTIONS: dict[str, str] = {
    "classifier": "port security: the port's own MAC and IP only, tagged with its network",
    "arp_responder": "ARP responder: the switch answers for every known address",
    "tunnel_conntrack": "from another host: track the connection, undo service NAT",
    "tunnel_commit": "from another host: the sending host's policy allowed it; record that",
    "uplink_conntrack": "from the host leg with a foreign source: track the connection",
    "uplink_check": "from the host leg with a foreign source: only replies to egress pass",
    "conntrack": "conntrack: track the connection, undo service NAT on replies",
    "service_lb": "service VIP: pick one passing instance for a new connection",
    "service_nat": "service NAT: rewrite the VIP to the chosen instance",
    "l3_router": "router: gateway MAC, MAC rewrite, TTL decrement",
    "l3_neighbor": "router: destination MAC of the routed-to address",
    "policy": "policy: routed new connections only where a policy allows; replies pass",
    "l2_forward": "L2 output: exact (network, MAC) to port; to a host address only replies, DNS "
                  "and `to: host`; everything else dropped",
    "hairpin_conntrack": "hairpin: an instance to its own VIP, source NAT undone on replies",
    "hairpin_output": "hairpin: a connection balanced to its own client goes back to it",
    "vip_source": "to a VIP: the client port swapped out of Linux's ephemeral range",
    "vip_conntrack": "to a VIP: track the connection in the topology's zone",
    "hairpin_reply": "hairpin: a reply's client port swapped back",
    "vip_reply": "a VIP's reply: the client port swapped back",
}


def table_name(table_id: int) -> str:
    """Name of a table number (for traces and dumps)."""
    for name, number in TABLES.items():
        if number == table_id:
            return name
    return f"table{table_id}"
