"""VIP benchmark: new connections through a service VIP against direct ones, and failover.

One client container on a network routed to another that holds three instances of a service,
each running the same small HTTP server (the one of tests/integration/host/test_vip.py). In one run:

- rate and latency: a serial loop of GETs, each on a new connection, from the client to
  vip:80, and directly to the instances' ip:8080 in turn, in alternating rounds.
  Target: the VIP's connection rate at least 0.8 of direct.
- failover: the client loops on the VIP while one instance's server is killed; the failover
  time runs from the kill to the end of the client's last request that failed or reached the
  killed instance. Target: within the check interval (1 s) plus 1 s. Also shown: when Consul
  stopped reporting the instance passing, and how soon it got connections again once its
  server was started again.

Run as root with OVS and Consul started:

    /opt/switchboard/venv/bin/python bench/vip.py [--rounds 8] [--seconds 2] [--failovers 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sbcore.model.naming import group_id  # noqa: E402
from tests.harness import private_switchboard, teardown  # noqa: E402
from tests.integration.host.test_vip import (  # noqa: E402
    BOUND,
    INSTANCES,
    SERVER,
    SERVER_FILE,
    ServiceLab,
    gets_of,
    start_gets,
    vip_topology,
)

TOPO, SERVICE = "sbbench-vip", "sbbench-vipweb"
FRONT, BACK = "10.231.88", "10.231.89"
VIP = f"{BACK}.100"
CLIENT_NS = f"sb-{TOPO}-client"
# GETs on a new connection each, to the targets (host:port,...) in turn, for argv[2] seconds;
# prints [[seconds taken, ok], ...] as JSON.
LOOP = r"""
import http.client, json, sys, time
targets = [t.rsplit(":", 1) for t in sys.argv[1].split(",")]
results, end, i = [], time.monotonic() + float(sys.argv[2]), 0
while time.monotonic() < end:
    host, port = targets[i % len(targets)]
    i += 1
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/")
        ok = conn.getresponse().read() != b""
    except (OSError, http.client.HTTPException):
        ok = False
    finally:
        conn.close()
    results.append([time.monotonic() - start, ok])
