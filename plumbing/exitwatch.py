"""Notice at once when a container's command exits: one pidfd per command, one thread.

A pidfd (Linux 5.3+) becomes readable when its process exits, whoever its parent is, so
this works as well for commands an earlier daemon started.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections.abc import Callable, Mapping

from plumbing import processes

LOG = logging.getLogger(__name__)


class ExitWatch:
    """Calls ``on_exit(key, pid)`` from its own thread when a tracked process exits."""

    def __init__(self, on_exit: Callable[[str, int], None]) -> None:
        self.on_exit = on_exit
        self._tracked: dict[str, tuple[int, int]] = {}  # key -> (pid, pidfd)
        self._lock = threading.Lock()
        self._poke_r, self._poke_w = os.pipe()
        self._thread: threading.Thread | None = None

    def track(self, pids: Mapping[str, int]) -> None:
        """Watch exactly these processes (key -> PID); one already gone is reported now."""
        gone = []
        with self._lock:
            for key, (pid, fd) in list(self._tracked.items()):
                if pids.get(key) != pid:
                    os.close(fd)
                    del self._tracked[key]
            for key, pid in pids.items():
                if key in self._tracked:
                    continue
                try:
                    self._tracked[key] = (pid, os.pidfd_open(pid))
                except ProcessLookupError:
                    gone.append((key, pid))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="exit-watch",
                                                daemon=True)
                self._thread.start()
        os.write(self._poke_w, b"x")
        for key, pid in gone:
            self.on_exit(key, pid)

    def _run(self) -> None:
        while True:
            with self._lock:
                by_fd = {fd: (key, pid) for key, (pid, fd) in self._tracked.items()}
            poller = select.poll()
            poller.register(self._poke_r, select.POLLIN)
            for fd in by_fd:
                poller.register(fd, select.POLLIN)
            exited = []
            for fd, _ in poller.poll(5000):
                if fd == self._poke_r:
                    os.read(self._poke_r, 4096)
                    continue
                key, pid = by_fd[fd]
                with self._lock:
                    if self._tracked.get(key) == (pid, fd):
                        del self._tracked[key]
                        os.close(fd)
                        exited.append((key, pid))
            processes.reap()
            for key, pid in exited:
                LOG.info("the command of %s (pid %d) exited", key, pid)
                try:
                    self.on_exit(key, pid)
                except Exception:  # noqa: BLE001 - a bug in a handler must not stop the watch
                    LOG.exception("handling the exit of %s failed", key)
