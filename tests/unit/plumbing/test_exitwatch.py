"""The exit watch notices a process's exit at once, whoever its parent is."""

from __future__ import annotations

import subprocess
import threading
import time

from plumbing.exitwatch import ExitWatch

# ExitWatch wakes on the pidfd: measured a few ms. Polling would be the daemon's 10 s resync;
# the bound has a wide margin for a loaded machine and still tells the two apart.
AT_ONCE = 2.0


def _watch() -> tuple[ExitWatch, list[tuple[str, int, float]], threading.Event]:
    seen: list[tuple[str, int, float]] = []
    event = threading.Event()

    def on_exit(key: str, pid: int) -> None:
        seen.append((key, pid, time.monotonic()))
        event.set()
    return ExitWatch(on_exit), seen, event


def _reported(seen: list[tuple[str, int, float]], key: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(k == key for k, _, _ in seen):
            return True
        time.sleep(0.01)
    return False


def test_a_killed_process_is_reported_at_once_and_a_live_one_is_not():
    watch, seen, _ = _watch()
    live, dying = subprocess.Popen(["sleep", "30"]), subprocess.Popen(["sleep", "30"])
    try:
        watch.track({"t/live": live.pid, "t/a": dying.pid})
        killed = time.monotonic()
        dying.kill()
        assert _reported(seen, "t/a")
        key, pid, when = next(s for s in seen if s[0] == "t/a")
        assert pid == dying.pid
        assert when - killed < AT_ONCE
        assert [k for k, _, _ in seen] == ["t/a"]  # the live one, watched as long, is not
    finally:
        for proc in (live, dying):
            proc.kill()
            proc.wait()


def test_a_process_already_gone_is_reported_when_tracked():
    watch, seen, event = _watch()
    proc = subprocess.Popen(["true"])
    proc.wait()
    watch.track({"t/b": proc.pid})
    assert event.wait(10) and seen[0][:2] == ("t/b", proc.pid)


def test_a_process_no_longer_tracked_is_not_reported():
    watch, seen, _ = _watch()
    untracked, tracked = subprocess.Popen(["sleep", "30"]), subprocess.Popen(["sleep", "30"])
    try:
        watch.track({"t/c": untracked.pid})
        watch.track({"t/d": tracked.pid})
        untracked.kill()
        untracked.wait()
        tracked.kill()  # exits after the untracked one: once it is reported, so would be that
        assert _reported(seen, "t/d")
        assert [k for k, _, _ in seen] == ["t/d"]
    finally:
        for proc in (untracked, tracked):
            proc.kill()
            proc.wait()
