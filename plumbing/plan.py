"""What to change on the host so that it holds the wanted topologies: a pure diff."""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ovsdb.bridge import TOPOLOGY_KEY, OwnedPort
from plumbing.drift import Drift, endpoint_drift, host_leg_drift
from plumbing.netns import PREFIX
from sbcore.plan.hostplan import HostLeg

if TYPE_CHECKING:
    from plumbing.observe import ObservedInterfaces
    from sbcore.plan.hostplan import ContainerPlan, Endpoint, TopologyPlan

KIND_CONTAINER = "container"
KIND_HOST_LEG = "host-leg"
_KEY_PREFIX = "switchboard-"


def endpoint_ids(ep: Endpoint) -> dict[str, str]:
    """external_ids recorded on a container's port: enough to tell when it must change."""
    ids = {
        TOPOLOGY_KEY: ep.topology,
        "switchboard-container": ep.container,
        "switchboard-network": ep.network,
        "switchboard-ip": str(ep.ip),
        "switchboard-prefixlen": str(ep.prefixlen),
        "switchboard-mac": ep.mac,
        "switchboard-mtu": str(ep.mtu),
        "switchboard-kind": KIND_CONTAINER,
        "switchboard-netns": ep.netns,
        "switchboard-ifname": ep.ifname,
    }
    if ep.default_gateway is not None:
        ids["switchboard-gateway"] = str(ep.default_gateway)
    return ids


def host_leg_ids(leg: HostLeg) -> dict[str, str]:
    """external_ids recorded on a host leg (it lives in the root namespace: no netns key)."""
    return {
        TOPOLOGY_KEY: leg.topology,
        "switchboard-network": leg.network,
        "switchboard-ip": str(leg.ip),
        "switchboard-prefixlen": str(leg.prefixlen),
        "switchboard-mac": leg.mac,
        "switchboard-mtu": str(leg.mtu),
        "switchboard-kind": KIND_HOST_LEG,
    }


def process_key(topology: str, container: str) -> str:
    """How a container's command is keyed in ``running`` (and its pid file is placed)."""
    return f"{topology}/{container}"


@dataclass(frozen=True)
class Command:
    """A container command to start."""

    topology: str
    container: str
    netns: str
    command: str
    runtime: str | None = None  # an image container's runtime (command: its client)

    @property
    def key(self) -> str:
        return process_key(self.topology, self.container)


@dataclass
class PlumbingPlan:
    """Changes to make, deletions first. Every list is sorted: plans compare equal."""

    stop_commands: list[str] = field(default_factory=list)  # process keys
    delete_ports: list[str] = field(default_factory=list)  # container ports (veth host ends)
    delete_host_legs: list[str] = field(default_factory=list)
    delete_netns: list[str] = field(default_factory=list)  # names only, for attached ones
    delete_resolv: list[str] = field(default_factory=list)  # namespaces whose file goes
    create_netns: list[str] = field(default_factory=list)
    # (name, pid or namespace path)
    attach_netns: list[tuple[str, int | str]] = field(default_factory=list)
    create_endpoints: list[Endpoint] = field(default_factory=list)
    create_host_legs: list[HostLeg] = field(default_factory=list)
    configure_endpoints: list[Endpoint] = field(default_factory=list)  # set MAC, address...
    configure_host_legs: list[HostLeg] = field(default_factory=list)  # ...again, in place
    write_resolv: list[tuple[str, str]] = field(default_factory=list)  # (netns, resolv.conf)
    start_commands: list[Command] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not any(vars(self).values())


def _ours(ids: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in ids.items() if k.startswith(_KEY_PREFIX)}


_WantedPort = tuple[dict[str, str], "Endpoint | HostLeg"]


def _wanted(plans: list[TopologyPlan]) -> tuple[dict[str, ContainerPlan], dict[str, _WantedPort]]:
    """Wanted containers by namespace, and wanted port name -> (its external_ids, its plan)."""
    containers: dict[str, ContainerPlan] = {}
    ports: dict[str, _WantedPort] = {}
    for topo in plans:
        for net in topo.networks:
            ports[net.host_leg.port] = (host_leg_ids(net.host_leg), net.host_leg)
        for c in topo.containers:
            containers[c.netns] = c
            for ep in () if waiting(c) else c.endpoints:
                ports[ep.port] = (endpoint_ids(ep), ep)
    return containers, ports


