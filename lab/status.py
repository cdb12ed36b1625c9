"""What ``lab status`` shows: each host's addresses, whether it is plugged in, which of its
processes run, and the Consul leader it sees."""

from __future__ import annotations

from typing import Any

from lab import checks, hosts, procs, state, underlay
from lab.config import Host, Lab


def host_row(lab: Lab, host: Host) -> dict[str, Any]:
    pids = procs.part_pids(host)
    plugged = underlay.uplinks_up(lab, host)
    running = [p for p, pid in pids.items() if pid]
    if host.killed:
        condition = "killed"
    elif host.unplugged:
        condition = "unplugged"
    elif len(running) == len(pids) and plugged:
        condition = "running"
    else:
        condition = "degraded"
    leader = hosts.consul_leader(host) if pids.get("consul") else None
    return {
        "host": host.name, "state": condition, "role": "server" if host.server else "client",
        "netns": host.netns, "control_ip": host.control_ip, "tunnel_ip": host.tunnel_ip,
        "plugged_in": plugged, "processes": pids, "consul_leader": leader,
        "logs": host.log_dir,
    }


def lab_status(name: str) -> dict[str, Any]:
    checks.require_root()
    lab = state.require(name)
    return {"name": lab.name, "datapath": lab.datapath, "control_subnet": lab.control_subnet,
            "tunnel_subnet": lab.tunnel_subnet, "underlay_netns": lab.underlay_netns,
            "hosts": [host_row(lab, h) for h in lab.hosts]}
