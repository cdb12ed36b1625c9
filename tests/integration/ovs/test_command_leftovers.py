"""A command whose leading process is killed alone (its children live on, in its process
group) leaves nothing behind: starting it again, or stopping it, ends those children."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plumbing import processes
from tests.harness import marked_processes

pytestmark = pytest.mark.integration

NS = f"sbt-left{os.getpid() % 10000}"
COMMAND = "sleep 301 & sleep 302 & wait"


def group(pgid: int) -> list[int]:
    """Live members of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, _ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, IndexError):
                continue
            if int(pgrp) == pgid and state not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def wait_for(check, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


@pytest.mark.parametrize("then", ["start again", "stop"])
def test_the_children_of_a_leader_killed_alone_are_ended(netns: str, tmp_path: Path,
                                                         then: str) -> None:
    log, pid_file = tmp_path / "c.log", tmp_path / "c.pid"
    leader = processes.start(netns, COMMAND, log, pid_file)
    assert wait_for(lambda: len(group(leader)) == 3)  # sh and its two sleeps
    children = [p for p in group(leader) if p != leader]
    os.kill(leader, signal.SIGKILL)
    assert wait_for(lambda: leader not in group(leader))
    assert all(p in group(leader) for p in children)  # orphaned, not gone
    try:
        if then == "start again":
            again = processes.start(netns, COMMAND, log, pid_file)
            assert wait_for(lambda: not group(leader)), group(leader)
            assert len(group(again)) >= 1  # the new command runs
        else:
            processes.stop(pid_file)
            assert wait_for(lambda: not group(leader)), group(leader)
    finally:
        processes.stop(pid_file)
        for pid in group(leader):
            os.kill(pid, signal.SIGKILL)


def test_stopping_several_dead_leaders_at_once_ends_all_their_children(netns: str,
                                                                      tmp_path: Path) -> None:
    """What ``down`` does: stop_all of commands whose leaders died (one /proc scan for all),
    next to one that still runs."""
    pid_files = [tmp_path / f"c{i}.pid" for i in range(3)]
    leaders = [processes.start(netns, COMMAND, tmp_path / f"c{i}.log", pid_files[i])
               for i in range(3)]
    try:
        assert wait_for(lambda: all(len(group(leader)) == 3 for leader in leaders))
        for leader in leaders[:2]:
            os.kill(leader, signal.SIGKILL)
        assert wait_for(lambda: all(leader not in group(leader) for leader in leaders[:2]))
        assert all(group(leader) for leader in leaders[:2])  # their children live on
        processes.stop_all(pid_files)
        assert wait_for(lambda: not any(group(leader) for leader in leaders)), \
            [group(leader) for leader in leaders]
        assert not any(p.exists() for p in pid_files)
    finally:
        for leader in leaders:
            for pid in group(leader):
                os.kill(pid, signal.SIGKILL)


def marked(pid_file: Path) -> list[int]:
    """Live processes whose environment carries the pid file's mark."""
    return marked_processes(pid_file).get(pid_file, [])


def test_a_command_whose_pid_file_was_never_written_is_adopted_not_started_twice(
        netns: str, tmp_path: Path) -> None:
    """A daemon killed between starting a command and writing its pid file: the next start
    takes the running command (same PID, same exit-status file) instead of a second copy."""
    log, pid_file = tmp_path / "c.log", tmp_path / "c.pid"
    leader = processes.start(netns, COMMAND, log, pid_file)
    try:
        assert wait_for(lambda: len(group(leader)) == 3)
        pid_file.unlink()  # never written
        assert processes.start(netns, COMMAND, log, pid_file) == leader
        assert processes.is_running(pid_file)
        assert sorted(marked(pid_file)) == sorted(group(leader))  # no second copy
        assert log.read_text().count("starting in") == 1
        processes.stop(pid_file)
        assert wait_for(lambda: not marked(pid_file))
        assert wait_for(lambda: processes.read_exit(pid_file, leader) is not None)
    finally:
        for pid in marked(pid_file):
            os.kill(pid, signal.SIGKILL)


def test_a_copy_left_in_a_namespace_made_again_is_ended(netns: str, tmp_path: Path) -> None:
    """The namespace was deleted and made again (the daemon repairs what it finds broken): the
    command left in the old one, unreachable, is ended, and one runs in the new one."""
    log, pid_file = tmp_path / "c.log", tmp_path / "c.pid"
    old = processes.start(netns, COMMAND, log, pid_file)
    try:
        assert wait_for(lambda: len(group(old)) == 3)
        pid_file.unlink()
        subprocess.run(["ip", "netns", "del", netns], check=True)
        subprocess.run(["ip", "netns", "add", netns], check=True)
        new = processes.start(netns, COMMAND, log, pid_file)
        assert new != old
        assert wait_for(lambda: not group(old)), group(old)
        assert wait_for(lambda: sorted(marked(pid_file)) == sorted(group(new)))
    finally:
        processes.stop(pid_file)
        for pid in marked(pid_file):
            os.kill(pid, signal.SIGKILL)


def test_stop_ends_a_command_no_pid_file_names_and_what_left_its_group(
        netns: str, tmp_path: Path) -> None:
    """``down`` of a command whose pid file was never written, and of a child that made a
    session of its own (a daemonizing command): nothing carrying its mark is left."""
    log, pid_file = tmp_path / "c.log", tmp_path / "c.pid"
    leader = processes.start(netns, "setsid sleep 303 & sleep 304 & wait", log, pid_file)
    try:
        assert wait_for(lambda: len(marked(pid_file)) == 3)
        pid_file.unlink()
        processes.stop_all([pid_file])
        assert wait_for(lambda: not marked(pid_file)), marked(pid_file)
        assert not group(leader)
    finally:
        for pid in marked(pid_file):
            os.kill(pid, signal.SIGKILL)
