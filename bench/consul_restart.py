"""Consul restart benchmark: how soon every service is back after the local agent restarts.

A Consul server of the benchmark's own (started the way scripts/start-services.sh starts
the shared one, on free ports, restarted by its PID) and a private daemon that uses it.
N containers each run a small TCP listener and declare one instance of ``sbbcr-api`` with a
TCP check every second, plus a ``probe`` container. Each round restarts the agent one way:

- ``restart``: SIGTERM, then started again on the same data directory;
- ``lost``: stopped, its local registrations (``services/``, ``checks/``) deleted, started
  again: a rebuilt node that comes back knowing none of them.

and measures, from the stop, the moment the agent answers (a leader elected: what
start-services.sh waits for) and the moment every instance is back: registered in the agent,
passing in the health API, in Consul's DNS answer and in the answer a container gets from
its resolver (the daemon's forwarder), and the daemon's own ``switchboard-host``
registration passing. Run as root with OVS started:

    /opt/switchboard/venv/bin/python bench/consul_restart.py [-n 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
from labrun import in_namespace  # noqa: E402

from discovery import lookup  # noqa: E402
from sbcore.model import (
    ipam,  # noqa: E402
    load_topology,  # noqa: E402
)
from sbcore.state import hosts
from tests.consul_agent import PORT_NAMES, Agent  # noqa: E402
from tests.harness import (  # noqa: E402
    Switchboard,
    free_port,
    private_switchboard,
    sh,
    wait_until,
)

TOPOLOGY = "sbbcr"
SERVICE = "sbbcr-api"
SUBNET = IPv4Network("10.235.0.0/24")
LISTENER = ("perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 8080, "
            "Listen => 64, ReuseAddr => 1) or die $!; while ($c = $s->accept) { close $c }'")


def topology_text(n: int) -> str:
    containers = "".join(
        f"  c{i}:\n    networks: [lan]\n    command: {json.dumps(LISTENER)}\n"
        f"    services: [{{name: {SERVICE}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]\n"
        for i in range(n))
    return (f"name: {TOPOLOGY}\nnetworks:\n  lan: {{subnet: {SUBNET}}}\ncontainers:\n"
            f"  probe: {{networks: [lan]}}\n{containers}")


class Observer:
    """Reads, at one moment, what of the N instances each part of the system shows."""

    def __init__(self, agent: Agent, addresses: set[str], nameserver: str, prefix: str) -> None:
        self.agent = agent
        self.host_service = hosts.service_id(prefix)
        self.addresses = addresses
        self.nameserver = (nameserver, 53)

    def registered(self) -> bool:
        try:
            services = self.agent.client().agent.services()
        except Exception:  # noqa: BLE001 - restarting
            return False
        return {s["Address"] for s in services.values() if s["Service"] == SERVICE} \
            == self.addresses

    def host(self) -> bool:
        """The daemon's own ``switchboard-host`` registration, its TTL check passing."""
        try:
            checks = self.agent.client().agent.checks()
        except Exception:  # noqa: BLE001 - restarting
            return False
        return (checks.get(f"service:{self.host_service}") or {}).get("Status") == "passing"

    def passing(self) -> bool:
        try:
            _, entries = self.agent.client().health.service(SERVICE, passing=True)
        except Exception:  # noqa: BLE001 - restarting
            return False
        return {e["Service"]["Address"] for e in entries} == self.addresses

    def consul_dns(self) -> bool:
        """Consul's DNS answers every address (over TCP: over UDP it gives 3 at most)."""
        return self._answers(lambda q: dns.query.tcp(q, self.agent.dns[0], 0.5,
                                                     self.agent.dns[1]))

    def container_dns(self) -> bool:
        """A container's resolver answers every address (asked from inside ``probe``)."""
        return self._answers(lambda q: in_namespace(
            f"sb-{TOPOLOGY}-probe", lambda: dns.query.tcp(q, self.nameserver[0], 0.5)))

    def _answers(self, ask: Callable[[dns.message.Message], dns.message.Message]) -> bool:
        try:
            msg = ask(dns.message.make_query(f"{SERVICE}.service.consul", "A"))
        except (OSError, EOFError, dns.exception.DNSException):
            return False
        return set(lookup.addresses(msg)) == self.addresses

    def all_back(self) -> bool:
        return self.registered() and self.host() and self.passing() and self.consul_dns() \
            and self.container_dns()


