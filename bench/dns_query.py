"""DNS benchmark: what answering a container's service question costs, per query.

Registers in the local Consul agent ``-n`` instances of ``sbbdns-own``, all in the topology
``sbbdns``, and ``-n`` of ``sbbdns-api``, half in ``sbbdns`` and half in another topology
(two topologies that both define the service). Then it asks for SRV records, one query at
a time, in interleaved rounds, as a container of ``sbbdns`` would:

- own: ``sbbdns-own`` through the daemon's forwarder. No other topology declares it, so the
  query goes to Consul's DNS (the common case);
- shared: ``sbbdns-api`` through the forwarder. The other topology declares it too, so the
  answer is built from the health API;
- before: ``sbbdns-api`` through the forwarder passing every query to Consul's DNS, as it
  did before names were scoped (every topology's instances);
- Consul: Consul's DNS interface asked directly (the floor).

Run with the Consul agent started (scripts/start-services.sh):

    /opt/switchboard/venv/bin/python bench/dns_query.py [-n 10] [--queries 2000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

import consul
import dns.message

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tests.harness  # noqa: E402,F401 - the agent has ACLs on: its management token
from discovery.dnsproxy import DnsProxy  # noqa: E402
from discovery.lookup import srv_endpoints  # noqa: E402
from discovery.scope import Scope  # noqa: E402

OWN_NET, OTHER_NET = "10.250.0", "10.250.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ask(sock: socket.socket, server: tuple[str, int], service: str) -> tuple[float, int]:
    """Seconds for one SRV query and how many instances the answer holds."""
    packet = dns.message.make_query(f"{service}.service.consul", "SRV", use_edns=0,
                                    payload=4096).to_wire()
    start = time.perf_counter()
    sock.sendto(packet, server)
    answer = sock.recv(65535)
    elapsed = time.perf_counter() - start
    return elapsed, len(srv_endpoints(dns.message.from_wire(answer)))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def register(agent: consul.Consul.Agent, n: int) -> list[str]:
    ids = []
    for i in range(n):
        ids.append(f"sbbdns-own-{i}")
        agent.service.register("sbbdns-own", service_id=ids[-1], address=f"{OWN_NET}.{i + 1}",
                               port=8080, meta={"switchboard-topology": "sbbdns"})
        own = i % 2 == 0
        ids.append(f"sbbdns-api-{i}")
        agent.service.register(
            "sbbdns-api", service_id=ids[-1], port=8080,
            address=f"{OWN_NET if own else OTHER_NET}.{100 + i}",
            meta={"switchboard-topology": "sbbdns" if own else "sbbdns-other"})
    return ids


def main(n: int, queries: int) -> None:
    agent = consul.Consul().agent
    scoped_port, before_port = free_port(), free_port()
    scoped, before = DnsProxy(port=scoped_port), DnsProxy(port=before_port)
    ids: list[str] = []
    try:
        ids = register(agent, n)
        scope = Scope("sbbdns", shared=frozenset({"sbbdns-api"}))  # the other declares it
        assert not scoped.listen({"127.0.0.1": scope})
        assert not before.listen({"127.0.0.1": None})
        cases = {"own": (("127.0.0.1", scoped_port), "sbbdns-own"),
                 "shared": (("127.0.0.1", scoped_port), "sbbdns-api"),
                 "before": (("127.0.0.1", before_port), "sbbdns-api"),
                 "Consul": (("127.0.0.1", 8600), "sbbdns-api")}
        times: dict[str, list[float]] = {k: [] for k in cases}
        seen: dict[str, set[int]] = {k: set() for k in cases}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            for _ in range(50):  # warm up connections
                for server, service in cases.values():
                    ask(sock, server, service)
            for _ in range(max(1, queries // 100)):
                for label, (server, service) in cases.items():
                    for _ in range(100):
                        elapsed, count = ask(sock, server, service)
                        times[label].append(elapsed)
                        seen[label].add(count)
        print(f"{n} instances per service, {len(times['own'])} SRV queries per case, "
              "one at a time:")
        for label, values in times.items():
            print(f"{label:<7} median {statistics.median(values) * 1000:6.2f} ms   "
                  f"p95 {percentile(values, 95) * 1000:6.2f} ms   "
                  f"instances in the answer {sorted(seen[label])}")
    finally:
        scoped.close()
        before.close()
        for sid in ids:
            agent.service.deregister(sid)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10, help="instances per service")
    parser.add_argument("--queries", type=int, default=2000, help="queries per case")
    args = parser.parse_args()
    main(args.n, args.queries)