def waiting(c: ContainerPlan) -> bool:
    """An image under Docker whose container does not run yet: its command starts, its
    namespace (the runtime's) is plugged once it runs."""
    return c.attach_pid is None and c.attach_name is not None and c.runtime is not None


def _drift(obj: Endpoint | HostLeg, seen: ObservedInterfaces) -> Drift | None:
    if isinstance(obj, HostLeg):
        return host_leg_drift(obj, seen.root.get(obj.port))
    return endpoint_drift(obj, seen.namespaces.get(obj.netns), seen.root.get(obj.port))


def _port_problem(
    want: _WantedPort, port: OwnedPort | None, fresh: Set[str],
    interfaces: ObservedInterfaces | None,
) -> Drift | None:
    """Why a wanted port is not as planned (None: it is); ``recreate``: only making the port
    (and its veth) again repairs it."""
    ids, obj = want
    name = obj.port
    if port is None:
        return Drift(f"port {name} not on the bridge", recreate=True)
    if _ours(port.external_ids) != ids:
        return Drift(f"port {name} has outdated settings", recreate=True)
    if port.ofport is None:
        return Drift(f"port {name} has no OpenFlow port number", recreate=True)
    if ids.get("switchboard-netns") in fresh:
        return Drift(f"namespace {ids['switchboard-netns']} is new", recreate=True)
    if interfaces is None:
        return None
    return _drift(obj, interfaces)


def plan_plumbing(
    plans: list[TopologyPlan],
    observed_ports: Mapping[str, OwnedPort],
    observed_netns: Set[str],
    running: Mapping[str, bool],
    *,
    observed_commands: Mapping[str, str] | None = None,
    stale_netns: Set[str] = frozenset(),
    wanted_resolv: Mapping[str, str] | None = None,
    observed_resolv: Mapping[str, str] | None = None,
    interfaces: ObservedInterfaces | None = None,
    netns_prefix: str = PREFIX,
    hold: Set[str] = frozenset(),
) -> PlumbingPlan:
    """Diff the wanted topologies against what the host holds.

    ``observed_ports``: ports on the bridge (only those marked ``switchboard-topology`` count);
    ``observed_netns``: existing namespace names (only names with this daemon's
    ``netns_prefix``, ``sb-`` by default, count);
    ``running``: process key -> alive, for every pid file; ``observed_commands``: process key ->
    command it runs; ``stale_netns``: names that exist but point at the wrong namespace (an
    attached process that changed), to drop and make again.

    A port is recreated when its recorded settings differ, it has no ofport or its namespace is
    new; a namespace is deleted only when it is an ``sb-`` name nobody wants.

    ``interfaces``: what the namespaces and the root namespace hold (None: not looked at).
    An interface whose MAC, MTU, state, address or default route differs is configured again;
    one whose veth pair is broken is made again with its port (see :mod:`plumbing.drift`).

    ``wanted_resolv``: namespace -> the resolv.conf it must have (None: leave those files
    alone); ``observed_resolv``: the files of ours found on the host. A file is written when
    it differs (before commands start) and removed when its container is gone.

    ``hold``: process keys of commands that exited and must not start now (their restart
    policy, or its backoff, says so); one whose command changed or whose namespace is made
    again starts all the same.
    """
    containers, ports = _wanted(plans)
    netns = {n for n in observed_netns if n.startswith(netns_prefix)}
    owned = {n: p for n, p in observed_ports.items() if TOPOLOGY_KEY in p.external_ids}
    plan = PlumbingPlan()

    fresh = set()  # namespaces (re)made by this plan: whatever was in them is gone
    for name, c in containers.items():
        if name in netns and name not in stale_netns or waiting(c):
            continue
        fresh.add(name)
        if c.attach_source is not None:
            plan.attach_netns.append((name, c.attach_source))
        else:
            plan.create_netns.append(name)
    plan.delete_netns = sorted((netns - containers.keys()) | (netns & stale_netns))

    kept = set()
    for name, port in owned.items():
        ids = port.external_ids
        want = ports.get(name)
        problem = None if want is None else _port_problem(want, port, fresh, interfaces)
        if want is not None and (problem is None or not problem.recreate):
            kept.add(name)
            obj = want[1]
            if problem is not None and isinstance(obj, HostLeg):
                plan.configure_host_legs.append(obj)
            elif problem is not None:
                plan.configure_endpoints.append(obj)
        elif ids.get("switchboard-kind") == KIND_HOST_LEG:
            plan.delete_host_legs.append(name)
        else:
            plan.delete_ports.append(name)
    for name in sorted(ports.keys() - kept):
        ids, obj = ports[name]
        if ids["switchboard-kind"] == KIND_HOST_LEG:
            plan.create_host_legs.append(obj)
        else:
            plan.create_endpoints.append(obj)

    observed_commands = observed_commands or {}
    wanted_keys = set()
    for name, c in containers.items():
        key = process_key(c.topology, c.name)
        wanted_keys.add(key)
        if c.command is None:
            if key in running:
                plan.stop_commands.append(key)
            continue
        same = observed_commands.get(key, c.command) == c.command
        # a namespace that follows its command (an image under Docker) does not restart it
        follows = c.runtime is not None and c.attach_name is not None
        if (running.get(key) or key in hold) and same and (name not in fresh or follows):
            continue
        if key in running:
            plan.stop_commands.append(key)
        plan.start_commands.append(Command(c.topology, c.name, name, c.command, c.runtime))
    plan.stop_commands += [k for k in running if k not in wanted_keys]
    if wanted_resolv is not None:
        observed_resolv = observed_resolv or {}
        plan.write_resolv = sorted(
            (ns, text) for ns, text in wanted_resolv.items() if observed_resolv.get(ns) != text
        )
        plan.delete_resolv = sorted(ns for ns in observed_resolv if ns not in wanted_resolv)
    plan.stop_commands.sort()
    plan.delete_ports.sort()
    plan.delete_host_legs.sort()
    plan.configure_endpoints.sort(key=lambda ep: ep.port)
    plan.configure_host_legs.sort(key=lambda leg: leg.port)
    plan.create_netns.sort()
    plan.attach_netns.sort()
    plan.start_commands.sort(key=lambda cmd: cmd.key)
    return plan


