"""DNS flood benchmark: one container floods the forwarder, how long do the others wait?

A real forwarder (discovery.dnsproxy.DnsProxy) on 127.0.0.1 in front of the local Consul
agent's DNS (127.0.0.1:8600). A "victim" bound to 127.0.0.3 asks ``consul.service.consul``
``-n`` times, one query after the other: first alone (the baseline, same process), then while
a separate process bound to 127.0.0.2 sends the same query as fast as it can, first with the
per-source limit (discovery.ratelimit) as shipped at 20000 queries/s and as fast as one
process can send, then at 20000 queries/s with the limit lifted. Prints the victim's
p50/p95 and lost queries (no answer within 1 s) in each case, and ratios against the baseline.

    /opt/switchboard/venv/bin/python bench/dns_flood.py [-n 200]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402

import tests.harness  # noqa: E402,F401 - the agent has ACLs on: its management token
from discovery.dnsproxy import DnsProxy  # noqa: E402
from discovery.ratelimit import SourceLimiter  # noqa: E402

NAME = "consul.service.consul"
FLOODER = str(Path(__file__).resolve().with_name("dns_flooder.py"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


def victim(port: int, count: int) -> tuple[list[float], int]:
    """Latencies of answered queries (s) and how many got no answer within 1 s."""
    times, lost = [], 0
    for _ in range(count):
        started = time.monotonic()
        try:
            dns.query.udp(dns.message.make_query(NAME, "A"), "127.0.0.1", 1.0, port,
                          source="127.0.0.3")
            times.append(time.monotonic() - started)
        except dns.exception.Timeout:
            lost += 1
    return times, lost


def run(proxy: DnsProxy, count: int, flood: int | None) -> tuple[list[float], int]:
    """The victim's queries, with a flood of ``flood`` queries/s (0: as fast as one process
    can send; None: no flood)."""
    flooder = (subprocess.Popen([sys.executable, FLOODER, str(proxy.port), NAME,
                                 str(flood)]) if flood is not None else None)
    try:
        time.sleep(0 if flood is None else 1)
        return victim(proxy.port, count)
    finally:
        if flooder is not None:
            flooder.kill()
            flooder.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proxy = DnsProxy(("127.0.0.1", 8600), port=port)
    proxy.listen({"127.0.0.1": None})
    try:
        cases = {"alone (baseline)": run(proxy, args.n, None)}
        for rate in (20000, 0):
            what = f"{rate} q/s" if rate else "max rate"
            cases[f"flood {what}, per-source limit"] = run(proxy, args.n, rate)
        dropped = proxy.limiter.dropped["127.0.0.2"]
        proxy.limiter = SourceLimiter(1e9, 10**9, 10**9)
        cases["flood 20000 q/s, no limit"] = run(proxy, args.n, 20000)
    finally:
        proxy.close()
    base = percentile(cases["alone (baseline)"][0], 50)
    print(f"victim: {args.n} queries one after the other (ms; ratio of p50 to the baseline)")
    for label, (times, lost) in cases.items():
        if times:
            p50, p95 = percentile(times, 50) * 1000, percentile(times, 95) * 1000
            print(f"  {label:34s} p50 {p50:7.2f}  p95 {p95:7.2f}  lost {lost:4d}  "
                  f"ratio {p50 / 1000 / base:6.2f}")
        else:
            print(f"  {label:34s} no answer at all (lost {lost})")
    print(f"the flooder's queries dropped by the limit: {dropped}")


if __name__ == "__main__":
    main()
