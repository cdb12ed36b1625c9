"""The rescheduler's clock: which hosts have been down for the whole grace period."""

from __future__ import annotations

from controller.daemon.failover import DownClock
from sbcore.model.inventory import HostRecord, Hosts


def hosts(**states: str) -> Hosts:
    return Hosts(HostRecord(name, i, state=state)  # type: ignore[arg-type]
                 for i, (name, state) in enumerate(sorted(states.items())))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_host_is_gone_only_after_staying_down_for_the_grace_period():
    clock = Clock()
    down = DownClock(30, clock)
    assert down.observe(hosts(h1="ready", h2="down")) == set()
    clock.now += 29.9
    assert down.observe(hosts(h1="ready", h2="down")) == set()
    clock.now += 0.1
    assert down.observe(hosts(h1="ready", h2="down")) == {"h2"}


def test_coming_back_restarts_the_count():
    clock = Clock()
    down = DownClock(10, clock)
    down.observe(hosts(h2="down"))
    clock.now += 8
    down.observe(hosts(h2="ready"))
    clock.now += 1
    down.observe(hosts(h2="down"))
    clock.now += 9
    assert down.observe(hosts(h2="down")) == set()
    clock.now += 1
    assert down.observe(hosts(h2="down")) == {"h2"}


def test_a_new_decider_counts_from_when_it_took_over():
    clock = Clock()
    down = DownClock(5, clock)
    down.observe(hosts(h2="down"))
    clock.now += 10
    down.reset()  # the lock was lost and taken again
    assert down.observe(hosts(h2="down")) == set()