def first_time(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    raise RuntimeError(f"{predicate.__name__} did not hold within {timeout} s")


def one_round(agent: Agent, obs: Observer, mode: str) -> dict[str, float]:
    """Restart the agent one way; seconds from the stop to each milestone."""
    start = time.monotonic()
    agent.stop()
    if mode == "lost":
        for folder in ("services", "checks"):
            shutil.rmtree(agent.data_dir / folder, ignore_errors=True)
    agent.start()
    answering = first_time(agent.answering, 60)
    marks = {"answering": answering}
    for name in ("registered", "host", "passing", "consul_dns", "container_dns"):
        marks[name] = first_time(getattr(obs, name), 60)
    marks["all back"] = first_time(obs.all_back, 60)
    return {k: v - start for k, v in marks.items()} | {
        "answering -> all back": marks["all back"] - answering}


def main(n: int, rounds: int, modes: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="sbbcr-") as tmp:
        root = Path(tmp)
        agent = Agent(root / "data", root / "consul.log", {p: free_port() for p in PORT_NAMES})
        agent.start()
        sb = None
        try:
            if not wait_until(agent.answering, 60, 0.2):
                sys.exit(f"the benchmark's Consul agent never elected itself:\n"
                         f"{agent.log.read_text()[-2000:]}")
            sb = private_switchboard(root / "state", prefix=f"sbbcr-{os.getpid()}",
                                     bridge="sbbcr-br", of_port=free_port())
            sb.state_dir.mkdir()
            sb.env.update({"SWITCHBOARD_CONSUL": agent.http,
                           "SWITCHBOARD_CONSUL_DNS": f"127.0.0.1:{agent.dns[1]}"})
            sb.start()
            sb.wait_ready()
            text = topology_text(n)
            topology = load_topology(text)
            allocation = ipam.allocate(topology)
            addresses = {str(allocation[(f"c{i}", "lan")]) for i in range(n)}
            (root / "t.yaml").write_text(text)
            sb.cli("up", str(root / "t.yaml"), timeout=300)
            obs = Observer(agent, addresses, str(ipam.host_leg_address(topology, "lan")),
                           sb.prefix)
            first_time(obs.all_back, 60)
            print(f"{n} instances with a TCP check every 1 s; {rounds} rounds per mode; "
                  "seconds from stopping the agent:")
            for mode in modes:
                results = [one_round(agent, obs, mode) for _ in range(rounds)]
                for key in results[0]:
                    values = [r[key] for r in results]
                    print(f"  {mode:<8} {key:<22} median {statistics.median(values):5.2f} s"
                          f"   max {max(values):5.2f} s", flush=True)
        finally:
            if sb is not None:
                if not agent.answering():
                    agent.stop()
                    agent.start()
                    wait_until(agent.answering, 60, 0.2)
                teardown_private(sb)
            agent.stop()


def teardown_private(sb: Switchboard) -> None:
    """The harness's teardown, minus the shared agent's KV (this run's agent goes away)."""
    if sb.proc is not None and sb.proc.poll() is None:
        sb.cli("down", TOPOLOGY, check=False, timeout=300)
    sb.kill(15)
    sh(f"ovs-vsctl --if-exists del-br {sb.bridge}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="instances")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=["restart", "lost"],
                        choices=["restart", "lost"])
    args = parser.parse_args()
    main(args.n, args.rounds, args.modes)