@dataclass
class Problems:
    """What keeps containers and host legs from being as planned, in short sentences."""

    containers: dict[tuple[str, str], str] = field(default_factory=dict)  # (topology, name)
    ports: dict[str, str] = field(default_factory=dict)  # a container interface, by its port
    host_legs: dict[tuple[str, str], str] = field(default_factory=dict)  # (topology, network)
    # containers attached by name whose runtime container does not run (yet): why
    pending: dict[tuple[str, str], str] = field(default_factory=dict)  # (topology, name)


def plumbing_problems(
    plans: list[TopologyPlan],
    observed_ports: Mapping[str, OwnedPort],
    observed_netns: Set[str],
    interfaces: ObservedInterfaces,
    stale_netns: Set[str] = frozenset(),
) -> Problems:
    """Compare the host with the plans as :func:`plan_plumbing` does, and say what differs
    (after a repair: what the repair did not fix)."""
    problems = Problems()
    for topo in plans:
        for net in topo.networks:
            leg = net.host_leg
            found = _port_problem((host_leg_ids(leg), leg), observed_ports.get(leg.port),
                                  frozenset(), interfaces)
            if found is not None:
                problems.host_legs[(topo.name, net.name)] = found.what
        for c in topo.containers:
            if waiting(c):
                continue
            if c.netns not in observed_netns or c.netns in stale_netns:
                problems.containers[(topo.name, c.name)] = f"namespace {c.netns} missing"
                continue
            if c.netns in interfaces.errors:
                problems.containers[(topo.name, c.name)] = (
                    f"namespace {c.netns} cannot be read: {interfaces.errors[c.netns]}")
                continue
            for ep in c.endpoints:
                found = _port_problem((endpoint_ids(ep), ep), observed_ports.get(ep.port),
                                      frozenset(), interfaces)
                if found is not None:
                    problems.ports[ep.port] = found.what
    return problems
