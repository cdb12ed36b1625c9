"""A container's command: started inside its namespace, in its own session, tracked by pid file.

Commands start through ``ip netns exec``, which also gives them the namespace's files from
``/etc/netns/<name>/`` (the container's resolv.conf) in a mount namespace of their own.
The pid file holds the PID on its first line and, on the second, a JSON record (namespace,
process start time, command) so that a reused PID is never mistaken for ours.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from plumbing.netns import netns_inode
from switchboard.private import open_private, private_dir, write_private

_children: dict[int, subprocess.Popen] = {}  # our own children, so they can be reaped


class ProcessError(RuntimeError):
    """A command could not be started."""


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says about a started command."""

    pid: int
    starttime: int
    netns: str
    command: str


def _starttime(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks, None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    if fields[0] in ("Z", "X"):
        _reap(pid)
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        del _children[pid]


def read(pid_path: Path) -> ProcessRecord | None:
    """The record in a pid file, None if there is none or it is unreadable."""
    try:
        pid_line, meta_line = Path(pid_path).read_text().splitlines()[:2]
        meta = json.loads(meta_line)
        return ProcessRecord(int(pid_line), int(meta["starttime"]), meta["netns"], meta["command"])
    except (OSError, ValueError, KeyError):
        return None


def _alive(rec: ProcessRecord) -> bool:
    return _starttime(rec.pid) == rec.starttime


def _in_netns(pid: int, netns: str) -> bool:
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == netns_inode(netns)


def log_path(state_dir: Path, topology: str, container: str) -> Path:
    """Where a container's command output goes on the host that runs it (``switchboard
    logs`` reads it there)."""
    return Path(state_dir) / "logs" / topology / f"{container}.log"


def is_running(pid_path: Path) -> bool:
    """The recorded process is alive (same PID, same start) and in its namespace."""
    rec = read(pid_path)
    return rec is not None and _alive(rec) and _in_netns(rec.pid, rec.netns)


def start(netns: str, command: str, log_path: Path, pid_path: Path) -> int:
    """Run ``sh -c command`` in ``netns`` (through ``ip netns exec``) in a new session,
    output appended to ``log_path``. The log and the PID file (which holds the command) are
    root's only (switchboard.private): a command's output or arguments may hold secrets."""
    if netns_inode(netns) is None:
        raise ProcessError(f"cannot start command in {netns}: no such namespace")
    log_path, pid_path = Path(log_path), Path(pid_path)
    private_dir(pid_path.parent)
    with os.fdopen(open_private(log_path), "ab") as log:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"--- {stamp} starting in {netns}: {command}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, "sh", "-c", command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as err:
            raise ProcessError(f"cannot start command in {netns}: {err}") from err
    _children[proc.pid] = proc
    starttime = _starttime(proc.pid)
    record = {"starttime": starttime or 0, "netns": netns, "command": command}
    write_private(pid_path, f"{proc.pid}\n{json.dumps(record)}\n")
    _settle(proc, netns)
    return proc.pid


def _settle(proc: subprocess.Popen, netns: str, timeout: float = 2.0) -> None:
    """Wait until ``ip`` has moved the process into the namespace (or it has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None or _in_netns(proc.pid, netns):
            return
        time.sleep(0.001)


def stop(pid_path: Path, timeout: float = 3.0) -> None:
    """SIGTERM the command's process group, SIGKILL it after ``timeout``; drop the pid file."""
    stop_all([pid_path], timeout)


def stop_all(pid_paths: Iterable[Path], timeout: float = 3.0) -> None:
    """Stop several commands at once: SIGTERM every process group first, then wait for them
    together, SIGKILL the groups still there after ``timeout``; drop the pid files."""
    paths = [Path(p) for p in pid_paths]
    groups = []
    for path in paths:
        rec = read(path)
        if rec is not None and _alive(rec) and _pgid(rec.pid) == rec.pid:
            _signal_group(rec.pid, signal.SIGTERM)
            groups.append(rec.pid)
    left = _wait_groups_gone(groups, timeout)
    for pgid in left:
        _signal_group(pgid, signal.SIGKILL)
    _wait_groups_gone(left, 1.0)
    for path in paths:
        path.unlink(missing_ok=True)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _live_groups() -> set[int]:
    """Process groups with a member that is not a zombie. A group whose members are all
    zombies is gone: its orphans wait for init to reap them, which may take a while."""
    groups = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if state not in ("Z", "X"):
            groups.add(int(pgrp))
    return groups


def _wait_groups_gone(groups: list[int], timeout: float) -> list[int]:
    """Wait until every group is gone (our own child leaders get reaped on the way); the
    groups still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = list(groups)
    while left:
        for pgid in left:
            _reap(pgid)
        existing = []
        for pgid in left:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, 0)
                existing.append(pgid)
        live = _live_groups() if existing else set()
        left = [pgid for pgid in existing if pgid in live]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return left
