"""Waiting for started hosts: start-host.sh finished, every part runs, the Consul agent knows
a leader and the controller beats. A failure names the host, the part and its log."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from lab import hosts, procs
from lab.config import Host, LabError

LEADER_TIMEOUT = 90.0


def _failed(host: Host, part: str, why: str) -> LabError:
    log = host.log("start-host" if part == "start-host.sh" else part)
    return LabError(f"{host.name}: {part} {why} (log {log})")


def wait_ready(started: dict[str, tuple[Host, subprocess.Popen[bytes]]],
               say: Callable[[str], None], timeout: float = LEADER_TIMEOUT) -> None:
    """Wait until every started host is ready; raise LabError for the first that fails."""
    t0 = time.monotonic()
    pending = dict(started)
    scripted: set[str] = set()
    told_waiting = False
    while pending:
        for name, (host, proc) in list(pending.items()):
            rc = proc.poll()
            if rc is None:
                continue
            if rc != 0:
                reason = hosts.last_error(host)
                raise _failed(host, "start-host.sh", f"failed: {reason}" if reason
                              else f"exited with status {rc}")
            pids = procs.part_pids(host)
            if name not in scripted:
                scripted.add(name)
                host.pids = {p: pid for p, pid in pids.items() if pid}
                say(f"{name}: ovsdb-server, ovs-vswitchd, consul and controller started "
                    f"({time.monotonic() - t0:.1f} s)")
            for part, pid in pids.items():
                if pid is None:
                    raise _failed(host, part, "is not running")
            leader = hosts.consul_leader(host)
            if leader and hosts.controller_connected(host):
                say(f"{name}: ready, Consul leader {leader.split(':')[0]} "
                    f"({time.monotonic() - t0:.1f} s)")
                del pending[name]
        if pending and len(scripted) == len(started) and not told_waiting:
            say("waiting for the Consul servers to elect a leader and the controllers "
                "to report ...")
            told_waiting = True
        if pending and time.monotonic() - t0 > timeout:
            host, proc = next(iter(pending.values()))
            if proc.poll() is None:
                raise _failed(host, "start-host.sh", f"has not finished in {timeout:.0f} s")
            if not hosts.consul_leader(host):
                raise _failed(host, "consul", f"has no leader after {timeout:.0f} s")
            raise _failed(host, "controller", f"has no OpenFlow connection after {timeout:.0f} s")
        time.sleep(0.3)
