"""Names and identifiers Switchboard derives from a topology: stable across runs and hosts."""

from __future__ import annotations

import hashlib

OWNER_KEY = "switchboard"  # external_ids / meta key that marks what Switchboard owns


def _digest(*parts: str) -> bytes:
    return hashlib.sha1("/".join(parts).encode()).digest()


NETNS_PREFIX = "sb-"  # container namespaces of a host's daemon start with this by default


def netns_name(topology: str, container: str, prefix: str = NETNS_PREFIX) -> str:
    """Named network namespace of a container (``ip netns`` name).

    Simulated hosts of ``switchboard lab`` share one ``/run/netns``; each host's daemon has
    its own ``prefix`` there, so no daemon ever takes another host's namespaces for its own.
    """
    return f"{prefix}{topology}-{container}"


def veth_name(topology: str, container: str, network: str) -> str:
    """Host end of a container's veth (at most 15 characters)."""
    return "sbv" + _digest("veth", topology, container, network).hex()[:10]


def host_leg_name(topology: str, network: str) -> str:
    """OVS internal port that gives the host an address on a network."""
    return "sbh" + _digest("leg", topology, network).hex()[:10]


def container_ifname(index: int) -> str:
    """Interface name inside the container for its index-th network."""
    return f"eth{index}"


def _mac(*parts: str) -> str:
    raw = _digest("mac", *parts)[:5]
    return "02:" + ":".join(f"{b:02x}" for b in raw)


def container_mac(topology: str, container: str, network: str) -> str:
    """Stable, locally administered unicast MAC of a container interface."""
    return _mac(topology, container, network)


def gateway_mac(topology: str, network: str) -> str:
    """MAC the switch answers with for a network's gateway address."""
    return _mac("gateway", topology, network)


def host_leg_mac(topology: str, network: str, slot: int = 0) -> str:
    """MAC of a host's interface on a network; ``slot`` is the host's number in the cluster
    (0, a host alone, keeps the MAC it always had)."""
    if slot == 0:
        return _mac("host", topology, network)
    return _mac("host", topology, network, str(slot))


def datapath_id(bridge: str) -> int:
    """The OpenFlow datapath ID Switchboard gives its bridge (OVSDB ``other_config:
    datapath-id``): stable across restarts and re-creations, so that the daemon programs its
    own bridge only and ignores any other that connects to its OpenFlow port. 48 bits, like
    the MAC-based IDs OVS picks itself, with the locally administered bit set."""
    value = int.from_bytes(_digest("datapath", bridge)[:6], "big")
    return (value | 0x020000000000) & 0xFEFFFFFFFFFF


def network_key(topology: str, network: str) -> int:
    """32-bit identifier of a network on the switch (carried in the metadata field)."""
    return int.from_bytes(_digest("net", topology, network)[:4], "big") or 1


def tunnel_key(topology: str, network: str) -> int:
    """24-bit VXLAN network identifier of a network between hosts (never 0)."""
    return int.from_bytes(_digest("vni", topology, network)[:3], "big") or 1


def service_id(topology: str, container: str, service: str) -> str:
    """Consul service ID of one instance: independent of the host name."""
    return f"sb.{topology}.{container}.{service}"


def ct_zone(topology: str) -> int:
    """Conntrack zone of a topology (16 bits, never 0)."""
    return int.from_bytes(_digest("zone", topology)[:2], "big") or 1


def group_id(topology: str, service: str) -> int:
    """OpenFlow select-group id of a service VIP (31 bits, never 0)."""
    return (int.from_bytes(_digest("group", topology, service)[:4], "big") >> 1) or 1


def nic_mac(topology: str, nic: str) -> str:
    """Stable MAC of a virtual NIC made through the Python API."""
    return _mac("nic", topology, nic)
