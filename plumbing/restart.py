"""When a container's command runs again after it exits: restart policy and backoff. Pure.

- ``always`` (the default: what every command got before the key existed): after any exit;
- ``on-failure``: after an exit status other than 0 (a signal, or an unknown status, counts
  as a failure);
- ``never``: the daemon leaves it stopped (a changed command in ``up`` starts it again).

Backoff: a command that ran for at least :data:`QUICK` seconds starts again at once. One that
exits sooner waits 1 s, then 2 s, 4 s... up to :data:`MAX_DELAY`, doubling with each quick
exit in a row; a run that lasts :data:`QUICK` seconds resets the count. From
:data:`CRASH_LOOP` quick exits in a row, the container is ``crash-looping`` until a run lasts.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from datetime import UTC, datetime

QUICK = 10.0  # seconds: a run shorter than this is a quick exit
FIRST_DELAY = 1.0
MAX_DELAY = 60.0
CRASH_LOOP = 3  # quick exits in a row that make a crash loop

POLICIES = ("always", "on-failure", "never")


@dataclass(frozen=True)
class History:
    """What the daemon knows of a container's runs (kept in the state directory)."""

    restarts: int = 0  # times the daemon started the command again after it exited
    quick_exits: int = 0  # quick exits in a row
    started_at: float | None = None  # wall-clock start of the current (or last) run
    run: int | None = None  # PID of the run whose exit is recorded below
    status: int | None = None  # that run's exit status (None: unknown)
    exited_at: float | None = None  # when the daemon saw it exit

    def to_json(self) -> dict[str, object]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: object) -> History:
        """A history from its JSON form; an unreadable one is a fresh history."""
        if not isinstance(data, dict):
            return cls()
        try:
            return cls(**{k: data[k] for k in vars(cls()) if k in data})
        except TypeError:
            return cls()


@dataclass(frozen=True)
class Verdict:
    """A container's command as ``status`` shows it, and when it starts again."""

    state: str  # running, crash-looping, backoff, exited, failed
    start_at: float | None = None  # when the daemon starts it again (None: it does not)


def exited(history: History, pid: int, status: int | None, now: float) -> History:
    """The history once the run ``pid`` has exited with ``status`` (idempotent per run)."""
    if history.run == pid:
        return history
    ran = now - history.started_at if history.started_at is not None else QUICK
    quick = history.quick_exits + 1 if ran < QUICK else 0
    return replace(history, quick_exits=quick, run=pid, status=status, exited_at=now)


def started(history: History, now: float, *, restart: bool) -> History:
    """The history once the command was started: again after an exit (``restart``), or
    anew (a new container, a changed command: the count starts over)."""
    if not restart:
        return History(started_at=now)
    return replace(history, restarts=history.restarts + 1, started_at=now)


def delay(quick_exits: int) -> float:
    """Seconds to wait before starting a command after ``quick_exits`` quick exits in a row."""
    if quick_exits <= 0:
        return 0.0
    return min(MAX_DELAY, FIRST_DELAY * 2 ** (quick_exits - 1))


def restarts_after(policy: str, status: int | None) -> bool:
    """Whether ``policy`` starts a command again after it exited with ``status``."""
    if policy == "never":
        return False
    if policy == "on-failure":
        return status != 0
    return True


def verdict(policy: str, history: History, running: bool, now: float) -> Verdict:
    """The state of a command and when it starts again (``start_at`` <= now: at once)."""
    looping = history.quick_exits >= CRASH_LOOP
    if running:
        fresh = history.started_at is not None and now - history.started_at < QUICK
        return Verdict("crash-looping" if looping and fresh else "running")
    if not restarts_after(policy, history.status):
        return Verdict("exited" if history.status == 0 else "failed")
    start_at = (history.exited_at or now) + delay(history.quick_exits)
    return Verdict("crash-looping" if looping else "backoff", start_at)


def describe(history: History, verdict_: Verdict, now: float) -> str:
    """One sentence for ``status``: how the last run ended and what happens next."""
    if verdict_.state == "running":
        return ""
    parts = []
    if history.status is not None:
        parts.append(f"last exit {exit_text(history.status)}")
    elif history.run is not None:
        parts.append("exit status unknown")
    if verdict_.state == "crash-looping":
        parts.append(f"{history.quick_exits} quick exits in a row")
    if verdict_.start_at is not None and verdict_.start_at > now:
        at = datetime.fromtimestamp(verdict_.start_at, UTC).strftime("%H:%M:%S")
        wait = delay(history.quick_exits)
        parts.append(f"starts again at {at} UTC (backoff {wait:.0f} s)")
    elif verdict_.start_at is None and verdict_.state in ("exited", "failed"):
        parts.append("not restarted (restart policy)")
    return "; ".join(parts)


def exit_text(status: int) -> str:
    """``3``, or ``137 (SIGKILL)`` for the shell's 128 + signal number."""
    if status > 128:
        try:
            return f"{status} ({signal.Signals(status - 128).name})"
        except ValueError:
            pass
    return str(status)
