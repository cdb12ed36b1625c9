"""`switchboard trace`: a packet from a container through the pipeline, stage by stage.

Like ``ovn-trace``: the packet a container would send is handed to OVS's ``ofproto/trace``;
its output is parsed (controller.pipeline.trace_parse) into the stages (by name) the packet went
through and a verdict.
Everything here is pure except ``run_trace`` and ``run_ovs``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Any

from controller.pipeline.hostguard import GUARD_PRIORITY
from controller.pipeline.tables import DESCRIPTIONS, TABLES
from controller.pipeline.trace_parse import Trace, parse_trace
from sbcore.model import naming

CT_NEXT = "trk,new"  # conntrack state of every recirculation: the packet opens a connection
SOURCE_PORT = 43210

# Why a packet stops in a stage's priority-0 drop (what ovn-trace would say).
DROP_REASONS: dict[str, str] = {
    "classifier": "the port may not send from this MAC and IP (port security)",
    "arp_responder": "no address the switch answers for",
    "conntrack": "not IPv4 on a known network",
    "service_lb": "no service takes it",
    "service_nat": "no instance chosen",
    "l3_router": "no router joins these networks",
    "l3_neighbor": "no container has the routed-to address",
    "policy": "no policy allows this new connection",
    "l2_forward": "no port on this network has the destination MAC",
}


class TraceError(RuntimeError):
    """The trace cannot be made (unknown container or destination, OVS not answering)."""


# --- the packet -------------------------------------------------------------------------

@dataclass(frozen=True)
class Packet:
    """The packet a container sends: its port, addresses and what the destination is."""

    in_port: int
    eth_src: str
    eth_dst: str
    ip_src: str
    ip_dst: str
    source: str  # for the header line: "web (10.0.0.10, port 5)"
    destination: str  # "api (10.0.1.10)", "service api (VIP 10.0.1.100)", "10.0.9.9"
    to_gateway: bool = False  # sent to the gateway MAC: routed (or a VIP)


def _rows_of(report: dict[str, Any], container: str) -> list[dict[str, Any]]:
    return [r for r in report.get("containers", []) if r["container"] == container]


def _network(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(n for n in report.get("networks", []) if n["name"] == name)


def _subnet_of(report: dict[str, Any], ip: IPv4Address) -> str | None:
    for net in report.get("networks", []):
        if ip in IPv4Network(net["subnet"]):
            return net["name"]
    return None


def build_packet(
    topology: str, report: dict[str, Any], container: str, dest: str,
    vips: dict[str, str] | None = None,
) -> Packet:
    """The packet ``container`` sends to ``dest`` (a container, a service with a VIP or an IP).

    A destination on one of the sender's networks gets the destination's own MAC; anything
    else goes to the gateway MAC of the sender's network (the router, or a VIP).
    """
    vips = vips or {}
    rows = _rows_of(report, container)
    if not rows:
        raise TraceError(f"topology {topology!r} has no container {container!r}")
    by_net = {r["network"]: r for r in rows}
    dest_rows = _rows_of(report, dest)
    if dest_rows:
        shared = [r for r in dest_rows if r["network"] in by_net]
        target = shared[0] if shared else dest_rows[0]
        ip, label = target["ip"], f"{dest} ({target['ip']})"
    elif dest in vips:
        ip, label = vips[dest], f"service {dest} (VIP {vips[dest]})"
    else:
        try:
            ip = str(IPv4Address(dest))
        except ValueError:
            raise TraceError(
                f"{dest!r} is neither a container of {topology!r}, a service with a VIP, "
                "nor an IPv4 address") from None
        owner = next((r for r in report.get("containers", []) if r["ip"] == ip), None)
        vip_of = next((n for n, v in vips.items() if v == ip), None)
        label = (f"{owner['container']} ({ip})" if owner else
                 f"service {vip_of} (VIP {ip})" if vip_of else ip)
    net = _subnet_of(report, ip_address(ip))
    src = by_net.get(net) if net else None
    if src is None:
        src = rows[0]  # routed: leaves by the first network
    eth_dst = naming.gateway_mac(topology, src["network"])
    if net == src["network"]:
        neighbour = next((r for r in report.get("containers", [])
                          if r["ip"] == ip and r["network"] == net), None)
        leg = _network(report, net)
        if neighbour is not None:
            eth_dst = neighbour["mac"]
        elif leg.get("host_ip") == ip:
            eth_dst = naming.host_leg_mac(topology, net)
    if src.get("ofport") is None:
        raise TraceError(f"{container} is not plugged into the bridge yet (no OpenFlow port)")
    return Packet(
        in_port=int(src["ofport"]), eth_src=src["mac"], eth_dst=eth_dst, ip_src=src["ip"],
        ip_dst=ip, source=f"{container} ({src['ip']}, port {src['ofport']})", destination=label,
        to_gateway=eth_dst == naming.gateway_mac(topology, src["network"]),
    )


def flow_spec(packet: Packet, proto: str = "icmp", port: int | None = None) -> str:
    """The ``ofproto/trace`` flow of a packet: ``icmp`` (echo request), ``tcp`` (SYN) or ``udp``."""
    fields = [proto, f"in_port={packet.in_port}", f"dl_src={packet.eth_src}",
              f"dl_dst={packet.eth_dst}", f"nw_src={packet.ip_src}", f"nw_dst={packet.ip_dst}",
              "nw_ttl=64"]
    if proto == "icmp":
        fields += ["icmp_type=8", "icmp_code=0"]
    else:
        if port is None:
            raise TraceError(f"a {proto} trace needs a destination port")
        fields += [f"{proto}_src={SOURCE_PORT}", f"{proto}_dst={port}"]
        if proto == "tcp":
            fields.append("tcp_flags=syn")
    return ",".join(fields)


# --- the verdict and what a user reads -----------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """Where the packet ended: delivered to ports, or dropped in a stage."""

    delivered: tuple[str, ...] = ()
    dropped_in: str | None = None
    reason: str = ""
    via: str | None = None  # the VIP instance the trace followed

    def text(self) -> str:
        if self.delivered:
            return "delivered to " + ", ".join(self.delivered)
        return f"dropped in stage {self.dropped_in}: {self.reason}"


@dataclass
class Report:
    """The stages of one trace, ready to print or to dump as JSON."""

    header: str
    stages: list[dict[str, Any]] = field(default_factory=list)
    verdict: Verdict = field(default_factory=Verdict)

    def lines(self) -> list[str]:
        out = [self.header]
        for stage in self.stages:
            if stage.get("note"):
                out.append(f"    ~ {stage['note']}")
                continue
            out.append(f"{stage['table']:>3} {stage['stage']:<14} {stage['description']}")
            priority = "" if stage["priority"] is None else f" (priority {stage['priority']})"
            out.append(f"{'':18} match    {stage['match'] or '*'}{priority}")
            if stage["actions"]:
                out.append(f"{'':18} actions  {', '.join(stage['actions'])}")
        out.append(f"verdict: {self.verdict.text()}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"header": self.header, "stages": self.stages, "verdict": {
            "delivered": list(self.verdict.delivered), "dropped_in": self.verdict.dropped_in,
            "reason": self.verdict.reason, "via": self.verdict.via,
            "text": self.verdict.text()}}


def _stage_rows(trace: Trace, from_table: int = 0) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for index, one in enumerate(trace.passes):
        if index and one.ct_state:
            rows.append({"note": f"back from conntrack with ct_state={one.ct_state}"})
        for step in one.steps:
            if step.table < from_table:
                continue
            rows.append({
                "table": step.table, "stage": step.stage,
                "description": DESCRIPTIONS.get(step.stage, ""),
                "match": step.match or ("no flow matched" if step.priority is None else ""),
                "priority": step.priority, "cookie": f"{step.cookie:#x}",
                "actions": list(step.actions),
            })
    return rows


def explain(
    trace: Trace, header: str, names: dict[int, str], in_port: int,
    then: tuple[str, Trace] | None = None, to_gateway: bool = False,
) -> Report:
    """Stages and verdict of a trace; ``then`` continues it after a VIP's select group with
    the trace of the instance it followed (``"ip:port"``, trace). ``to_gateway``: the packet
    was sent to its gateway's MAC, so a drop at L2 output means no router leads there."""
    report = Report(header, _stage_rows(trace))
    final, via = trace, None
    if then is not None:
        via, final = then
        report.stages.append({"note": f"the select group picks one passing instance per new "
                                      f"connection; following {via} (NAT to it)"})
        report.stages += _stage_rows(final, from_table=TABLES["l3_router"])
    ports = [in_port if p == "in_port" else p for p in final.outputs]
    if ports:
        report.verdict = Verdict(tuple(names.get(int(p), f"port {p}") for p in ports), via=via)
    elif final.group is not None:
        report.verdict = Verdict(dropped_in="service_lb",
                                 reason=f"select group {final.group} has no instance to follow")
    else:
        step = final.dropped_at
        stage = step.stage if step else "classifier"
        reason = DROP_REASONS.get(stage, "dropped")
        if stage == "l2_forward" and step is not None and step.priority == GUARD_PRIORITY:
            reason = ("a host's own address takes only replies, DNS and what a `to: host` "
                      "policy allows")
        elif stage == "l2_forward" and to_gateway:
            reason = "sent to the gateway, but no router joins this network to the destination"
        report.verdict = Verdict(dropped_in=stage, reason=reason, via=via)
    return report


# --- talking to OVS -------------------------------------------------------------------------

def run_ovs(*args: str) -> str:
    """Output of an OVS command; TraceError with its message when it fails."""
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    except OSError as exc:
        raise TraceError(f"cannot run {args[0]}: {exc}") from exc
    if result.returncode != 0:
        raise TraceError(f"{' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


def run_trace(bridge: str, spec: str, recirculations: int = 4) -> Trace:
    """``ofproto/trace`` of a flow on a bridge; each conntrack pass continues as a new
    connection."""
    ct_next = [arg for _ in range(recirculations) for arg in ("--ct-next", CT_NEXT)]
    return parse_trace(run_ovs("ovs-appctl", "ofproto/trace", bridge, spec, *ct_next))
