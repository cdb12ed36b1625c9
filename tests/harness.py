"""Drive a private Switchboard (own bridge, KV prefix, OpenFlow port, state dir) like a user.

Used by the integration tests and the benchmarks. Only processes started here are stopped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import consul

ROOT = Path(__file__).resolve().parents[1]

# The shared agent (scripts/start-services.sh) runs with ACLs, default deny. Tests and
# benchmarks use KV prefixes, services and checks of their own, so they hold the operator's
# management token (root's only); test_consul_acl.py checks Switchboard's least-privilege
# token on an agent of its own. Daemons and CLI runs started here inherit it.
MANAGEMENT_TOKEN = Path("/var/lib/switchboard/consul-secrets/management.token")
if "CONSUL_HTTP_TOKEN" not in os.environ and os.access(MANAGEMENT_TOKEN, os.R_OK):
    os.environ["CONSUL_HTTP_TOKEN"] = MANAGEMENT_TOKEN.read_text().strip()


@dataclass
class Switchboard:
    """Handle on the test daemon and helpers to drive it like a user would."""

    env: dict[str, str]
    state_dir: Path
    bridge: str
    prefix: str
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "switchboard.cli", "controller", "-v"],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until the daemon has programmed its bridge (the pipeline skeleton is there)."""
        def ready() -> bool:
            out = sh(f"ovs-ofctl -O OpenFlow13 dump-flows {self.bridge}")
            return out.returncode == 0 and "priority=0" in out.stdout
        if not wait_until(ready, timeout):
            raise AssertionError(f"the test daemon never programmed {self.bridge}:\n"
                                 + self.log_tail())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)

    def cli(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "switchboard.cli", *args], env=self.env, cwd=ROOT,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"switchboard {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n--- daemon log ---\n{self.log_tail()}"
            )
        return result

    def up(
        self, tmp_path: Path, text: str, name: str = "topo.yaml"
    ) -> subprocess.CompletedProcess[str]:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return self.cli("up", str(path))

    def status(self, topology: str) -> dict[str, Any]:
        data = json.loads(self.cli("status", topology, "--json").stdout)
        return next(iter(data["topologies"][0]["hosts"].values()))

    @property
    def metrics_url(self) -> str:
        """Base URL of the daemon's metrics and health server (``/metrics``, ``/healthz``)."""
        return f"http://{self.env['SWITCHBOARD_METRICS']}"

    def reconcile_passes(self) -> float:
        """Reconcile passes the daemon finished, whatever their result (from /metrics)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=10) as reply:
            text = reply.read().decode()
        return sum(s.value for family in text_string_to_metric_families(text)
                   for s in family.samples if s.name == "switchboard_reconcile_passes_total")

    def wait_passes(self, count: int = 2, timeout: float = 60) -> bool:
        """Wait until ``count`` more passes have finished: with 2, a whole pass started after
        the call (one may have been under way)."""
        start = self.reconcile_passes()
        return wait_until(lambda: self.reconcile_passes() >= start + count, timeout, 0.2)

    def counters(self, topology: str) -> dict[str, int]:
        return self.status(topology)["counters"]

    def flows(self) -> list[str]:
        out = subprocess.run(
            ["ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", self.bridge],
            capture_output=True, text=True, check=True,
        ).stdout
        return sorted(line.strip() for line in out.splitlines() if "cookie=" in line)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except OSError:
            return ""


def sh(cmd: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a shell command, capturing output."""
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout,
                          check=check)


def in_ns(netns: str, cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run a command inside a container's namespace."""
    return sh(f"ip netns exec {netns} {cmd}", timeout=timeout)


def pings(netns: str, address: str, count: int = 1, wait: float = 1) -> bool:
    """True when a ping from the namespace to address is answered."""
    return in_ns(netns, f"ping -c {count} -W {wait} -i 0.2 {address}").returncode == 0


def marked_processes(under: Path) -> dict[Path, list[int]]:
    """Pid file -> live processes whose environment carries it as their command's mark
    (``SWITCHBOARD_PID_FILE``, set whether or not the pid file was written), for the pid
    files at or under ``under``. Read from /proc here, not with the code under test."""
    prefix = b"SWITCHBOARD_PID_FILE="
    found: dict[Path, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for var in environ:
            if var.startswith(prefix):
                pid_file = Path(var[len(prefix):].decode())
                if pid_file == under or under in pid_file.parents:
                    found.setdefault(pid_file, []).append(int(entry.name))
    return found


def wait_until(predicate: Any, timeout: float = 10, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def private_switchboard(
    state: Path, prefix: str, bridge: str = "sbt-br", of_port: int = 6691
) -> Switchboard:
    """A Switchboard whose daemon uses its own bridge, KV prefix and state (not started)."""
    env = dict(os.environ)
    env.update({
        "SWITCHBOARD_PREFIX": prefix, "SWITCHBOARD_BRIDGE": bridge,
        "SWITCHBOARD_OF_PORT": str(of_port), "SWITCHBOARD_STATE": str(state),
        "SWITCHBOARD_HOST_ID": "test-host", "SWITCHBOARD_RUN": str(state),
        "SWITCHBOARD_METRICS": f"127.0.0.1:{free_port()}", "PYTHONPATH": str(ROOT),
    })
    return Switchboard(env=env, state_dir=state, bridge=bridge, prefix=prefix,
                       log=state / "controller.log")


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1 (Consul's DNS and Serf use both), below the
    ephemeral range, so that no outgoing connection takes it before its server binds it."""
    while True:
        port = random.randrange(20000, 32000)
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                tcp.bind(("127.0.0.1", port))
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def forget_registration(prefix: str) -> None:
    """Remove the host registration a test daemon of ``prefix`` left in the local agent."""
    from sbcore.state.hosts import service_id

    try:
        consul.Consul().agent.service.deregister(service_id(prefix))
    except consul.ConsulException as exc:  # with ACLs on, an unknown service is refused
        if "Unknown service" not in str(exc):
            raise


def teardown(sb: Switchboard) -> None:
    """Take down every topology of this Switchboard, stop its daemon, remove its keys/bridge."""
    client = consul.Consul()
    if sb.proc is None or sb.proc.poll() is not None:
        sb.start()
    _, keys = client.kv.get(f"{sb.prefix}/topologies/", keys=True, separator="/")
    for key in keys or []:
        name = key.rstrip("/").rsplit("/", 1)[-1]
        sb.cli("down", name, check=False, timeout=120)
    sb.kill(signal.SIGTERM)
    client.kv.delete(f"{sb.prefix}/", recurse=True)
    forget_registration(sb.prefix)
    sh(f"ovs-vsctl --if-exists del-br {sb.bridge}")
