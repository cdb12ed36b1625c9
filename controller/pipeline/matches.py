"""Match building blocks shared by the pipeline's stages: conntrack states, CIDRs, ports. Pure."""

from __future__ import annotations

from ipaddress import ip_network

from sbcore.model import PortSpec

ETH_ARP = 0x0806
ETH_IPV4 = 0x0800
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17}

# conntrack state bits (OVS ct_state)
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
CT_SNAT = 0x40  # this packet's source was translated (also: a destination NAT undone on a reply)
CT_DNAT = 0x80  # this packet's destination was translated (also: a source NAT undone on a reply)
ALLOWED_MARK = 1  # ct_mark of connections a policy (or the host) allowed


def ct_state(*, on: int, off: int = 0) -> tuple[int, int]:
    """A masked ct_state match: the ``on`` bits set, the ``off`` bits clear."""
    return (on, on | off)


def masked(cidr: str) -> str | tuple[str, str]:
    """An IPv4 match for a CIDR: the address alone for a /32, else (address, netmask)."""
    net = ip_network(cidr)
    if net.prefixlen == 32:
        return str(net.network_address)
    return (str(net.network_address), str(net.netmask))


def port_ranges(lo: int, hi: int) -> list[int | tuple[int, int]]:
    """Cover [lo, hi] with the fewest exact or (value, mask) port matches."""
    result: list[int | tuple[int, int]] = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size //= 2
        result.append(lo if size == 1 else (lo, 0xFFFF & ~(size - 1)))
        lo += size
    return result


def to_vip(net_key: int, vip: str, port: int | None, proto: str) -> dict[str, object]:
    """A ``proto`` ("tcp"/"udp") packet from a network to a VIP (on its port, if it has one)."""
    match: dict[str, object] = {"metadata": net_key, "eth_type": ETH_IPV4, "ipv4_dst": vip,
                                "ip_proto": PROTOCOLS[proto]}
    if port is not None:
        match[f"{proto}_dst"] = port
    return match


def port_matches(spec: PortSpec) -> list[dict[str, object]]:
    """The matches of one policy port spec (protocol, and its port range if any)."""
    proto = PROTOCOLS[spec.proto]
    if spec.lo is None or spec.hi is None:
        return [{"ip_proto": proto}]
    field_name = f"{spec.proto}_dst"
    return [{"ip_proto": proto, field_name: p} for p in port_ranges(spec.lo, spec.hi)]


def rule_port_matches(specs: tuple[PortSpec, ...]) -> list[dict[str, object]]:
    """The matches of a rule's ports; one empty match (every protocol) when it lists none."""
    return [m for spec in specs for m in port_matches(spec)] or [{}]
