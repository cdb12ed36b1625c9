"""The Python API: virtual networks, NICs and containers, a registry and a discoverer.

The same engine as ``switchboard up``: a VirtualNetwork is a topology with one network; a
started Container is a container in it; each change is validated by the topology model,
written to Consul KV and realised by the host's ``switchboard controller``::

    vnet = VirtualNetwork("my-vnet")                  # a free /24 is chosen
    vnic = VirtualNIC("my-vnic", vnet)                # MAC and IP (from IPAM)
    container = Container("my-container", vnet, vnic, command="python3 -m http.server 80")
    container.start()                                 # waits until the host converged

    registry = Registry("my-registry")                # backed by the local Consul agent
    discoverer = Discoverer("my-discoverer", registry)
    registry.register("my-service", str(vnic.ip), 80)
    services = discoverer.discover()

When the Consul agent, Open vSwitch or the controller is down, calls raise
:class:`Unreachable`, whose text says what could not be reached, where, and how to start it.
With Consul ACLs on, VirtualNetwork and Registry take ``token=``; without it they use the token
sbcore.state.token finds (SWITCHBOARD_TOKEN, a token file, ...). A refused token raises
``consul.ACLPermissionDenied`` (sbcore.state.reach.TokenRefused when it is unknown).
"""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any

from discovery.registry import Discoverer, Registry
from sbcore.model import Topology, naming
from sbcore.model.desired import DesiredState
from sbcore.state import hosts, reach
from sbcore.state.reach import Unreachable
from sbcore.state.store import DEFAULT_CONSUL, Store
from switchboard.apply import admit, apply_topology, remove_topology

__all__ = ["Container", "Discoverer", "Registry", "Unreachable", "VirtualNIC", "VirtualNetwork"]

SUBNET_POOL = ip_network("10.200.0.0/16")  # where networks without a subnet get their /24


class VirtualNetwork:
    """An isolated L2 network (a one-network topology named after it)."""

    def __init__(
        self,
        name: str,
        subnet: str | IPv4Network | None = None,
        *,
        mtu: int | None = None,
        consul: str = DEFAULT_CONSUL,
        prefix: str = "switchboard",
        timeout: float = 60.0,
        token: str | None = None,
    ) -> None:
        self.name = name
        self.consul = consul
        self.store = Store(reach.consul_client(consul, token), prefix)
        self.timeout = timeout
        self.mtu = mtu
        self.nics: dict[str, VirtualNIC] = {}
        self.containers: dict[str, Container] = {}
        applied = self.store.applied()
        self._previous = applied.get(name)
        if subnet is not None:
            self.subnet = IPv4Network(ip_network(subnet))
        elif self._previous is not None:
            self.subnet = next(iter(self._previous.topology.networks.values())).subnet
        else:  # pick a free /24 and reserve it in the same atomic admission
            self.subnet = SUBNET_POOL
            admit(self.store, self._reserve, f"python:{self.name}")

    def __repr__(self) -> str:
        return f"VirtualNetwork({self.name!r}, subnet={str(self.subnet)!r})"

    @property
    def gateway(self) -> IPv4Address:
        return next(self.subnet.hosts())

    def _reserve(self, state: DesiredState) -> Topology:
        """This network, empty, on the first /24 of the pool no applied topology uses."""
        used = [n.subnet for s in state.topologies.values() if s.topology.name != self.name
                for n in s.topology.networks.values()]
        for candidate in SUBNET_POOL.subnets(new_prefix=24):
            if not any(candidate.overlaps(u) for u in used):
                self.subnet = candidate
                return self.topology()
        raise RuntimeError(f"no free /24 left in {SUBNET_POOL}; pass subnet= explicitly")

    def _taken(self) -> set[IPv4Address]:
        taken = {nic.ip for nic in self.nics.values()}
        if self._previous is not None:
            taken |= set(self._previous.allocation.values())
        return taken

    def free_address(self) -> IPv4Address:
        """Lowest host address not used by the gateway, the host or another NIC."""
        hosts = list(self.subnet.hosts())
        taken = self._taken() | {self.gateway, hosts[-1]}  # the last one is the host's leg
        for address in hosts:
            if address not in taken:
                return address
        raise RuntimeError(f"network {self.name} ({self.subnet}) has no free address")

    def _require_controller(self) -> None:
        found = hosts.wait_ready(self.store.client, self.store.prefix)
        if not found.ready():
            raise reach.no_controller(
                self.consul, self.store.prefix, hosts.describe(found),
                f"start it with {reach.START_CONTROLLER}; nothing was changed",
            )

    def topology(self) -> Topology:
        """This network and its started containers as a validated topology."""
        network: dict[str, Any] = {"subnet": str(self.subnet)}
        if self.mtu:
            network["mtu"] = self.mtu
        containers = {
            c.name: c.spec() for c in self.containers.values()
        }
        return Topology.model_validate(
            {"name": self.name, "networks": {self.name: network}, "containers": containers}
        )

    def apply(self) -> None:
        """Make the host match this network (waits until the daemon converged).

        Unreachable, before anything is stored, when no controller is running."""
        self._require_controller()
        apply_topology(self.store, self.topology(), f"python:{self.name}", self.timeout)

    def delete(self) -> None:
        """Remove the network and every container on it from the host.

        Unreachable, before anything is removed, when a host holds it and no controller is
        running to take it down."""
        if self.store.reports(self.name):
            self._require_controller()
        remove_topology(self.store, self.name, self.timeout)
        self.containers.clear()


