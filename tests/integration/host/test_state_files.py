"""State on disk that may hold secrets is root's only: a container's log and PID file (its
command), the state directory, Consul's data and the logs the set-up scripts create. What
containers must read (their resolv.conf) stays readable by a non-root user inside."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from tests.harness import ROOT, Switchboard, in_ns, sh, wait_until

pytestmark = pytest.mark.integration

NOBODY = "setpriv --reuid=65534 --regid=65534 --clear-groups"

TOPOLOGY = """
name: secrets
networks:
  lan: {subnet: 10.96.1.0/24}
containers:
  app:
    networks: [lan]
    command: echo token=s3cr3t-value; sleep 300
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_containers_log_and_pid_file_are_root_only_and_its_resolv_conf_is_not(
    switchboard: Switchboard, tmp_path: Path
) -> None:
    switchboard.up(tmp_path, TOPOLOGY)
    try:
        state = switchboard.state_dir
        log = state / "logs" / "secrets" / "app.log"
        pid = state / "pids" / "secrets" / "app.pid"
        assert wait_until(lambda: "s3cr3t-value" in log.read_text(), 5)
        assert "s3cr3t-value" in pid.read_text()  # the command line, with its secret
        assert _mode(state) == 0o700
        for folder in (state / "logs", log.parent, state / "pids", pid.parent):
            assert _mode(folder) == 0o700, folder
        assert _mode(log) == 0o600 and _mode(pid) == 0o600
        # Another user on the host cannot read it, even given the path.
        denied = sh(f"{NOBODY} cat {log}")
        assert denied.returncode != 0 and "s3cr3t" not in denied.stdout
        # Inside the container a non-root process still reads its resolver configuration.
        resolv = in_ns("sb-secrets-app", f"{NOBODY} cat /etc/resolv.conf")
        assert resolv.returncode == 0 and "nameserver 10.96.1.254" in resolv.stdout
    finally:
        switchboard.cli("down", "secrets", check=False)


def test_set_up_scripts_make_state_and_logs_root_only(tmp_path: Path) -> None:
    state, logs = tmp_path / "state", tmp_path / "logs"
    state.mkdir(mode=0o755)
    os.chmod(state, 0o755)  # as an older version left it
    env = {**os.environ, "SWITCHBOARD_STATE": str(state), "SWITCHBOARD_LOGS": str(logs)}
    # OVS and the Consul agent already run: the script only prepares the directories.
    subprocess.run(["bash", "scripts/start-services.sh"], cwd=ROOT, env=env, check=True,
                   timeout=120)
    assert [_mode(p) for p in (state, state / "consul", logs)] == [0o700] * 3
    assert _mode(logs / "consul.log") == 0o600

    fake = tmp_path / "fake-switchboard"  # stands in for the daemon: the script is the test
    fake.write_text("#!/bin/sh\necho 'controller for bridge sb-fake'\nexec sleep 60\n")
    fake.chmod(0o755)
    env["SWITCHBOARD_CMD"] = str(fake)
    subprocess.run(["bash", "scripts/start-controller.sh"], cwd=ROOT, env=env, check=True,
                   timeout=60, capture_output=True)
    pid = int((state / "controller.pid").read_text())
    try:
        assert _mode(logs / "controller.log") == 0o600
        assert "controller for bridge" in (logs / "controller.log").read_text()
    finally:
        os.kill(pid, signal.SIGTERM)
