"""Follow a container runtime's events, so that a container attached by name (``attach:
{podman: NAME}``) is plugged again as soon as it starts, restarts or goes: one ``podman
events --format json`` process per daemon, read by one thread, which wakes the daemon when
an event names a watched container. The process dies with the daemon (PR_SET_PDEATHSIG)
and is started again when it exits."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from plumbing.images import event_name

LOG = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def events_argv(runtime: str) -> list[str]:
    if runtime == "docker":
        return ["docker", "events", "--format", "{{json .}}", "--filter", "type=container"]
    return [runtime, "events", "--format", "json", "--filter", "type=container"]


class RuntimeEvents:
    """Calls ``wake()`` when an event names one of ``watched()``'s containers."""

    def __init__(self, runtime: str, watched: Callable[[], set[str]],
                 wake: Callable[[], None]) -> None:
        self.runtime = runtime
        self.watched = watched
        self.wake = wake
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stopping = threading.Event()

    def ensure_started(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"{self.runtime}-events",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._follow()
            except OSError as err:
                LOG.warning("cannot follow %s's events: %s", self.runtime, err)
            if not self._stopping.is_set():  # exited: start again, at most once a second
                self.wake()  # what changed meanwhile is looked at again
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))

    def _follow(self) -> None:
        self._proc = subprocess.Popen(
            events_argv(self.runtime), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, text=True, preexec_fn=_die_with_parent)  # noqa: PLW1509
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            name = event_name(line)
            if name is not None and name in self.watched():
                LOG.info("%s container %s changed: plugging it again", self.runtime, name)
                self.wake()
        self._proc.wait()
