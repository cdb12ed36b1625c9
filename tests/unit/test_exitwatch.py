"""The exit watch notices a process's exit at once, whoever its parent is."""

from __future__ import annotations

import subprocess
import threading
import time

from plumbing.exitwatch import ExitWatch


def _watch() -> tuple[ExitWatch, list[tuple[str, int, float]], threading.Event]:
    seen: list[tuple[str, int, float]] = []
    event = threading.Event()

    def on_exit(key: str, pid: int) -> None:
        seen.append((key, pid, time.monotonic()))
        event.set()
    return ExitWatch(on_exit), seen, event


def test_a_killed_process_is_reported_within_milliseconds():
    watch, seen, event = _watch()
    proc = subprocess.Popen(["sleep", "30"])
    try:
        watch.track({"t/a": proc.pid})
        time.sleep(0.05)
        assert seen == []
        killed = time.monotonic()
        proc.kill()
        assert event.wait(2)
        key, pid, when = seen[0]
        assert (key, pid) == ("t/a", proc.pid)
        assert when - killed < 0.1
    finally:
        proc.kill()
        proc.wait()


def test_a_process_already_gone_is_reported_when_tracked():
    watch, seen, event = _watch()
    proc = subprocess.Popen(["true"])
    proc.wait()
    watch.track({"t/b": proc.pid})
    assert event.wait(1) and seen[0][:2] == ("t/b", proc.pid)


def test_a_process_no_longer_tracked_is_not_reported():
    watch, seen, _ = _watch()
    proc = subprocess.Popen(["sleep", "30"])
    try:
        watch.track({"t/c": proc.pid})
        watch.track({})
        proc.kill()
        proc.wait()
        time.sleep(0.2)
        assert seen == []
    finally:
        proc.kill()
        proc.wait()
