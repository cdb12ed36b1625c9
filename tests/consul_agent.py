"""A Consul server of the tests' own, on free ports, started and stopped by its PID."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import consul
import pytest

from tests.harness import Switchboard, free_port, private_switchboard, sh, wait_until

PORT_NAMES = ("http-port", "dns-port", "server-port", "serf-lan-port", "serf-wan-port")


@dataclass
class Agent:
    """A Consul server of our own; started, stopped and restarted by its PID."""

    data_dir: Path
    log: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)  # more arguments (-config-file=...)

    @property
    def argv(self) -> list[str]:
        return [
            "consul", "agent", "-server", "-bootstrap-expect=1",
            f"-node=sbtest-{os.getpid()}", f"-data-dir={self.data_dir}",
            "-bind=127.0.0.1", "-client=127.0.0.1", "-hcl", "dns_config { enable_truncate = true }",
            *(f"-{name}={port}" for name, port in self.ports.items()), *self.extra,
        ]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports['http-port']}"

    @property
    def dns(self) -> tuple[str, int]:
        return "127.0.0.1", self.ports["dns-port"]

    def client(self) -> consul.Consul:
        return consul.Consul(port=self.ports["http-port"], connections_timeout=3)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(30)

    def answering(self) -> bool:
        """Whether it answers with a leader elected (what start-services.sh waits for)."""
        try:
            return bool(self.client().status.leader())
        except Exception:  # noqa: BLE001 - not up yet
            return False


@contextmanager
def running_agent(root: Path, extra: list[str] | None = None) -> Iterator[Agent]:
    """A started agent that has elected itself, with its data and log under ``root`` (and
    ``extra`` arguments); stopped on exit."""
    agent = Agent(root / "data", root / "consul.log", {n: free_port() for n in PORT_NAMES},
                  extra=list(extra or []))
    agent.start()
    try:
        if not wait_until(agent.answering, 30, 0.2):
            pytest.fail("the test's Consul agent never elected itself:\n"
                        + agent.log.read_text()[-2000:])
        yield agent
    finally:
        agent.stop()


@contextmanager
def daemon_on_agent(
    agent: Agent, state: Path, prefix: str, bridge: str, topology: str,
    env: dict[str, str] | None = None, drop_env: tuple[str, ...] = (),
) -> Iterator[Switchboard]:
    """A private daemon (own bridge, KV prefix, OpenFlow port) using ``agent``, started and
    ready; afterwards (started again if a test killed it) ``topology`` is taken down, the
    daemon stopped and its bridge removed."""
    board = private_switchboard(state, prefix=prefix, bridge=bridge, of_port=free_port())
    for name in drop_env:
        board.env.pop(name, None)
    board.env.update({"SWITCHBOARD_CONSUL": agent.http,
                      "SWITCHBOARD_CONSUL_DNS": f"127.0.0.1:{agent.dns[1]}", **(env or {})})
    board.start()
    try:
        board.wait_ready()
        yield board
    finally:
        if board.proc is None or board.proc.poll() is not None:
            board.start()
        board.cli("down", topology, check=False, timeout=120)
        board.kill(signal.SIGTERM)
        sh(f"ovs-vsctl --if-exists del-br {board.bridge}")
