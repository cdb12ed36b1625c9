"""Address management: every (container, network) attachment gets a stable IPv4 address.

Pure and deterministic: the result depends only on the topology and the previous result.
"""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network

from sbcore.model import Topology, TopologyError

__all__ = ["Allocation", "allocate", "host_leg_address", "reserved_addresses"]

Allocation = dict[tuple[str, str], IPv4Address]
"""(container name, network name) -> address."""


def _hosts_descending(subnet: IPv4Network) -> Iterator[IPv4Address]:
    first, last = int(subnet.network_address) + 1, int(subnet.broadcast_address) - 1
    for value in range(last, first - 1, -1):
        yield IPv4Address(value)


def _fixed(topology: Topology, network_name: str) -> set[IPv4Address]:
    return {
        att.ip
        for c in topology.containers.values()
        for name, att in c.networks.items()
        if name == network_name and att.ip is not None
    }


def _vips_in(topology: Topology, subnet: IPv4Network) -> set[IPv4Address]:
    return {vip for vip in topology.vips().values() if vip in subnet}


def host_leg_address(
    topology: Topology, network_name: str, slot: int = 0, allocation: Allocation | None = None
) -> IPv4Address:
    """A host's address on a network.

    Slot 0 (a host alone, or the cluster's first host) takes the highest host address of the
    subnet that is not a fixed container address, the gateway or a VIP; IPAM never hands it
    out. The host in slot ``k`` takes the k-th next free one, also skipping the addresses in
    ``allocation`` (IPAM hands out the lowest addresses first, so these stay free).
    """
    net = topology.networks[network_name]
    taken = _fixed(topology, network_name) | _vips_in(topology, net.subnet) | {net.gateway}
    if slot:
        taken |= {ip for (_, n), ip in (allocation or {}).items() if n == network_name}
    free = (address for address in _hosts_descending(net.subnet) if address not in taken)
    for index, address in enumerate(free):
        if index == slot:
            return address
    raise TopologyError(
        f"network {network_name!r} ({net.subnet}) has no free address for host number "
        f"{slot}; use a larger subnet"
    )


def reserved_addresses(topology: Topology, network_name: str) -> set[IPv4Address]:
    """Addresses of a network that IPAM never hands out: network and broadcast address,
    gateway, fixed container addresses, VIPs and the host leg."""
    net = topology.networks[network_name]
    return (
        {net.subnet.network_address, net.subnet.broadcast_address, net.effective_gateway}
        | _fixed(topology, network_name)
        | _vips_in(topology, net.subnet)
        | {host_leg_address(topology, network_name)}
    )


def _free(subnet: IPv4Network, reserved: set[IPv4Address], used: set[IPv4Address]
          ) -> Iterator[IPv4Address]:
    """The host addresses of ``subnet`` in neither set, lowest first (read as it goes: an
    address added to ``used`` meanwhile is skipped)."""
    return (a for a in subnet.hosts() if a not in reserved and a not in used)


def allocate(topology: Topology, previous: Allocation | None = None) -> Allocation:
    """Give every (container, network) attachment an address.

    A fixed ``ip`` wins. Otherwise the previous address is kept when it is still a free host
    address of the subnet; the rest get the lowest free host address, in file order. So
    re-applying with ``previous`` set to the last result changes nothing, and adding or
    removing a container does not move the others.
    """
    previous = previous or {}
    reserved = {name: reserved_addresses(topology, name) for name in topology.networks}
    used: dict[str, set[IPv4Address]] = {name: set() for name in topology.networks}
    result: Allocation = {}
    pending: list[tuple[str, str]] = []

    for cname, container in topology.containers.items():
        for nname, att in container.networks.items():
            if att.ip is not None:
                result[cname, nname] = att.ip

    for cname, container in topology.containers.items():
        for nname, att in container.networks.items():
            if att.ip is not None:
                continue
            old = previous.get((cname, nname))
            subnet = topology.networks[nname].subnet
            if (old is not None and old in subnet and old not in reserved[nname]
                    and old not in used[nname]):
                result[cname, nname] = old
                used[nname].add(old)
            else:
                pending.append((cname, nname))

    problems = []
    free = {name: _free(net.subnet, reserved[name], used[name])
            for name, net in topology.networks.items()}
    for cname, nname in pending:
        subnet = topology.networks[nname].subnet
        address = next(free[nname], None)
        if address is None:
            problems.append(
                f"network {nname!r} ({subnet}) has no free address for container {cname!r}; "
                "use a larger subnet"
            )
            continue
        result[cname, nname] = address
        used[nname].add(address)
    if problems:
        raise TopologyError(problems)

    order = [(c, n) for c, container in topology.containers.items() for n in container.networks]
    return {key: result[key] for key in order}