class VirtualNIC:
    """A virtual NIC on a network: a MAC and an IP (chosen by IPAM unless given)."""

    def __init__(
        self,
        name: str,
        network: VirtualNetwork,
        ip: str | IPv4Address | None = None,
        mac: str | None = None,
    ) -> None:
        self.name = name
        self.network = network
        self.ip = IPv4Address(ip_address(ip)) if ip is not None else network.free_address()
        if self.ip not in network.subnet:
            raise ValueError(f"NIC {name}: {self.ip} is outside {network.subnet}")
        self.mac = (mac or naming.nic_mac(network.name, name)).lower()
        network.nics[name] = self

    def __repr__(self) -> str:
        return f"VirtualNIC({self.name!r}, ip={str(self.ip)!r}, mac={self.mac!r})"


class Container:
    """A container (a network namespace and, optionally, a command) on a network."""

    def __init__(
        self,
        name: str,
        network: VirtualNetwork,
        nic: VirtualNIC,
        command: str | None = None,
        services: list[dict[str, Any]] | None = None,
        host: str | None = None,
    ) -> None:
        if nic.network is not network:
            raise ValueError(f"container {name}: NIC {nic.name} is on {nic.network.name}, "
                             f"not on {network.name}")
        self.name = name
        self.network = network
        self.nic = nic
        self.command = command
        self.services = services or []
        self.host = host  # the host that runs it (see `switchboard hosts`); None: placed

    def __repr__(self) -> str:
        return f"Container({self.name!r}, netns={self.netns!r}, ip={str(self.nic.ip)!r})"

    @property
    def netns(self) -> str:
        return naming.netns_name(self.network.name, self.name)

    def spec(self) -> dict[str, Any]:
        """The container as a topology-file entry."""
        entry: dict[str, Any] = {
            "networks": {self.network.name: {"ip": str(self.nic.ip), "mac": self.nic.mac}},
        }
        if self.command:
            entry["command"] = self.command
        if self.services:
            entry["services"] = self.services
        if self.host:
            entry["host"] = self.host
        return entry

    def start(self) -> None:
        """Create the container on its host and wait until it is plugged in and running.

        The container goes to ``host`` when given (PlacementError, with nothing changed, when
        that host is unknown or down), else to the ready host with the fewest containers;
        once placed it stays there."""
        self.network.containers[self.name] = self
        try:
            self.network.apply()
        except Exception:
            del self.network.containers[self.name]
            raise

    def stop(self) -> None:
        """Remove the container from the host (its namespace, port and flows)."""
        if self.network.containers.pop(self.name, None) is not None:
            self.network.apply()

    def exec(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv],
                              capture_output=True, text=True, timeout=timeout)
