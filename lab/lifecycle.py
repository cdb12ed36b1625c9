"""Making and removing a whole lab: ``lab up`` and ``lab down``."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from lab import checks, hosts, procs, readiness, state, underlay
from lab.config import CONTROL_SUBNET, RUN_ROOT, STATE_ROOT, TUNNEL_SUBNET, Lab, LabError, plan_lab

Say = Callable[[str], None]
FAILED_LOGS = Path("/var/log/switchboard/lab-failed")  # logs of an `up` that failed


def up(name: str, count: int, say: Say, control_subnet: str = CONTROL_SUBNET,
       tunnel_subnet: str = TUNNEL_SUBNET, reschedule_after: float | None = None) -> Lab:
    """Make the lab and wait until it is ready; on any failure remove what was made."""
    checks.require_root()
    checks.require_programs()
    existing = state.load(name)
    if existing is not None or underlay.lab_namespaces(name):
        what = f"{len(existing.hosts)} hosts" if existing else "a half-made one"
        raise LabError(f"a lab {name} already exists ({what}); nothing was changed. "
                       "`switchboard lab status` shows it, `switchboard lab down` removes it")
    lab = plan_lab(name, count, control_subnet, tunnel_subnet, checks.kernel_datapath(),
                   reschedule_after)
    lab.created = time.time()
    state.save(lab)  # first, so that `lab down` finds everything even if this dies half-way
    try:
        say(f"creating lab {name}: {count} hosts, underlay {lab.control_subnet} (control) and "
            f"{lab.tunnel_subnet} (tunnel), datapath {lab.datapath}")
        underlay.create_underlay(lab)
        for host in lab.hosts:
            underlay.create_host(lab, host)
        say(f"namespaces {lab.underlay_netns}, "
            + ", ".join(h.netns for h in lab.hosts) + " and their veths are made")
        hosts.make_secrets(lab)
        started = {h.name: (h, hosts.spawn(lab, h)) for h in lab.hosts}
        readiness.wait_ready(started, say)
        state.save(lab)
    except BaseException as exc:
        if os.environ.get("SWITCHBOARD_LAB_KEEP") and isinstance(exc, LabError):
            raise LabError(f"{exc}; the lab was kept (SWITCHBOARD_LAB_KEEP)") from None
        kept = _keep_logs(lab)
        down(name, lambda _msg: None)
        if isinstance(exc, LabError):
            where = str(exc).replace(str(lab.state_dir), str(kept))
            raise LabError(f"{where}; the lab was removed (its logs are kept in {kept})") from None
        if isinstance(exc, KeyboardInterrupt):
            raise LabError("interrupted; the lab was removed") from None
        raise
    return lab


def _keep_logs(lab: Lab) -> Path:
    """Copy the hosts' logs out of the lab before a failed ``up`` removes it."""
    kept = FAILED_LOGS / lab.name
    shutil.rmtree(kept, ignore_errors=True)
    for host in lab.hosts:
        with contextlib.suppress(OSError):
            shutil.copytree(host.log_dir, kept / host.name / "log")
    return kept


def down(name: str, say: Say) -> bool:
    """Remove every namespace, process, directory and file of the lab; False if none was
    there. Works on a half-made or killed lab, and again after that."""
    checks.require_root()
    try:
        lab = state.load(name)
    except LabError:
        lab = None  # unreadable: namespaces and directories are still found by name
    namespaces = underlay.lab_namespaces(name)
    recorded = []
    for host in lab.hosts if lab else []:
        for part, pid in host.pids.items():
            if procs.alive(pid, procs.part_needle(part)):
                recorded.append(pid)
        recorded += [p for p in procs.part_pids(host).values() if p]
    dirs = [d for d in (STATE_ROOT / name, RUN_ROOT / name) if d.exists()]
    etc = sorted(Path("/etc/netns").glob(f"{name}-*"))
    if not (lab or namespaces or dirs or etc or recorded):
        return False
    killed = procs.kill_namespaces(namespaces, recorded)
    underlay.delete_namespaces(name)
    for d in dirs + etc:
        shutil.rmtree(d, ignore_errors=True)
    for root in (STATE_ROOT, RUN_ROOT):
        with contextlib.suppress(OSError):
            root.rmdir()  # only when no other lab uses it
    say(f"lab {name} removed: {killed} processes, {len(namespaces)} namespaces, "
        f"{len(dirs) + len(etc)} directories")
    return True
