"""The lab's processes: found by PID file and by network namespace (``/proc/*/ns/net``), and
killed with SIGKILL. Only processes inside the lab's namespaces or named by its PID files are
ever signalled."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from pathlib import Path

from lab.config import NETNS_DIR, Host


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def pids_in_namespaces(names: list[str]) -> list[int]:
    """Every live process whose network namespace is one of ``names``."""
    inodes = {i for i in map(_netns_inode, names) if i is not None}
    if not inodes:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if os.stat(entry / "ns" / "net").st_ino in inodes:
                pids.append(int(entry.name))
        except OSError:
            continue
    return sorted(pids)


def alive(pid: int, needle: str = "") -> bool:
    """True when ``pid`` runs (not a zombie) and its command line holds ``needle``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, IndexError):
        return False
    return needle in cmdline


def read_pidfile(path: str | Path) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# The host's parts, the PID file that names each, and what its command line holds.
PARTS = ("ovsdb-server", "ovs-vswitchd", "consul", "controller")


def part_pidfile(host: Host, part: str) -> str:
    return {
        "ovsdb-server": f"{host.ovs_run}/ovsdb-server.pid",
        "ovs-vswitchd": f"{host.ovs_run}/ovs-vswitchd.pid",
        "consul": f"{host.state_dir}/consul.pid",
        "controller": f"{host.state_dir}/controller.pid",
    }[part]


def part_needle(part: str) -> str:
    return {"consul": "consul agent", "controller": "controller"}.get(part, part)


def part_pids(host: Host) -> dict[str, int | None]:
    """Each part's PID from its PID file, None when it does not run."""
    found: dict[str, int | None] = {}
    for part in PARTS:
        pid = read_pidfile(part_pidfile(host, part))
        found[part] = pid if pid and alive(pid, part_needle(part)) else None
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def terminate(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM ``pid`` and wait until it is gone (SIGKILL after ``timeout`` seconds). The
    wait is on a pidfd, which wakes the moment the process exits: a restarted part starts
    again at once (each moment OVS is down, the host forwards nothing)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not select.select([pidfd], [], [], timeout)[0]:
            kill_all([pid])
            select.select([pidfd], [], [], 5.0)
    finally:
        os.close(pidfd)


def kill_namespaces(names: list[str], extra: list[int] = (), timeout: float = 5.0) -> int:
    """SIGKILL every process in the namespaces ``names`` and the PIDs ``extra`` (all at once),
    again until none is left; how many were signalled."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    first = True
    while True:
        pids = pids_in_namespaces(names) + ([p for p in extra if alive(p)] if first else [])
        pids = [p for p in pids if alive(p)]
        first = False
        if not pids or time.monotonic() > deadline:
            return len(killed)
        kill_all(pids)
        killed.update(pids)
        time.sleep(0.05)
