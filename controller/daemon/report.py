"""The per-container and per-service rows of the daemon's status report. Pure."""

from __future__ import annotations

import os
from typing import Any

from discovery.health import ServiceKey
from plumbing.plan import Problems
from sbcore.plan.hostplan import TopologyPlan


def service_rows(
    plan: TopologyPlan, passing: dict[ServiceKey, frozenset[str]]
) -> list[dict[str, Any]]:
    """One status row per VIP service: its VIP and port, the host port that reaches it on
    every host (``published``, None: not published), and the instances the switch sends new
    connections to. Pure."""
    published = {v.service: f"{v.host_port}/{v.proto}" for v in plan.published_vips}
    return [
        {
            "name": svc.name, "vip": str(svc.vip), "port": svc.port,
            "published": published.get(svc.name),
            "backends": [
                {"container": b.container, "ip": str(b.ip), "port": b.port}
                for b in svc.active_backends(passing)
            ],
        }
        for svc in plan.services
    ]


def network_rows(plan: TopologyPlan) -> list[dict[str, Any]]:
    """One status row per network of a topology on this host. Pure."""
    return [{"name": n.name, "subnet": str(n.subnet), "gateway": str(n.gateway),
             "host_ip": str(n.host_leg.ip), "mtu": n.mtu} for n in plan.networks]


def container_rows(
    plan: TopologyPlan, ports: dict[str, int], observed: dict[str, Any],
    problems: Problems | None = None,
) -> list[dict[str, Any]]:
    """One status row per container interface. ``problem`` says what keeps it from working as
    planned (what the plumbing found, or no OpenFlow port, hence no flows); such a row's state
    is ``broken``. Pure."""
    problems = problems or Problems()
    rows = []
    for container in plan.containers:
        for ep in container.endpoints:
            seen = observed.get(ep.port, {})
            running = seen.get("running")
            pending = problems.pending.get((plan.name, container.name))
            if container.attached:
                state = "attached" if seen.get("netns_exists") else "missing"
            elif container.command is None and container.image is None:
                state = "up" if seen.get("netns_exists") else "missing"
            else:
                state = "running" if running else "stopped"
            command = seen.get("command") or {}  # the restart policy's view (see supervisor)
            runs = container.command is not None or container.image is not None
            if command and runs and seen.get("netns_exists"):
                state = str(command["state"])
            problem = (problems.containers.get((plan.name, container.name))
                       or problems.ports.get(ep.port) or "")
            if not problem and not ports.get(ep.port) and not pending:
                problem = f"port {ep.port} has no OpenFlow port number (no flows)"
            if problem:
                state = "broken"
            elif pending:
                state, command = "pending", {"note": pending}
            rows.append({
                "container": container.name, "network": ep.network, "netns": ep.netns,
                "interface": ep.ifname, "ip": str(ep.ip), "mac": ep.mac, "port": ep.port,
                "ofport": ports.get(ep.port), "state": state, "problem": problem,
                "published": [str(p.publish) for p in plan.published
                              if p.container == container.name and p.network == ep.network],
                **_command_fields(command), **_image_fields(container.image, seen),
            })
    return rows


def _image_fields(image: Any, seen: dict[str, Any]) -> dict[str, Any]:
    """An image container's image and the runtime's ID of its container (None: none runs)."""
    if image is None:
        return {}
    return {"image": image.image, "runtime_id": seen.get("runtime_id")}


def _command_fields(command: dict[str, Any]) -> dict[str, Any]:
    """A command's restart policy, restarts, last exit status and, when it is not running,
    a sentence on what happened and its log (so a crash loop is visible)."""
    if not command:
        return {}
    note = command.get("note") or ""
    if note and command.get("log"):
        note += f"; log {command['log']}"
    return {"restart": command.get("restart"), "restarts": command.get("restarts", 0),
            "exit_status": command.get("exit_status"), "note": note}


def data_path_problem(plan: TopologyPlan, rows: list[dict[str, Any]], problems: Problems) -> str:
    """One sentence on what keeps a topology's data path short of the plan ("" if nothing):
    its broken containers (the first few named) and host legs. Pure."""
    broken = sorted({r["container"] for r in rows if r["problem"]})
    parts = []
    if broken:
        first = next(r for r in rows if r["problem"])
        others = [c for c in broken if c != first["container"]]
        also = f"; also {', '.join(others[:3])}{' …' if len(others) > 3 else ''}" if others else ""
        parts.append(f"{len(broken)} of {len(plan.containers)} containers not ready "
                     f"({first['container']}: {first['problem']}{also})")
    legs = [f"host address on {net}: {why}"
            for (topo, net), why in sorted(problems.host_legs.items()) if topo == plan.name]
    parts += legs
    return "; ".join(parts) + ("; see `switchboard status`" if parts else "")


def refused(digest: str, why: str, bridge: str) -> dict[str, Any]:
    """The report of a desired topology this host does not realise: ``error``, with why."""
    return {"digest": digest, "state": "error", "error": why, "daemon_pid": os.getpid(),
            "bridge": bridge, "containers": [], "networks": [], "services": []}
