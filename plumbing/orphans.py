"""A command's processes found by the mark they carry, pid file or not.

Every command runs with ``SWITCHBOARD_PID_FILE=<its pid file>`` in its environment (set by
the wrapper, so its children inherit it; the wrapper itself does not carry it). A daemon
killed between starting a command and writing its pid file leaves a command that no pid
file names; the next daemon finds it by that mark. Pure decisions take the processes as
data (:class:`Marked`); reading ``/proc`` and signalling happen in the functions below them.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

MARK = "SWITCHBOARD_PID_FILE"


@dataclass(frozen=True)
class Marked:
    """A live process carrying the mark of one command."""

    pid: int
    pgrp: int
    starttime: int
    netns: tuple[int, int] | None  # (device, inode) of its network namespace


def choose(found: Iterable[Marked], netns: tuple[int, int] | None
           ) -> tuple[Marked | None, list[int]]:
    """What to do with a command's marked processes when it is to be started: the one to
    adopt (the newest group leader in the command's namespace: it runs as started, only
    its pid file is missing), and the PIDs to end (everything else: copies in a namespace
    that was made again, children whose leader is gone)."""
    found = list(found)
    leaders = [m for m in found if m.pid == m.pgrp and netns is not None and m.netns == netns]
    keep = max(leaders, key=lambda m: m.starttime, default=None)
    end = [m.pid for m in found if keep is None or m.pgrp != keep.pid]
    return keep, end


def marked(pid_paths: Iterable[Path]) -> dict[Path, list[Marked]]:
    """pid file -> the live processes carrying its mark (one scan of /proc)."""
    wanted = {str(p).encode(): Path(p) for p in pid_paths}
    if not wanted:
        return {}
    prefix = MARK.encode() + b"="
    found: dict[Path, list[Marked]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:  # zombies and kernel threads have an empty environment
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        value = next((v[len(prefix):] for v in environ.split(b"\0") if v.startswith(prefix)),
                     None)
        if value not in wanted:
            continue
        process = _describe(int(entry.name))
        if process is not None:
            found.setdefault(wanted[value], []).append(process)
    return found


def end(pids: Iterable[int]) -> None:
    """SIGKILL these processes (gone meanwhile: nothing to do)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def end_marked(pid_paths: Iterable[Path]) -> list[int]:
    """SIGKILL every live process carrying the mark of these pid files; their PIDs."""
    pids = [m.pid for found in marked(pid_paths).values() for m in found]
    end(pids)
    return pids


def sweep(starts: Mapping[Path, tuple[int, int] | None]) -> dict[Path, Marked]:
    """For commands about to start (pid file -> their namespace's identity): end what
    :func:`choose` says to end; the processes to adopt, per pid file."""
    adopted = {}
    for pid_path, found in marked(starts).items():
        keep, doomed = choose(found, starts[pid_path])
        end(doomed)
        if keep is not None:
            adopted[pid_path] = keep
    return adopted


def _describe(pid: int) -> Marked | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        st = os.stat(f"/proc/{pid}/ns/net")
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return Marked(pid, int(fields[2]), int(fields[19]), (st.st_dev, st.st_ino))
