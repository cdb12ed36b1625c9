"""Driving a `switchboard lab` from tests: its CLI under the test's own lab name, commands
inside its hosts and containers, and waiting for a condition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[3]
T = TypeVar("T")


class LabDriver:
    """One lab, named so that a user's lab is never touched."""

    def __init__(self, name: str) -> None:
        self.name = name

    def lab(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """`switchboard lab ARGS`."""
        env = {**os.environ, "SWITCHBOARD_LAB_NAME": self.name}
        env.pop("SWITCHBOARD_LAB_HOST", None)
        return subprocess.run([sys.executable, "-m", "switchboard.cli", "lab", *args],
                              cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def sb(self, host: str, *args: str, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
        """`switchboard ARGS` run on lab host ``host``."""
        return self.lab("exec", host, "--", sys.executable, "-m", "switchboard.cli", *args,
                        timeout=timeout)

    def sb_json(self, host: str, *args: str) -> Any:
        """`switchboard ARGS --json` on ``host``, parsed; None when the command failed."""
        out = self.sb(host, *args, "--json")
        return json.loads(out.stdout) if out.returncode == 0 else None

    def netns(self, host: str, topology: str, container: str) -> str:
        return f"{self.name}-{host}-{topology}-{container}"

    def state_dir(self, host: str) -> Path:
        return Path(f"/var/lib/switchboard/lab/{self.name}/{host}")


def run_in(ns: str, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=timeout)


def eventually(check: Callable[[], T], timeout: float = 20.0, every: float = 0.5) -> T:
    """``check()`` until it is truthy or ``timeout`` seconds passed; its last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)
