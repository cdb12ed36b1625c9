"""A container's command output: which topology and host it belongs to, its last lines, and
following it as it grows (``switchboard logs``).

The output is appended to ``<state dir>/logs/<topology>/<container>.log`` on the host that
runs the container (plumbing.processes.log_path); each start of the command adds a line
``--- <time> starting in <namespace>: <command>``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from sbcore.model.desired import StoredTopology

CHUNK = 65536


class LogsError(RuntimeError):
    """The log cannot be shown here (the message says why and where to look instead)."""


def find(applied: Mapping[str, StoredTopology], container: str,
         topology: str | None = None) -> StoredTopology:
    """The applied topology that has ``container`` (only ``topology`` when given). Pure."""
    if topology is not None:
        stored = applied.get(topology)
        if stored is None:
            known = ", ".join(sorted(applied)) or "none"
            raise LogsError(f"no topology named {topology!r} is applied (applied: {known})")
        if container not in stored.topology.containers:
            known = ", ".join(stored.topology.containers) or "none"
            raise LogsError(f"topology {topology!r} has no container {container!r} "
                            f"(its containers: {known})")
        return stored
    found = [s for s in applied.values() if container in s.topology.containers]
    if not found:
        raise LogsError(f"no applied topology has a container named {container!r} "
                        "(see `switchboard status`)")
    if len(found) > 1:
        names = ", ".join(s.topology.name for s in found)
        raise LogsError(f"container {container!r} is in several topologies ({names}); "
                        "choose one with --topology")
    return found[0]


def check_here(stored: StoredTopology, container: str, this_host: str) -> None:
    """Raise LogsError when the placement puts ``container`` on another host (its output
    is on that host). An unplaced container runs on the host that runs unplaced ones. Pure."""
    host = stored.placement.get(container)
    if host and host != this_host:
        raise LogsError(
            f"container {container!r} of topology {stored.topology.name!r} runs on host "
            f"{host}, and its output is there; run `switchboard logs {container}` on {host} "
            f"(this host is {this_host})")
    spec = stored.topology.containers[container]
    if spec.command is None and spec.image is None:
        raise LogsError(f"container {container!r} of topology {stored.topology.name!r} has no "
                        "command, so it has no output")


def last_lines(path: Path, count: int) -> tuple[bytes, int]:
    """The last ``count`` lines of a file (all of it when ``count`` < 0), read from the
    end, and the offset they end at (where following it goes on)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if count < 0:
            f.seek(0)
            return f.read(end), end
        data, pos = b"", end
        while pos > 0 and data.count(b"\n") <= count:
            step = min(CHUNK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.splitlines(keepends=True)
    return b"".join(lines[len(lines) - count:]) if count else b"", end


def follow(path: Path, write: Callable[[bytes], None], start: int,
           interval: float = 0.2, stop: Callable[[], bool] = lambda: False) -> None:
    """Write what is appended to ``path`` after offset ``start`` as it comes, like
    ``tail -f``, until ``stop()`` (or Ctrl-C). A file that is truncated or replaced is read
    again from its start; one that does not exist yet is waited for."""
    pos, inode = start, _inode(path)
    while not stop():
        now = _inode(path)
        if now != inode:  # replaced or removed: start over on the new file
            pos, inode = 0, now
        if now is not None:
            try:
                with open(path, "rb") as f:
                    size = f.seek(0, os.SEEK_END)
                    if size < pos:  # truncated
                        pos = 0
                    if size > pos:
                        f.seek(pos)
                        data = f.read(size - pos)
                        pos += len(data)
                        write(data)
            except FileNotFoundError:
                pass
        time.sleep(interval)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None
