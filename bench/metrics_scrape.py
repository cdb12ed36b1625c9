"""What a Prometheus scrape of the daemon costs, with N containers up.

Brings up N containers (no commands) with a private daemon, then scrapes its /metrics over
HTTP: milliseconds per scrape (median and 95th percentile of 50), the part spent reading the
bridge's statistics (switchboard_ovs_stats_duration_seconds), the size of the answer, and a
ping between two containers (200 packets, 5 ms apart) idle and while the daemon is scraped
as fast as one client can. Run as root with OVS and Consul started:

    /opt/switchboard/venv/bin/python bench/metrics_scrape.py 10 50 100
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import in_ns, private_switchboard, teardown  # noqa: E402

SCRAPES = 50


def scrape(url: str) -> bytes:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
        return reply.read()


def ping_avg_ms(netns: str, address: str) -> float:
    out = in_ns(netns, f"ping -q -c 200 -i 0.005 -W 1 {address}", timeout=60).stdout
    match = re.search(r"= [\d.]+/([\d.]+)/", out)
    assert match, out
    return float(match.group(1))


def run(n: int, state: Path) -> dict[str, float]:
    sb = private_switchboard(state, prefix="sbscrape", bridge="sbscr-br", of_port=6698)
    sb.start()
    try:
        sb.wait_ready()
        containers = "\n".join(f"  c{i}: {{networks: [lan]}}" for i in range(n))
        topo = state / f"scrape{n}.yaml"
        topo.write_text(f"name: scrape{n}\nnetworks:\n  lan: {{subnet: 10.237.0.0/16}}\n"
                        f"containers:\n{containers}\n")
        sb.cli("up", str(topo), timeout=600)
        url = sb.metrics_url
        scrape(url)  # warm up
        times, stats = [], []
        for _ in range(SCRAPES):
            start = time.perf_counter()
            body = scrape(url)
            times.append(time.perf_counter() - start)
            found = re.search(rb"^switchboard_ovs_stats_duration_seconds (\S+)$", body, re.M)
            stats.append(float(found.group(1)) if found else float("nan"))
        rows = re.findall(rb"^switchboard_interface_receive_packets_total\{", body, re.M)
        assert len(rows) == n, f"{len(rows)} interface rows for {n} containers"
        target = "10.237.0.3"  # c1 (c0 has .2; the gateway .1)
        idle = ping_avg_ms(f"sb-scrape{n}-c0", target)
        stop = threading.Event()
        count = [0]

        def hammer() -> None:
            while not stop.is_set():
                scrape(url)
                count[0] += 1

        thread = threading.Thread(target=hammer)
        started = time.perf_counter()
        thread.start()
        busy = ping_avg_ms(f"sb-scrape{n}-c0", target)
        stop.set()
        thread.join()
        rate = count[0] / (time.perf_counter() - started)
        return {"median_ms": 1000 * statistics.median(times),
                "p95_ms": 1000 * sorted(times)[int(0.95 * len(times)) - 1],
                "ovs_stats_ms": 1000 * statistics.median(stats), "bytes": len(body),
                "ping_idle_ms": idle, "ping_scraped_ms": busy, "scrapes_per_s": rate}
    finally:
        teardown(sb)


def main(sizes: list[int]) -> None:
    print("| containers | scrape median | p95 | of it, OVS stats | answer | ping idle | "
          "ping while scraped non-stop |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="sbscrape-") as tmp:
            r = run(n, Path(tmp))
        print(f"| {n} | {r['median_ms']:.1f} ms | {r['p95_ms']:.1f} ms | "
              f"{r['ovs_stats_ms']:.1f} ms | {r['bytes'] / 1024:.0f} KiB | "
              f"{r['ping_idle_ms']:.3f} ms | {r['ping_scraped_ms']:.3f} ms "
              f"({r['scrapes_per_s']:.0f} scrapes/s) |", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10, 50, 100])
