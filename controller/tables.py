"""The pipeline's tables, in packet order. Table numbers are assigned here and nowhere else."""

from __future__ import annotations

# name -> OpenFlow table number. Gaps leave room for stages without renumbering.
TABLES: dict[str, int] = {
    "classifier": 0,  # port security: in_port + own MAC/IP -> network (metadata)
    "arp_responder": 10,  # answers ARP for every known address in the switch
    "l3_router": 40,  # routes between networks joined by a router
    "l2_forward": 60,  # exact (network, MAC) -> port
}

# Cookie stage ids (top byte of every cookie).
STAGE_IDS: dict[str, int] = {name: index + 1 for index, name in enumerate(TABLES)}

DESCRIPTIONS: dict[str, str] = {
    "classifier": "port security: the port's own MAC and IP only, tagged with its network",
    "arp_responder": "ARP responder: the switch answers for every known address",
    "l3_router": "router: gateway MAC, MAC rewrite, TTL decrement",
    "l2_forward": "L2 output: exact (network, MAC) to port; everything else dropped",
}


def table_name(table_id: int) -> str:
    """Name of a table number (for traces and dumps)."""
    for name, number in TABLES.items():
        if number == table_id:
            return name
    return f"table{table_id}"
