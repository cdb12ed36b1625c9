"""A container's command: started inside its namespace, in its own session, tracked by pid file.

Commands start through ``ip netns exec``, which also gives them the namespace's files from
``/etc/netns/<name>/`` (the container's resolv.conf) in a mount namespace of their own.
The pid file holds the PID on its first line and, on the second, a JSON record (namespace,
process start time, command) so that a reused PID is never mistaken for ours.

Exit statuses. A command keeps running when the daemon stops, so the daemon cannot be the
one that waits for it. Each command therefore runs under a small ``sh`` wrapper
(:data:`WRAPPER`): the wrapper starts the command in a session of its own (the PID in the
pid file is the command's ``sh -c``, the leader of its process group, as before), tells the
daemon that PID, waits for it, and writes ``PID STATUS`` to ``<container>.exit`` beside the
pid file (atomically, by rename). ``STATUS`` is what ``wait`` gives: the exit code, or 128 +
the signal number for a command killed by a signal. The wrapper sits in another session,
so stopping the command's group leaves it to record that exit; killing the wrapper itself
leaves the command running (its exit status is then unknown).

An image container's command (plumbing.images) runs the runtime's client: it starts from
the host's namespaces instead (``runtime`` in its record), and counts as running while that
client runs.

A daemon killed after starting a command and before writing its pid file leaves it running
unnamed; the command carries its pid file's name in its environment, so the next start
adopts it instead of starting a second copy, and a stop ends it (:mod:`plumbing.orphans`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from plumbing import orphans
from plumbing.netns import netns_inode
from sbcore.state.private import open_private, private_dir, write_private
from sbcore.state.token import without_secrets

_wrappers: list[subprocess.Popen] = []  # wrappers this daemon started (reaped by reap())

# $1: the exit file, $2: the command, $3: the pid file (the command's mark, see
# plumbing.orphans). Its standard input is the pipe on which it sends the command's PID (then
# it lets go of it: the command's input is /dev/null, as before).
WRAPPER = r"""SWITCHBOARD_PID_FILE="$3" setsid sh -c "$2" </dev/null &
pid=$!
echo "$pid" >&0
exec </dev/null
wait "$pid"
status=$?
printf '%s %s\n' "$pid" "$status" > "$1.tmp" && mv -f "$1.tmp" "$1"
"""


class ProcessError(RuntimeError):
    """A command could not be started."""


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says about a started command."""

    pid: int
    starttime: int
    netns: str
    command: str
    runtime: str | None = None  # an image container's runtime (its client runs on the host)


