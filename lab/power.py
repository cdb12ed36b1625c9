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


PART_GROUPS = {  # what `--only` names -> the processes it means
    "ovs": ("ovs-vswitchd", "ovsdb-server"),
    "consul": ("consul",),
    "controller": ("controller",),
}


def parts_of(only: str | None) -> tuple[str, ...]:
    """The processes ``--only`` names (all of the host's when None)."""
    if only is None:
        return procs.PARTS
    try:
        return PART_GROUPS[only]
    except KeyError:
        raise LabError(f"--only {only}: not a part of a host; the parts are "
                       f"{', '.join(PART_GROUPS)}") from None


def kill(name: str, host_name: str, say: Say, only: str | None = None) -> int:
    """SIGKILL every process of the host at once and unplug its links, as in a power cut.
    Its namespaces and directories stay. How many processes were killed. With ``only``,
    SIGKILL just that part's processes and leave the links plugged in (a crash)."""
    checks.require_root()
    lab = state.require(name)
    host = lab.host(host_name)
    if only is not None:
        pids = procs.part_pids(host)
        victims = [pid for part in parts_of(only) if (pid := pids[part])]
        if not victims:
            raise LabError(f"{host.name}'s {only} does not run; `switchboard lab start "
                           f"{host.name}` starts what is missing")
        procs.kill_all(victims)
        say(f"{host.name}: {only} killed ({len(victims)} processes)")
        return len(victims)
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
    if not host.killed and len(running_parts(host)) == len(procs.PARTS) and not host.unplugged:
        raise LabError(f"{host.name} is already running; `switchboard lab kill {host.name}` "
                       "stops it")
    if not underlay.netns_exists(host.netns):
        raise LabError(f"{host.name}'s namespace {host.netns} is gone; "
                       "`switchboard lab down` and `lab up` make the lab again")
    underlay.set_uplinks(lab, host, up=True)
    say(f"{host.name}: links plugged in, starting its software ...")
    readiness.wait_ready({host.name: (host, hosts.spawn(lab, host))}, say)
    host.killed = host.unplugged = False
    state.save(lab)


def restart(name: str, host_name: str, say: Say, only: str | None = None) -> None:
    """Stop the host's software (or one part of it) with SIGTERM, as an operator's restart
    does, then start it again with the same script and wait until the host is ready."""
    checks.require_root()
    lab = state.require(name)
    host = lab.host(host_name)
    if host.killed:
        raise LabError(f"{host.name} is killed; `switchboard lab start {host.name}` starts it")
    pids = procs.part_pids(host)
    stopped = [part for part in parts_of(only) if pids[part]]
    for part in stopped:  # in order: ovs-vswitchd before ovsdb-server
        procs.terminate(pids[part] or 0)
    say(f"{host.name}: stopped {', '.join(stopped) or 'nothing'}; starting again ...")
    readiness.wait_ready({host.name: (host, hosts.spawn(lab, host))}, say)
    state.save(lab)


def unplug(name: str, host_name: str, say: Say, plug: bool = False) -> None:
    """Unplug the host's links while its software keeps running (a network partition), or
    plug them back in."""
    checks.require_root()
    lab = state.require(name)
    host = lab.host(host_name)
    if host.killed:
        raise LabError(f"{host.name} is killed; `switchboard lab start {host.name}` starts it")
    underlay.set_uplinks(lab, host, up=plug)
    host.unplugged = not plug
    state.save(lab)
    say(f"{host.name}: links {'plugged in' if plug else 'unplugged (its software runs on)'}")
