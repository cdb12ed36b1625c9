"""Cluster discovery benchmark: a service registered on one host, until it resolves on another.

Makes a private 2-host lab (name ``--lab``; removed at the end, also on failure) and applies
a topology with ``svc`` on h1 and ``probe`` on h2. Then, alternately, ``-n`` times each:

- Switchboard: the seed API's ``Registry`` registers ``sbbreg-I`` (``svc``'s address, port
  8080) with h1's Consul agent (from a thread inside h1's namespace: what the API does when
  run on h1). Measured from the moment ``register`` returns until an A query for
  ``sbbreg-I.service.consul``, sent from inside ``probe`` (h2) to ``probe``'s nameserver (its
  resolv.conf: the daemon's DNS forwarder on h2's address), answers with that address.
- Consul's floor: the same registration straight into h1's agent (py-consul), until h2's
  agent's own DNS interface (127.0.0.1:8600 inside h2) answers with it.

Queries go in a closed loop (a new one as soon as the last is answered, at most every 2 ms).
Each instance is deregistered before the next. Prints p50/p95/max of both and their ratio;
at the end one ``dig`` inside ``probe`` checks the resolver path the way a user would. Run as
root:

    /opt/switchboard/venv/bin/python bench/cluster_discovery.py [-n 20]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import consul  # noqa: E402
import dns.exception  # noqa: E402
import dns.message  # noqa: E402
from labrun import LabRun, NamespaceWorker, in_namespace, percentile  # noqa: E402

from discovery import lookup  # noqa: E402  (labrun put the repository first on sys.path)
from switchboard.api import Registry  # noqa: E402

TOPOLOGY = "disc"
SUBNET = "10.237.0.0/24"
TOPOLOGY_TEXT = f"""name: {TOPOLOGY}
networks:
  lan: {{subnet: {SUBNET}}}
containers:
  svc: {{host: h1, networks: [lan]}}
  probe: {{host: h2, networks: [lan]}}
"""


class Resolver:
    """A UDP socket inside a namespace that asks one nameserver for A records."""

    def __init__(self, netns: str, server: tuple[str, int]) -> None:
        self.sock = in_namespace(netns, lambda: socket.socket(socket.AF_INET,
                                                              socket.SOCK_DGRAM))
        self.sock.settimeout(0.2)
        self.server = server
        self.qid = 0
        self.queries = 0

    def answers(self, name: str) -> set[str]:
        """The A records of ``name`` (empty when NXDOMAIN or no answer in 0.2 s)."""
        self.qid = (self.qid + 1) & 0xFFFF
        self.queries += 1
        self.sock.sendto(dns.message.make_query(name, "A", id=self.qid).to_wire(), self.server)
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            try:
                msg = dns.message.from_wire(self.sock.recv(65535))
            except (OSError, dns.exception.DNSException):
                return set()
            if msg.id == self.qid:
                return set(lookup.addresses(msg))
        return set()


def until_resolves(resolver: Resolver, name: str, address: str, timeout: float = 30) -> float:
    """Seconds until ``name`` resolves to ``address``."""
    start = time.monotonic()
    while address not in resolver.answers(name):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"{name} did not resolve to {address} within {timeout:.0f} s")
        time.sleep(0.002)
    return time.monotonic() - start


def timed(register: Callable[[], object], resolver: Resolver, name: str,
          address: str) -> tuple[float, float]:
    """(seconds the registration call took, seconds from its return until it resolves)."""
    t0 = time.monotonic()
    register()
    call = time.monotonic() - t0
    return call, until_resolves(resolver, f"{name}.service.consul", address)


def nameserver_of(netns: str) -> str:
    for line in Path(f"/etc/netns/{netns}/resolv.conf").read_text().splitlines():
        if line.startswith("nameserver"):
            return line.split()[1]
    raise RuntimeError(f"{netns} has no nameserver in /etc/netns/{netns}/resolv.conf")


def measure(run: LabRun, n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sbbench-disc-") as tmp:
        path = Path(tmp) / f"{TOPOLOGY}.yaml"
        path.write_text(TOPOLOGY_TEXT)
        run.sb("h1", "up", str(path))
    rows = run.status(TOPOLOGY)
    address = rows["svc"]["ip"]
    probe_ns = run.container_ns("h2", TOPOLOGY, "probe")
    nameserver = nameserver_of(probe_ns)
    via_switchboard = Resolver(probe_ns, (nameserver, 53))
    via_consul = Resolver(run.host("h2").netns, ("127.0.0.1", 8600))
    on_h1 = NamespaceWorker(run.host("h1").netns)
    registry = on_h1.call(lambda: Registry("sbbench"))
    agent = on_h1.call(lambda: consul.Consul())
    ours: list[tuple[float, float]] = []
    floor: list[tuple[float, float]] = []
    for i in range(n):
        name = f"sbbreg-{i}"
        ours.append(timed(lambda name=name: on_h1.call(
            lambda: registry.register(name, address, 8080)), via_switchboard, name, address))
        on_h1.call(lambda name=name: registry.deregister(name))
        raw = f"sbbraw-{i}"
        floor.append(timed(lambda raw=raw: on_h1.call(
            lambda: agent.agent.service.register(raw, service_id=raw, address=address,
                                                 port=8080)), via_consul, raw, address))
        on_h1.call(lambda raw=raw: agent.agent.service.deregister(raw))
        time.sleep(0.2)  # let the deregistrations settle before the next round
    on_h1.call(lambda: registry.register("sbbreg-dig", address, 8080))
    time.sleep(1)
    dig = subprocess.run(["ip", "netns", "exec", probe_ns, "dig", "+short", "+time=2",
                          "sbbreg-dig.service.consul"], capture_output=True, text=True,
                         timeout=20)
    with contextlib.suppress(Exception):
        on_h1.call(lambda: registry.deregister())

    print(f"\n{n} registrations each, on h1; resolved from h2 "
          f"({via_switchboard.queries + via_consul.queries} queries):")
    print(f"{'path':<48} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'register call ms':>17}")
    for label, values in ((f"Switchboard: Registry -> probe's resolver {nameserver}", ours),
                          ("Consul floor: agent h1 -> agent h2 DNS :8600", floor)):
        lat = [v for _, v in values]
        print(f"{label:<48} {1000 * percentile(lat, 50):>7.0f} {1000 * percentile(lat, 95):>7.0f}"
              f" {1000 * max(lat):>7.0f} {1000 * statistics.median(c for c, _ in values):>17.1f}")
    ours_p50 = percentile([v for _, v in ours], 50)
    ours_p95 = percentile([v for _, v in ours], 95)
    floor_p50 = percentile([v for _, v in floor], 50)
    floor_p95 = percentile([v for _, v in floor], 95)
    print(f"\nSwitchboard / floor: p50 {ours_p50 / floor_p50:.2f}, p95 "
          f"{ours_p95 / floor_p95:.2f}; p95 {1000 * ours_p95:.0f} ms (goal < 1000 ms)")
    print(f"dig inside probe (its resolv.conf): sbbreg-dig.service.consul -> "
          f"{dig.stdout.strip() or dig.stderr.strip() or '(no answer)'} (expected {address})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Makes and removes its own lab; run as root. See the module docstring.")
    parser.add_argument("-n", type=int, default=20, help="registrations of each kind")
    parser.add_argument("--lab", default="sbbdisc", help="the private lab's name")
    args = parser.parse_args()
    with LabRun(args.lab, 2) as run:
        print(f"lab {args.lab}: 2 hosts up in {run.up_seconds:.1f} s", flush=True)
        measure(run, args.n)


if __name__ == "__main__":
    main()