def _starttime(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks, None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    if fields[0] in ("Z", "X"):
        reap()
        return None
    return int(fields[19])


def read(pid_path: Path) -> ProcessRecord | None:
    """The record in a pid file, None if there is none or it is unreadable."""
    try:
        pid_line, meta_line = Path(pid_path).read_text().splitlines()[:2]
        meta = json.loads(meta_line)
        return ProcessRecord(int(pid_line), int(meta["starttime"]), meta["netns"], meta["command"],
                             meta.get("runtime"))
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def _alive(rec: ProcessRecord) -> bool:
    return _starttime(rec.pid) == rec.starttime


def _in_netns(pid: int, netns: str, runtime: str | None = None) -> bool:
    """``pid`` is in ``netns`` (a runtime's client: in the host's namespace)."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == _place(netns, runtime)


def _place(netns: str, runtime: str | None) -> tuple[int, int] | None:
    """The namespace a command's processes run in: its container's, or for a runtime's
    client the host's (the daemon's own)."""
    if runtime is None:
        return netns_inode(netns)
    st = os.stat("/proc/self/ns/net")
    return st.st_dev, st.st_ino


def log_path(state_dir: Path, topology: str, container: str) -> Path:
    """Where a container's command output goes on the host that runs it (``switchboard
    logs`` reads it there)."""
    return Path(state_dir) / "logs" / topology / f"{container}.log"


def is_running(pid_path: Path) -> bool:
    """The recorded process is alive (same PID, same start) and in its namespace."""
    rec = read(pid_path)
    return rec is not None and _alive(rec) and _in_netns(rec.pid, rec.netns, rec.runtime)


def exit_path(pid_path: Path) -> Path:
    """Where the wrapper records the exit status of the command of ``pid_path``."""
    return Path(pid_path).with_suffix(".exit")


def cid_path(pid_path: Path) -> Path:
    """Where an image container's runtime writes its container's ID (plumbing.images)."""
    return Path(pid_path).with_suffix(".cid")


def read_exit(pid_path: Path, pid: int) -> int | None:
    """The exit status the wrapper recorded for the run with PID ``pid`` (None: none yet, or
    that run was started without a wrapper)."""
    try:
        found, status = exit_path(pid_path).read_text().split()[:2]
        return int(status) if int(found) == pid else None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Start:
    """A command to start in a namespace, with its log and pid file."""

    netns: str
    command: str
    log_path: Path
    pid_path: Path
    runtime: str | None = None  # an image container: ``command`` runs its runtime's client


def start(netns: str, command: str, log_path: Path, pid_path: Path) -> int:
    """Run ``sh -c command`` in ``netns`` (through ``ip netns exec``, under :data:`WRAPPER`)
    in a new session, output appended to ``log_path``; the command's PID. The log and the
    PID file (which holds the command) are root's only (sbcore.state.private): a command's
    output or arguments may hold secrets."""
    return start_all([Start(netns, command, Path(log_path), Path(pid_path))])[0]


def start_all(starts: Sequence[Start], batch: int = 16) -> list[int]:
    """Start several commands as :func:`start` does; their PIDs. ``batch`` wrappers at a time
    are launched before their PIDs are read, so that their start-ups overlap, and each pid
    file is written as soon as its PID is known (a daemon killed meanwhile leaves at most a
    batch of commands it has no pid file for, which the next start adopts). A command that
    cannot start raises ProcessError, once every other one has started and has its pid
    file."""
    reap()
    errors: list[ProcessError] = []
    adopted = _adopt(starts)
    pids = list(adopted.values())
    starts = [one for one in starts if one.pid_path not in adopted]
    # what earlier runs left behind, for all at once: one scan of /proc, not one per command
    end_leftovers(*[rec for one in starts if (rec := read(one.pid_path)) is not None])
    for first in range(0, len(starts), batch):
        launched = []
        for one in starts[first:first + batch]:
            try:
                launched.append((one, *_launch(one)))
            except ProcessError as err:
                errors.append(err)
        for one, proc, read_end in launched:
            try:
                pid = _read_pid(read_end, proc, one.netns)
            except ProcessError as err:
                errors.append(err)
                continue
            finally:
                os.close(read_end)
            _write_record(one, pid, _starttime(pid) or 0)
            pids.append(pid)
    for pid in pids:
        _settle(pid)
    if errors:
        raise errors[0]
    return pids


def _adopt(starts: Sequence[Start]) -> dict[Path, int]:
    """Give the commands about to start that already run without a pid file (a daemon
    killed before it wrote it) their pid file, and end their stray copies; pid file -> the
    adopted PID."""
    wanted = {one.pid_path: _place(one.netns, one.runtime) for one in starts
              if not is_running(one.pid_path)}
    adopted = orphans.sweep(wanted)
    for one in starts:
        if (found := adopted.get(one.pid_path)) is not None:
            _write_record(one, found.pid, found.starttime)
    return {path: found.pid for path, found in adopted.items()}


def _write_record(one: Start, pid: int, starttime: int) -> None:
    record = {"starttime": starttime, "netns": one.netns, "command": one.command}
    if one.runtime is not None:
        record["runtime"] = one.runtime
    write_private(one.pid_path, f"{pid}\n{json.dumps(record)}\n")


def _launch(one: Start) -> tuple[subprocess.Popen, int]:
    """Start the wrapper of one command; it and the pipe on which it sends the PID."""
    if one.runtime is None and netns_inode(one.netns) is None:
        raise ProcessError(f"cannot start command in {one.netns}: no such namespace")
    private_dir(one.pid_path.parent)
    exit_path(one.pid_path).unlink(missing_ok=True)
    if one.runtime is not None:  # the runtime refuses to write over an earlier --cidfile
        cid_path(one.pid_path).unlink(missing_ok=True)
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(open_private(one.log_path), "ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- {stamp} starting in {one.netns}: {one.command}\n".encode())
            log.flush()
            enter = ["ip", "netns", "exec", one.netns] if one.runtime is None else []
            proc = subprocess.Popen(
                [*enter, "sh", "-c", WRAPPER, "switchboard-run",
                 str(exit_path(one.pid_path)), one.command, str(one.pid_path)],
                stdin=write_end, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
                env=without_secrets(dict(os.environ)),  # not the daemon's Consul token
            )
    except OSError as err:
        os.close(read_end)
        raise ProcessError(f"cannot start command in {one.netns}: {err}") from err
    finally:
        os.close(write_end)
    _wrappers.append(proc)
    return proc, read_end


def _read_pid(fd: int, proc: subprocess.Popen, netns: str, timeout: float = 5.0) -> int:
    """The command's PID, as the wrapper sends it."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise ProcessError(f"cannot start command in {netns}: no answer in {timeout:.0f} s")
        chunk = os.read(fd, 64)
        if not chunk:
            status = proc.wait()
            raise ProcessError(f"cannot start command in {netns}: ip netns exec exited with "
                               f"status {status} (see the container's log)")
        data += chunk
    return int(data)