print(json.dumps(results))
"""


def loop(targets: list[str], seconds: float, netns: str = CLIENT_NS
         ) -> list[tuple[float, bool]]:
    """New connection + GET, serially, to ``targets`` in turn for ``seconds``, from ``netns``."""
    out = subprocess.run(["ip", "netns", "exec", netns, "python3", "-c", LOOP,
                          ",".join(targets), str(seconds)],
                         capture_output=True, text=True, check=True, timeout=seconds + 60)
    return [tuple(r) for r in json.loads(out.stdout)]


def _ms(values: list[float], q: float) -> float:
    return 1000 * statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else 0.0


def _rate(results: list[tuple[float, bool]]) -> float:
    """Successful connections per second of loop time."""
    return sum(ok for _, ok in results) / sum(t for t, _ in results)


def rate_and_latency(rounds: int, seconds: float) -> None:
    direct = [f"{BACK}.1{i}:8080" for i in range(1, len(INSTANCES) + 1)]
    modes = {"direct (instance:8080)": direct, f"vip ({VIP}:80)": [f"{VIP}:80"]}
    stats: dict[str, list[tuple[float, bool]]] = {mode: [] for mode in modes}
    ratios = []  # per round, so that the machine's load drifting affects both sides alike
    for _ in range(rounds):
        rates = []
        for mode, targets in modes.items():
            results = loop(targets, seconds)
            stats[mode] += results
            rates.append(_rate(results))
        ratios.append(rates[1] / rates[0])
    print(f"new connection + GET, serial, {rounds} alternating rounds x {seconds:.1f} s each")
    print(f"{'':24}{'conn/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}")
    p50 = []
    for mode, results in stats.items():
        taken = [t for t, ok in results if ok]
        p50.append(_ms(taken, 50))
        print(f"{mode:24}{_rate(results):9.0f}{p50[-1]:9.2f}{_ms(taken, 90):9.2f}"
              f"{_ms(taken, 99):9.2f}{sum(not ok for _, ok in results):8d}")
    ratio = statistics.median(ratios)
    verdict = "ok" if ratio >= 0.8 else "BELOW TARGET"
    print(f"vip / direct rate: median of rounds {ratio:.2f} (target >= 0.80: {verdict}), "
          f"rounds {min(ratios):.2f}..{max(ratios):.2f}; p50 latency {p50[1] / p50[0]:.2f}")


def failover(lab: ServiceLab, count: int) -> None:
    print(f"\nfailover as seen by the client (check interval 1 s, target <= {BOUND:.1f} s)")
    worst = 0.0
    for n in range(count):
        victim = INSTANCES[n % len(INSTANCES)]
        seen: dict[str, float] = {}
        gets = start_gets(CLIENT_NS, VIP, 80, seconds=BOUND + 3)
        time.sleep(1)
        killed_at = time.monotonic()
        watcher = threading.Thread(target=_watch, args=(lab, victim, seen))
        watcher.start()
        lab.kill(victim)
        results = gets_of(gets)
        watcher.join()
        live = set(INSTANCES) - {victim}
        bad = [end for start, end, answer in results if start >= killed_at and answer not in live]
        took = max(bad, default=killed_at) - killed_at
        worst = max(worst, took)
        consul, switch = (f"{seen[k] - killed_at:.2f} s" if k in seen else "never"
                          for k in ("consul", "switch"))
        lab.revive(victim)
        revived_at = time.monotonic()
        back = [start for start, _, answer in gets_of(start_gets(CLIENT_NS, VIP, 80, BOUND + 3))
                if answer == victim]
        again = f"{back[0] - revived_at:.2f} s" if back else f"not within {BOUND + 3:.0f} s"
        print(f"  kill {victim}: clients failed over in {took:.2f} s ({len(bad)} requests "
              f"failed or hit it; Consul critical after {consul}, group updated after "
              f"{switch}); back after {again}")
        lab.all_serving("client")
    verdict = "ok" if worst <= BOUND else "ABOVE TARGET"
    print(f"worst failover: {worst:.2f} s (target <= {BOUND:.1f} s: {verdict})")


def _buckets(lab: ServiceLab) -> int:
    """How many instances the VIP's select group holds on the switch."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-groups", lab.sb.bridge],
                         capture_output=True, text=True).stdout
    wanted = f"group_id={group_id(lab.topology, lab.service)},"
    return next((line.count("bucket=") for line in out.splitlines() if wanted in line), 0)


def _watch(lab: ServiceLab, victim: str, found: dict[str, float], timeout: float = 5) -> None:
    """Record when Consul stops reporting ``victim`` passing and when the group shrinks."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and len(found) < 2:
        if "consul" not in found and victim not in lab.passing():
            found["consul"] = time.monotonic()
        if "switch" not in found and _buckets(lab) < len(INSTANCES):
            found["switch"] = time.monotonic()
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="sbbench-vip-"))
    server = state / SERVER_FILE
    server.write_text(SERVER)
    sb = private_switchboard(state, prefix="sbbench-vip", bridge="sbv-br", of_port=6693)
    sb.start()
    lab = ServiceLab(sb, TOPO, SERVICE, VIP, INSTANCES, server)
    try:
        sb.wait_ready()
        topo = state / "vip.yaml"
        topo.write_text(vip_topology(TOPO, SERVICE, FRONT, BACK, server))
        sb.cli("up", str(topo))
        # The client closes first, so its ports wait in TIME_WAIT; without reusing them its
        # kernel's port search slows down once half the range is taken (about 14000
        # connections to the VIP), and the rounds would measure that, not the switch.
        subprocess.run(["ip", "netns", "exec", CLIENT_NS, "sysctl", "-qw",
                        "net.ipv4.tcp_tw_reuse=1"], check=True)
        lab.all_serving("client")
        rate_and_latency(args.rounds, args.seconds)
        failover(lab, args.failovers)
    finally:
        lab.stop()
        teardown(sb)


if __name__ == "__main__":
    main()
