"""The DNS listener's CPU priority: real-time while it keeps up, normal during a flood.

When many containers start at once, their first questions arrive while Consul takes their
registrations, the switch forwards Consul's first checks and the containers start, all on
the same CPUs: measured with 100 at once on 2 cores, the listener thread waited 22-92 ms in
the run queue to answer 100 questions that took it 33-40 ms of CPU. A thread with a
real-time policy (``SCHED_RR``, the lowest real-time priority) runs as soon as a question
wakes it, ahead of every normal process.

A flood of questions must not buy that priority: the listener reads up to a batch of
datagrams per wake-up, and a full batch means more were waiting. After ``flood_batches``
full batches in a row it goes back to the normal policy, and stays there until
``cool_down`` seconds have passed and a wake-up found fewer than a full batch. Where the
policy cannot be set (no CAP_SYS_NICE), the listener keeps the normal one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

LOG = logging.getLogger("switchboard.dnsproxy")

__all__ = ["ListenerPriority", "set_realtime"]

FLOOD_BATCHES = 16  # full batches in a row (of 64 datagrams: 1024 waiting) that mean a flood
COOL_DOWN = 1.0  # seconds at the normal policy after a flood, at least


def set_realtime(realtime: bool) -> None:
    """Give the calling thread the lowest real-time policy, or the normal one back; OSError
    when it may not. Threads and processes it starts get the normal policy (the workers
    that read Consul and forward, the TCP connections' threads)."""
    if realtime:
        os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(1))
    else:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


class ListenerPriority:
    """Decides the listener thread's policy from its wake-ups; call from that thread."""

    def __init__(
        self,
        flood_batches: int = FLOOD_BATCHES,
        cool_down: float = COOL_DOWN,
        apply: Callable[[bool], None] = set_realtime,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flood_batches = flood_batches
        self.cool_down = cool_down
        self.apply = apply
        self.clock = clock
        self.realtime = False
        self.usable = True  # False once the policy could not be set
        self._full_in_a_row = 0
        self._normal_since = 0.0

    def start(self) -> None:
        """At the listener's start: real-time."""
        self._set(True)

    def woke(self, full: bool) -> None:
        """One wake-up's batch was read; ``full``: it took a whole batch (more may wait)."""
        self._full_in_a_row = self._full_in_a_row + 1 if full else 0
        if self.realtime and self._full_in_a_row >= self.flood_batches:
            LOG.warning("DNS: a flood of questions; the listener runs at normal priority "
                        "for at least %.0f s", self.cool_down)
            self._set(False)
            self._normal_since = self.clock()
        elif (not self.realtime and not full
              and self.clock() - self._normal_since >= self.cool_down):
            self._set(True)

    def _set(self, realtime: bool) -> None:
        if not self.usable or realtime == self.realtime:
            return
        try:
            self.apply(realtime)
        except OSError as exc:
            LOG.info("DNS: the listener keeps the normal CPU priority: %s", exc.strerror)
            self.usable = False
            return
        self.realtime = realtime
