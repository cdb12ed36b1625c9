"""Restart policies on a real daemon: exit statuses, backoff, crash loops, a daemon restart.

Commands run in real namespaces; their exits are real (``exit N``, signals sent by the test).
What is checked is what a user sees: `switchboard status --json` and the processes.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plumbing.restart import QUICK
from tests.harness import Switchboard, wait_until

pytestmark = pytest.mark.integration

TOPO = "sbt-rs"
STARTED: list[float] = []  # when the topology's commands were started


def topology() -> str:
    return f"""
name: {TOPO}
networks:
  n: {{subnet: 10.244.1.0/24}}
containers:
  done:
    networks: [n]
    command: "sleep 0.3; exit 0"
    restart: on-failure
  broken:
    networks: [n]
    command: "sleep 0.2; echo boom; exit 3"
    restart: never
  flaky:
    networks: [n]
    command: "exit 1"
    restart: on-failure
  server:
    networks: [n]
    command: "sleep infinity"
"""


def rows(sb: Switchboard) -> dict[str, dict[str, Any]]:
    return {r["container"]: r for r in sb.status(TOPO)["containers"]}


def pid_of(sb: Switchboard, container: str) -> int:
    """The PID in the container's pid file (0 while the daemon starts the command again)."""
    try:
        return int((sb.state_dir / "pids" / TOPO / f"{container}.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError):
        return 0


def running_pid(sb: Switchboard, container: str) -> int:
    """The PID of the container's running command (never 0: killpg(0) is our own group)."""
    assert wait_until(lambda: alive(pid_of(sb, container)), 10)
    pid = pid_of(sb, container)
    assert pid > 0
    return pid


def alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone, or reaped between the two calls
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def lab(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Switchboard]:
    try:
        switchboard.up(tmp_path_factory.mktemp("restart"), topology())
        STARTED.append(time.monotonic())
        yield switchboard
    finally:
        switchboard.cli("down", TOPO, check=False)


def test_never_leaves_a_failed_command_stopped_with_its_exit_status_and_log(lab):
    assert wait_until(lambda: rows(lab)["broken"]["state"] == "failed", 10), rows(lab)["broken"]
    row = rows(lab)["broken"]
    assert row["exit_status"] == 3 and row["restarts"] == 0 and row["restart"] == "never"
    log = lab.state_dir / "logs" / TOPO / "broken.log"
    assert str(log) in row["note"] and "last exit 3" in row["note"]
    assert "boom" in log.read_text()
    assert lab.wait_passes(2)  # a whole pass after it was seen failed: it stays so
    assert rows(lab)["broken"]["restarts"] == 0
    out = lab.cli("status", TOPO).stdout
    assert "failed" in out and "last exit 3" in out


def test_on_failure_leaves_a_clean_exit_alone(lab):
    assert wait_until(lambda: rows(lab)["done"]["state"] == "exited", 10), rows(lab)["done"]
    assert rows(lab)["done"]["exit_status"] == 0
    assert lab.wait_passes(2)
    assert rows(lab)["done"]["restarts"] == 0


def test_a_crash_loop_backs_off_and_is_visible(lab):
    assert wait_until(lambda: rows(lab)["flaky"]["state"] == "crash-looping", 20), \
        rows(lab)["flaky"]
    row = rows(lab)["flaky"]
    assert row["exit_status"] == 1 and row["restarts"] >= 2
    assert "quick exits in a row" in row["note"] and "backoff" in row["note"]
    time.sleep(4)
    later = rows(lab)["flaky"]["restarts"]
    starts = [line for line in (lab.state_dir / "logs" / TOPO / "flaky.log").read_text()
              .splitlines() if line.startswith("--- ") and "starting in" in line]
    first = datetime.fromisoformat(starts[0].split()[1])
    elapsed = (datetime.now(UTC) - first).total_seconds()
    # delays 1, 2, 4... s: n restarts need 2^(n-1) - 1 s; without backoff they would be
    # hundreds (an exit is noticed at once)
    assert len(starts) == later + 1
    assert later <= math.log2(elapsed + 1) + 2, f"{later} restarts in {elapsed:.0f} s"
    assert "crash-looping" in lab.cli("status", TOPO).stdout


def test_always_restarts_a_killed_command_at_once_and_counts_it(lab):
    assert wait_until(lambda: rows(lab)["server"]["state"] == "running", 10)
    time.sleep(max(0.0, STARTED[0] + QUICK + 0.5 - time.monotonic()))  # a long run
    before = rows(lab)["server"]["restarts"]
    old = running_pid(lab, "server")
    os.killpg(old, signal.SIGTERM)
    killed = time.monotonic()
    assert wait_until(lambda: pid_of(lab, "server") != old and alive(pid_of(lab, "server")), 5)
    assert time.monotonic() - killed < 1.0  # a long run restarts without backoff
    assert wait_until(lambda: rows(lab)["server"]["restarts"] == before + 1, 10)
    assert rows(lab)["server"]["exit_status"] == 128 + signal.SIGTERM


def test_an_exit_while_the_daemon_is_down_is_recorded_and_restarted(lab):
    """The wrapper, not the daemon, records the exit status: it survives the daemon."""
    assert wait_until(lambda: rows(lab)["server"]["state"] == "running", 10)
    before = rows(lab)["server"]["restarts"]
    old = running_pid(lab, "server")
    lab.kill()  # SIGKILL the daemon
    try:
        os.killpg(old, signal.SIGKILL)
        assert wait_until(lambda: not alive(old), 5)
    finally:
        lab.start()
    assert wait_until(lambda: pid_of(lab, "server") != old and alive(pid_of(lab, "server")), 20)
    assert wait_until(lambda: rows(lab)["server"]["restarts"] == before + 1, 20)
    assert rows(lab)["server"]["exit_status"] == 128 + signal.SIGKILL
