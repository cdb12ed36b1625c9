"""The restart policy at work: records each exit of a container's command, says which exited
commands must wait (backoff, or a policy that does not restart them), and what ``status``
shows of each. The history of each command is ``pids/<topology>/<container>.restarts``
(JSON, see :class:`plumbing.restart.History`), beside its pid file and exit file, so a
restarted daemon keeps counting."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from plumbing import processes, restart
from plumbing.plan import process_key
from plumbing.restart import History
from sbcore.state.private import write_private

if TYPE_CHECKING:
    from sbcore.plan.hostplan import TopologyPlan

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wanted:
    """A container command the plans want, with its pid file and restart policy."""

    key: str
    pid_path: Path
    command: str
    policy: str


def wanted_commands(plans: Iterable[TopologyPlan],
                    pid_path: Callable[[str, str], Path]) -> dict[str, Wanted]:
    """Every command the plans want, by process key."""
    found = {}
    for topo in plans:
        for c in topo.containers:
            if c.command is not None:
                key = process_key(topo.name, c.name)
                found[key] = Wanted(key, pid_path(topo.name, c.name), c.command, c.restart)
    return found


def running_commands(wanted: Iterable[Wanted], started: Set[str] = frozenset()
                     ) -> tuple[dict[str, bool], dict[str, int]]:
    """Key -> whether its command runs, and key -> PID of each to watch: those that run and
    those just ``started`` (one that already exited again must be noticed too)."""
    running, pids = {}, {}
    for want in wanted:
        rec = processes.read(want.pid_path)
        running[want.key] = processes.is_running(want.pid_path)
        if rec is not None and (running[want.key] or want.key in started):
            pids[want.key] = rec.pid
    return running, pids


@dataclass
class Review:
    """What one look at the exited commands found."""

    hold: set[str]  # keys not to start now
    exited: set[str]  # keys whose command exited (and is the same command): a start restarts
    due: float | None  # earliest wall-clock time a held command is due (None: none)


class Supervisor:
    """Histories of a Plumber's commands; ``clock``: wall-clock seconds."""

    def __init__(self, clock: Callable[[], float] = time.time,
                 exit_wait: float = 0.1) -> None:
        self.clock = clock
        self.exit_wait = exit_wait  # how long to give the wrapper to write the exit status

    @staticmethod
    def history_path(pid_path: Path) -> Path:
        return Path(pid_path).with_suffix(".restarts")

    def load(self, pid_path: Path) -> History:
        try:
            return History.from_json(json.loads(self.history_path(pid_path).read_text()))
        except (OSError, ValueError):
            return History()

    def _save(self, pid_path: Path, history: History) -> None:
        write_private(self.history_path(pid_path), json.dumps(history.to_json()) + "\n")

    def review(self, wanted: Iterable[Wanted], running: Mapping[str, bool],
               commands: Mapping[str, str]) -> Review:
        """Record the exits of wanted commands that stopped running (``running``: key ->
        alive, for every pid file; ``commands``: key -> the command its pid file names)."""
        found = Review(set(), set(), None)
        now = self.clock()
        for want in wanted:
            if running.get(want.key) is not False or commands.get(want.key) != want.command:
                continue  # running, never started, or a changed command (which starts anew)
            rec = processes.read(want.pid_path)
            if rec is None:
                continue
            before = self.load(want.pid_path)
            history = before
            if before.run != rec.pid:
                history = restart.exited(before, rec.pid, self._status(want.pid_path, rec.pid),
                                         now)
                self._save(want.pid_path, history)
                LOG.info("the command of %s exited (%s)", want.key,
                         restart.exit_text(history.status)
                         if history.status is not None else "status unknown")
            found.exited.add(want.key)
            verdict = restart.verdict(want.policy, history, False, now)
            if verdict.start_at is None or verdict.start_at > now:
                found.hold.add(want.key)
                if verdict.start_at is not None:
                    found.due = min(found.due or verdict.start_at, verdict.start_at)
        return found

    def _status(self, pid_path: Path, pid: int) -> int | None:
        deadline = time.monotonic() + self.exit_wait
        while (status := processes.read_exit(pid_path, pid)) is None:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)
        return status

    def started(self, pid_path: Path, *, restart_: bool) -> None:
        """Record a start: again after an exit (``restart_``), or anew."""
        self._save(pid_path, restart.started(self.load(pid_path), self.clock(),
                                             restart=restart_))

    def forget(self, pid_path: Path) -> None:
        """The container or its command is gone: drop its history, exit status and
        runtime container ID file."""
        self.history_path(pid_path).unlink(missing_ok=True)
        processes.cid_path(pid_path).unlink(missing_ok=True)
        processes.exit_path(pid_path).unlink(missing_ok=True)

    def status(self, pid_path: Path, policy: str, running: bool) -> dict[str, object]:
        """What ``status`` shows: state, restarts, last exit status, what happens next."""
        history, now = self.load(pid_path), self.clock()
        verdict = restart.verdict(policy, history, running, now)
        pid_path = Path(pid_path)
        log = processes.log_path(pid_path.parents[2], pid_path.parent.name, pid_path.stem)
        return {"state": verdict.state, "restarts": history.restarts,
                "exit_status": history.status, "restart": policy,
                "note": restart.describe(history, verdict, now), "log": str(log)}
