"""Published VIP benchmark: new connections per second to a service's published port from
outside the host, against the same VIP from inside a container.

The topology of bench/vip.py (a client container on a network routed to three instances of
a service behind a VIP, each running the HTTP server of tests/integration/host/test_vip.py),
with the VIP published on a host port (``services.S.publish``). The outside is a namespace
on a veth with addresses in 198.18.33.0/24 (tests/outside.py). In alternating rounds, a
serial loop of GETs, each on a new connection: from the outside to the host's address on the
published port (the host destination-NATs it to the VIP and masquerades it), and from the
client container to vip:80. Prints the rates and the median of the rounds' ratios. Run as
root with OVS and Consul started:

    /opt/switchboard/venv/bin/python bench/publish.py [--rounds 8] [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.vip import _ms, _rate, loop  # noqa: E402
from tests.harness import free_port, private_switchboard, teardown, wait_until  # noqa: E402
from tests.integration.host.test_vip import (  # noqa: E402
    INSTANCES,
    SERVER,
    SERVER_FILE,
    ServiceLab,
    vip_topology,
)
from tests.outside import Outside  # noqa: E402

TOPO, SERVICE = "sbbench-pub", "sbbench-pubweb"
FRONT, BACK = "10.231.92", "10.231.93"
VIP = f"{BACK}.100"
HOST_PORT = 18290
CLIENT_NS = f"sb-{TOPO}-client"


def measure(outside: Outside, rounds: int, seconds: float) -> None:
    modes = {f"published ({outside.root_ip}:{HOST_PORT}) from outside":
             (outside.netns, f"{outside.root_ip}:{HOST_PORT}"),
             f"vip ({VIP}:80) from a container": (CLIENT_NS, f"{VIP}:80")}
    stats: dict[str, list[tuple[float, bool]]] = {mode: [] for mode in modes}
    ratios = []  # per round, so that the machine's load drifting affects both sides alike
    for index in range(rounds):
        order = list(modes.items())
        order = order[index % 2:] + order[:index % 2]  # which goes first alternates
        rates = {}
        for mode, (netns, target) in order:
            results = loop([target], seconds, netns)
            stats[mode] += results
            rates[mode] = _rate(results)
        published, inside = (rates[m] for m in modes)
        if inside:  # a round in which the machine stalled the container's loop is left out
            ratios.append(published / inside)
    print(f"new connection + GET, serial, {rounds} alternating rounds x {seconds:.1f} s each")
    print(f"{'':44}{'conn/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for mode, results in stats.items():
        taken = [t for t, ok in results if ok]
        print(f"{mode:44}{_rate(results):9.0f}{_ms(taken, 50):9.2f}{_ms(taken, 90):9.2f}"
              f"{_ms(taken, 99):9.2f}{sum(not ok for _, ok in results):8d}")
    if not ratios:
        raise RuntimeError("no round got a connection through the VIP from the container")
    print(f"published / vip from a container, conn/s: median of {len(ratios)} rounds "
          f"{statistics.median(ratios):.2f}, rounds {min(ratios):.2f}..{max(ratios):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="sbbench-publish-"))
    server = state / SERVER_FILE
    server.write_text(SERVER)
    run = os.getpid()
    sb = private_switchboard(state, prefix=f"sbbench-publish-{run}",
                             bridge=f"sbbp{run % 10000}", of_port=free_port())
    lab = ServiceLab(sb, TOPO, SERVICE, VIP, INSTANCES, server)
    with Outside(33) as outside:
        sb.start()
        try:
            sb.wait_ready()
            topo = state / "publish.yaml"
            topo.write_text(vip_topology(TOPO, SERVICE, FRONT, BACK, server).replace(
                "port: 80}", f"port: 80, publish: {HOST_PORT}}}"))
            sb.cli("up", str(topo))
            for netns in (CLIENT_NS, outside.netns):  # both clients close first: TIME_WAIT
                subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-qw",
                                "net.ipv4.tcp_tw_reuse=1"], check=True)
            lab.all_serving("client")
            url = f"http://{outside.root_ip}:{HOST_PORT}/"
            if not wait_until(lambda: outside.run(f"curl -s -m 2 {url}").stdout != "", 30):
                raise RuntimeError(f"the published port does not answer outside: {url}")
            measure(outside, args.rounds, args.seconds)
        finally:
            lab.stop()
            teardown(sb)


if __name__ == "__main__":
    main()
