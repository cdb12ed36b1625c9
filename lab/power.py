"""Unplugging a host and plugging it back in: ``lab kill H`` and ``lab start H``."""

from __future__ import annotations

from collections.abc import Callable

from lab import checks, hosts, procs, readiness, state, underlay
from lab.config import Host, Lab, LabError

Say = Callable[[str], None]


def host_namespaces(lab: Lab, host: Host) -> list[str]:
    """The host's namespace and its containers' (``<lab>-hK-*``)."""
    return [ns for ns in underlay.lab_namespaces(lab.name)
            if ns == host.netns or ns.startswith(host.container_prefix)]


def running_parts(host: Host) -> list[str]:
    return [part for part, pid in procs.part_pids(host).items() if pid]


def kill(name: str, host_name: str, say: Say) -> int:
    """SIGKILL every process of the host at once and unplug its links, as in a power cut.
    Its namespaces and directories stay. How many processes were killed."""
    checks.require_root()
    lab = state.require(name)
    host = lab.host(host_name)
    namespaces = host_namespaces(lab, host)
    if host.killed and not procs.pids_in_namespaces(namespaces) and not running_parts(host):
        raise LabError(f"{host.name} is already killed; `switchboard lab start {host.name}` "
                       "brings it back")
    recorded = [pid for part, pid in host.pids.items()
                if procs.alive(pid, procs.part_needle(part))]
    killed = procs.kill_namespaces(namespaces, recorded)
    underlay.set_uplinks(lab, host, up=False)
    host.killed = True
    host.pids = {}
    state.save(lab)
    say(f"{host.name} killed: {killed} processes, links unplugged "
        f"(namespaces kept: {', '.join(namespaces)})")
    return killed


def start(name: str, host_name: str, say: Say) -> None:
    """Bring a killed host back with the same script and directories, and wait for it."""
    checks.require_root()
    checks.require_programs()
    lab = state.require(name)
    host = lab.host(host_name)
    if not host.killed and running_parts(host):
        raise LabError(f"{host.name} is already running; `switchboard lab kill {host.name}` "
                       "stops it")
    if not underlay.netns_exists(host.netns):
        raise LabError(f"{host.name}'s namespace {host.netns} is gone; "
                       "`switchboard lab down` and `lab up` make the lab again")
    underlay.set_uplinks(lab, host, up=True)
    say(f"{host.name}: links plugged in, starting its software ...")
    readiness.wait_ready({host.name: (host, hosts.spawn(lab, host))}, say)
    host.killed = False
    state.save(lab)
