"""``switchboard trace``: the pipeline stages a container's packet goes through, and its verdict."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from typing import Any

import click

from controller.pipeline.tables import TABLES
from controller.pipeline.trace import (
    Packet,
    TraceError,
    build_packet,
    explain,
    flow_spec,
    run_ovs,
    run_trace,
)
from controller.pipeline.trace_parse import nat_targets, port_names
from sbcore.model import naming
from sbcore.state import reach
from sbcore.state.store import Store
from switchboard.cli.output import fail as _fail

PORT = click.IntRange(1, 65535)



def _pick_report(
    store: Store, container: str, topology: str | None
) -> tuple[str, dict[str, Any]]:
    """(topology, this host's report) of the topology that holds ``container``."""
    found: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for (host, topo), report in store.reports(topology).items():
        if any(r["container"] == container for r in report.get("containers", [])):
            found.setdefault(topo, []).append((host, report))
    if not found:
        where = f"topology {topology!r}" if topology else "any applied topology"
        raise TraceError(f"no container {container!r} in {where} (see `switchboard status`)")
    if len(found) > 1:
        raise TraceError(f"{container!r} is in several topologies ({', '.join(sorted(found))}): "
                         "choose one with --topology")
    topo, reports = next(iter(found.items()))
    local = [r for host, r in reports if host == socket.gethostname()]
    return topo, (local or [r for _, r in reports])[0]


def _port_labels(topology: str, report: dict[str, Any], bridge: str) -> dict[int, str]:
    """OpenFlow port -> what a user calls it: a container, the host or the port name."""
    by_port = {r["port"]: f"{r['container']} ({r['ip']}, port {{n}}, {r['port']})"
               for r in report.get("containers", [])}
    for net in report.get("networks", []):
        leg = naming.host_leg_name(topology, net["name"])
        by_port[leg] = f"the host ({net['host_ip']}, port {{n}}, {leg})"
    names = port_names(run_ovs("ovs-ofctl", "-O", "OpenFlow13", "show", bridge))
    return {n: by_port.get(name, f"port {{n}} ({name})").format(n=n) for n, name in names.items()}


def _follow_vip(
    bridge: str, packet: Packet, proto: str, port: int | None
) -> tuple[str, Any] | None:
    """Trace of the first instance a VIP's group can pick, as ("ip:port", trace)."""
    flows = run_ovs("ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", bridge,
                    f"table={TABLES['service_nat']}")
    targets = nat_targets(flows, packet.ip_dst, proto)
    if not targets:
        return None
    ip, _, target_port = targets[0].partition(":")
    natted = replace(packet, ip_dst=ip, destination=targets[0])
    spec = flow_spec(natted, proto, int(target_port) if target_port else port)
    return targets[0], run_trace(bridge, spec)


@click.command()
@click.argument("container")
@click.argument("dest")
@click.option("--tcp", "tcp_port", type=PORT, metavar="PORT", help="A TCP SYN to PORT.")
@click.option("--udp", "udp_port", type=PORT, metavar="PORT", help="A UDP datagram to PORT.")
@click.option("--icmp", is_flag=True, help="An ICMP echo request (the default).")
@click.option("-t", "--topology", help="The topology of CONTAINER, when several have that name.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def trace(
    ctx: click.Context, container: str, dest: str, tcp_port: int | None,
    udp_port: int | None, icmp: bool, topology: str | None, as_json: bool,
) -> None:
    """Trace a packet from CONTAINER to DEST (a container, a service with a VIP, or an IP)
    through the bridge's pipeline: each stage it passes, and whether it is delivered."""
    chosen = [name for name, on in (("tcp", tcp_port), ("udp", udp_port), ("icmp", icmp)) if on]
    if len(chosen) > 1:
        _fail("give at most one of --tcp, --udp and --icmp")
    proto = chosen[0] if chosen else "icmp"
    port = tcp_port or udp_port
    store = Store(reach.consul_client(ctx.obj["consul"]), ctx.obj["prefix"])
    try:
        topo, report = _pick_report(store, container, topology)
        applied = store.applied().get(topo)
        vips = {n: str(v) for n, v in applied.topology.vips().items()} if applied else {}
        packet = build_packet(topo, report, container, dest, vips)
    except TraceError as exc:
        _fail(str(exc))
    bridge = report["bridge"]
    try:
        result = run_trace(bridge, flow_spec(packet, proto, port))
        then = _follow_vip(bridge, packet, proto, port) if result.group is not None else None
        labels = _port_labels(topo, report, bridge)
    except TraceError as exc:  # OVS down says so in one line; else the trace's own reason
        reach.check_vswitchd(os.environ.get("OVS_RUNDIR", "/var/run/openvswitch"))
        _fail(str(exc))
    what = f"{proto}/{port}" if port else proto
    header = f"{what} from {packet.source} to {packet.destination} on bridge {bridge}"
    explained = explain(result, header, labels, packet.in_port, then, packet.to_gateway)
    if as_json:
        click.echo(json.dumps(explained.as_dict(), indent=2))
    else:
        click.echo("\n".join(explained.lines()))
