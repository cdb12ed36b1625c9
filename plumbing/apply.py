"""Carry out a plumbing plan (plumbing.plan): delete what goes, then create what is new;
if anything fails, undo what this call created and raise PlumbingError."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ovsdb.bridge import Bridge, PortSpec
from plumbing import images, netns, processes, resolvconf
from plumbing.phases import Phases
from plumbing.plan import Command, PlumbingPlan, endpoint_ids, host_leg_ids
from plumbing.statefiles import StateFiles

if TYPE_CHECKING:
    from sbcore.plan.hostplan import Endpoint, HostLeg, TopologyPlan

LOG = logging.getLogger(__name__)


class PlumbingError(RuntimeError):
    """Applying a plumbing plan failed; what this call had created was removed again."""


@dataclass
class _Created:
    """What one apply made so far, for rollback."""

    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    pid_paths: list[Path] = field(default_factory=list)


def apply_plan(plan: PlumbingPlan, plans: list[TopologyPlan], bridge: Bridge,
               files: StateFiles, ofport_timeout: float) -> dict[str, int]:
    """Apply ``plan`` (made for ``plans``); port name -> ofport of each port it created."""
    LOG.info("plumbing: %s", _describe(plan))
    created = _Created()
    phases = Phases()
    try:
        _delete(plan, bridge, files, phases)
        ofports = _create(plan, plans, bridge, files, ofport_timeout, created, phases)
        LOG.info("plumbing took %s", phases)
        return ofports
    except Exception as err:
        problems = _rollback(created, bridge, files)
        note = f" (rollback also failed: {'; '.join(problems)})" if problems else ""
        raise PlumbingError(f"plumbing failed: {err}{note}") from err


def _delete(plan: PlumbingPlan, bridge: Bridge, files: StateFiles, phases: Phases) -> None:
    paths = [files.pid_path(*key.split("/", 1)) for key in plan.stop_commands]
    remove_runtime_containers(paths)
    processes.stop_all(paths)
    phases.lap("stop commands")
    # The kernel deletes the veths and namespaces while ovs-vswitchd removes the ports (its
    # part, about 12 ms a port on the userspace datapath, is most of a teardown's time).
    with ThreadPoolExecutor(1, thread_name_prefix="netns-delete") as pool:
        kernel = pool.submit(netns.delete, links=plan.delete_ports,
                             namespaces=plan.delete_netns)
        try:
            bridge.delete_ports(plan.delete_ports + plan.delete_host_legs)
        finally:
            kernel.result()
    phases.lap("delete ports, veths and netns")
    for name in plan.delete_resolv:
        resolvconf.remove(name)
    for name in plan.delete_netns:
        files.unmark(name)
    phases.lap("delete files")


def _create(
    plan: PlumbingPlan, plans: list[TopologyPlan], bridge: Bridge, files: StateFiles,
    ofport_timeout: float, created: _Created, phases: Phases,
) -> dict[str, int]:
    topology_of = {c.netns: c.topology for topo in plans for c in topo.containers}
    new_ns = plan.create_netns + [name for name, _ in plan.attach_netns]
    veths = [netns.Veth(ep.port, ep.netns, ep.ifname, ep.mtu) for ep in plan.create_endpoints]
    created.netns += new_ns
    netns.delete_links(v.port for v in veths)  # leftovers of a crash: names are ours
    created.links += [v.port for v in veths]
    netns.create(plan.create_netns, plan.attach_netns, veths)
    phases.lap("netns+veth")
    files.mark({name: topology_of[name] for name in new_ns})
    for name, text in plan.write_resolv:  # before any command starts
        resolvconf.write(name, text)
    phases.lap("files")

    specs = [_endpoint_spec(ep) for ep in plan.create_endpoints]
    specs += [_host_leg_spec(leg) for leg in plan.create_host_legs]
    created.ports += [s.name for s in specs]
    bridge.add_ports(specs)
    phases.lap("add ports")
    ofports = bridge.wait_ofports([s.name for s in specs], ofport_timeout)
    phases.lap("wait ofports")

    legs = plan.create_host_legs + plan.configure_host_legs
    endpoints = plan.create_endpoints + plan.configure_endpoints
    netns.configure_host_interfaces(_iface(leg, leg.port, None) for leg in legs)
    netns.configure_namespaces(_iface(ep, ep.ifname, ep.netns) for ep in endpoints)
    phases.lap("addresses")

    starts = [command_start(cmd, files) for cmd in plan.start_commands]
    created.pid_paths += [one.pid_path for one in starts]
    processes.start_all(starts)
    phases.lap("start commands")
    return ofports


def command_start(cmd: Command, files: StateFiles) -> processes.Start:
    """How ``cmd`` starts: in its namespace, with its log and pid files."""
    return processes.Start(cmd.netns, cmd.command, files.log_path(cmd.topology, cmd.container),
                           files.pid_path(cmd.topology, cmd.container), cmd.runtime)


def _rollback(created: _Created, bridge: Bridge, files: StateFiles) -> list[str]:
    """Undo what this apply made; return what could not be undone."""
    problems = []
    steps = [
        ("removing image containers", lambda: remove_runtime_containers(created.pid_paths)),
        ("stopping commands", lambda: processes.stop_all(created.pid_paths)),
        ("deleting ports", lambda: bridge.delete_ports(created.ports)),
        (
            "deleting veths and namespaces",
            lambda: netns.delete(
                links=created.links,
                namespaces=[n for n in created.netns if netns.netns_inode(n) is not None],
            ),
        ),
    ]
    for what, step in steps:
        try:
            step()
        except Exception as err:
            problems.append(f"{what}: {err}")
    for name in created.netns:
        files.unmark(name)
    return problems


def remove_runtime_containers(pid_paths: list[Path]) -> None:
    """Remove the runtime's containers of the image containers among these commands (their
    client then exits), named after their namespace, one runtime call per runtime."""
    names: dict[str, list[str]] = {}
    for path in pid_paths:
        rec = processes.read(path)
        if rec is not None and rec.runtime is not None:
            names.setdefault(rec.runtime, []).append(rec.netns)
    for runtime, found in names.items():
        images.remove(runtime, found)


def _endpoint_spec(ep: Endpoint) -> PortSpec:
    return PortSpec(ep.port, internal=False, external_ids=endpoint_ids(ep), mtu=ep.mtu)


def _host_leg_spec(leg: HostLeg) -> PortSpec:
    return PortSpec(leg.port, internal=True, external_ids=host_leg_ids(leg), mac=leg.mac,
                    mtu=leg.mtu)


def _iface(obj: Endpoint | HostLeg, ifname: str, netns_name: str | None) -> netns.IfaceConfig:
    return netns.IfaceConfig(
        ifname=ifname, mac=obj.mac, ip=obj.ip, prefixlen=obj.prefixlen, mtu=obj.mtu,
        netns=netns_name, default_gateway=getattr(obj, "default_gateway", None),
        tx_offload=getattr(obj, "tx_offload", True),
    )


def _describe(plan: PlumbingPlan) -> str:
    counts = {k: len(v) for k, v in vars(plan).items() if v}
    return ", ".join(f"{k.replace('_', ' ')}: {n}" for k, n in counts.items())