def _settle(pid: int, timeout: float = 2.0) -> None:
    """Wait until the command leads its own process group (``setsid`` ran) or has exited,
    so that :func:`stop` finds it a group to signal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pgid(pid) not in (pid, None):
        time.sleep(0.0005)


def reap() -> None:
    """Collect the wrappers that have exited (they are this daemon's children)."""
    _wrappers[:] = [proc for proc in _wrappers if proc.poll() is None]


def stop(pid_path: Path, timeout: float = 3.0) -> None:
    """SIGTERM the command's process group, SIGKILL it after ``timeout``; drop the pid file."""
    stop_all([pid_path], timeout)


def stop_all(pid_paths: Iterable[Path], timeout: float = 3.0) -> None:
    """Stop several commands at once: SIGTERM every process group first, then wait for them
    together, SIGKILL the groups still there after ``timeout``; drop the pid files."""
    paths = [Path(p) for p in pid_paths]
    groups, dead = [], []
    for path in paths:
        rec = read(path)
        if rec is not None and _alive(rec) and _pgid(rec.pid) == rec.pid:
            _signal_group(rec.pid, signal.SIGTERM)
            groups.append(rec.pid)
        elif rec is not None:
            dead.append(rec)
    end_leftovers(*dead)
    left = _wait_groups_gone(groups, timeout)
    for pgid in left:
        _signal_group(pgid, signal.SIGKILL)
    _wait_groups_gone(left, 1.0)
    orphans.end_marked(paths)  # what no pid file named, or left its group
    for path in paths:
        path.unlink(missing_ok=True)


def end_leftovers(*records: ProcessRecord) -> list[int]:
    """SIGKILL what dead commands left behind: the live members of the process group each
    led, in its namespace (a command's leader killed alone leaves its children running, out
    of reach of the pid file); their PIDs. Nothing for a leader that itself runs. One scan
    of /proc for all of them (``down`` of 100 dead commands scanned it 100 times)."""
    dead = {rec.pid: rec for rec in records if not _alive(rec)}
    if not dead:
        return []
    left = [pid for pid, pgrp in _live_processes()
            if pgrp in dead and _in_netns(pid, dead[pgrp].netns, dead[pgrp].runtime)]
    orphans.end(left)
    return left


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _live_processes() -> Iterator[tuple[int, int]]:
    """(PID, process group) of every process that is not a zombie."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:  # the command name may hold spaces and parentheses
            state, _ppid, pgrp = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            yield int(entry.name), int(pgrp)


def _live_groups() -> set[int]:
    """Process groups with a member that is not a zombie. A group whose members are all
    zombies is gone: its orphans wait for init to reap them, which may take a while."""
    return {pgrp for _pid, pgrp in _live_processes()}


def _wait_groups_gone(groups: list[int], timeout: float) -> list[int]:
    """Wait until every group is gone (our own child leaders get reaped on the way); the
    groups still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = list(groups)
    while left:
        reap()
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
