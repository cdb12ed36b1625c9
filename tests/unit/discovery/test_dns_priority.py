"""The DNS listener runs at real-time priority while it keeps up, at normal priority during a
flood (full batches in a row) and for a while after, and never fails where it may not."""

from __future__ import annotations

import pytest

from discovery.priority import ListenerPriority


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def listener(**kwargs: object) -> tuple[ListenerPriority, list[bool], Clock]:
    applied: list[bool] = []
    clock = Clock()
    priority = ListenerPriority(flood_batches=4, cool_down=1.0, apply=applied.append,
                                clock=clock, **kwargs)  # type: ignore[arg-type]
    priority.start()
    return priority, applied, clock


def test_a_burst_keeps_real_time_a_flood_does_not():
    priority, applied, _ = listener()
    assert applied == [True] and priority.realtime
    for full in (True, True, True, False, True, True, True, False):  # bursts that drain
        priority.woke(full)
    assert applied == [True]
    for _ in range(4):  # four full batches in a row: more keeps coming
        priority.woke(True)
    assert applied == [True, False] and not priority.realtime


def test_back_to_real_time_once_quiet_after_the_cool_down(caplog: pytest.LogCaptureFixture):
    priority, applied, clock = listener()
    for _ in range(4):
        priority.woke(True)
    assert "flood" in caplog.text
    clock.now += 0.5
    priority.woke(False)  # quiet, but too soon
    clock.now += 0.6
    priority.woke(True)  # late enough, but still flooded
    assert applied == [True, False]
    priority.woke(False)
    assert applied == [True, False, True] and priority.realtime


def test_without_the_right_to_set_it_the_normal_policy_stays_and_is_not_asked_again():
    calls: list[bool] = []

    def refuse(realtime: bool) -> None:
        calls.append(realtime)
        raise PermissionError(1, "Operation not permitted")

    priority = ListenerPriority(apply=refuse)
    priority.start()
    for _ in range(40):
        priority.woke(False)
    assert calls == [True] and not priority.realtime and not priority.usable
