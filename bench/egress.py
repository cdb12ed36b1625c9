"""Egress benchmark: TCP from a container to an outside namespace through Switchboard
(the switch to the host leg, the host's forwarding and masquerade) against Docker's way,
built here in the same run: a namespace on a veth to a Linux bridge holding the gateway
address, and an nftables masquerade rule. The outside is a namespace on a veth with
addresses in 198.18.31.0/24 (tests/outside.py), running ``iperf3 -s``. Rounds alternate
which path goes first. Prints the median Gbit/s of each and the ratio. Run as root with OVS
and Consul started:

    /opt/switchboard/venv/bin/python bench/egress.py [--seconds 4 --rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import free_port, private_switchboard, sh, teardown, wait_until  # noqa: E402
from tests.outside import Outside  # noqa: E402

PORT = 5201
TOPOLOGY = """name: sbt-out-bench
networks:
  lan: {subnet: 10.182.31.0/24}
containers:
  client: {networks: {lan: {ip: 10.182.31.10}}}
"""
SWITCHBOARD_NS = "sb-sbt-out-bench-client"
DOCKER_NS, BRIDGE, TABLE = "sbt-out-dock", "sbtoutbr", "sbt_out_bench"


def docker_way_up() -> None:
    """Docker's default bridge network, by hand: veth, Linux bridge, masquerade."""
    for cmd in (f"ip netns add {DOCKER_NS}", f"ip link add {BRIDGE} type bridge",
                f"ip addr add 10.182.32.1/24 dev {BRIDGE}", f"ip link set {BRIDGE} up",
                f"ip link add sbtoutd0 type veth peer name eth0 netns {DOCKER_NS}",
                f"ip link set sbtoutd0 master {BRIDGE}", "ip link set sbtoutd0 up",
                f"ip -n {DOCKER_NS} addr add 10.182.32.2/24 dev eth0",
                f"ip -n {DOCKER_NS} link set eth0 up", f"ip -n {DOCKER_NS} link set lo up",
                f"ip -n {DOCKER_NS} route add default via 10.182.32.1",
                f"sysctl -qw net.ipv4.conf.{BRIDGE}.forwarding=1"):
        sh(cmd, check=True)
    rules = (f"table ip {TABLE} {{\n  chain post {{\n"
             "    type nat hook postrouting priority srcnat;\n"
             f"    ip saddr 10.182.32.0/24 oifname != \"{BRIDGE}\" masquerade\n  }}\n}}\n")
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)


def docker_way_down() -> None:
    sh(f"nft delete table ip {TABLE}")
    sh(f"ip link del {BRIDGE}")
    sh("ip link del sbtoutd0")
    sh(f"ip netns del {DOCKER_NS}")


def iperf(netns: str, server: str, seconds: int) -> float:
    """Gbit/s received in one run (tried again when the server is still busy)."""
    error = ""
    for _ in range(5):
        out = sh(f"ip netns exec {netns} iperf3 -c {server} -p {PORT} -t {seconds} -J",
                 timeout=seconds + 30)
        data = json.loads(out.stdout or "{}")
        received = data.get("end", {}).get("sum_received")
        if received and "error" not in data:
            return received["bits_per_second"] / 1e9
        error = data.get("error", out.stderr)
        time.sleep(1)
    raise RuntimeError(f"iperf3 from {netns} failed: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="sb-bench-egress-"))
    run = os.getpid()
    sb = private_switchboard(state, prefix=f"sbbench-egress-{run}",
                             bridge=f"sbbe{run % 10000}", of_port=free_port())
    with Outside(31) as outside:
        server = subprocess.Popen(["ip", "netns", "exec", outside.netns, "iperf3", "-s", "-p",
                                   str(PORT)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        sb.start()
        try:
            docker_way_up()
            sb.wait_ready()
            (state / "t.yaml").write_text(TOPOLOGY)
            sb.cli("up", str(state / "t.yaml"))
            for ns in (SWITCHBOARD_NS, DOCKER_NS):
                if not wait_until(lambda ns=ns: sh(f"ip netns exec {ns} ping -c1 -W1 "
                                                   f"{outside.ip}").returncode == 0, 30):
                    raise RuntimeError(f"{ns} does not reach the outside")
            results: dict[str, list[float]] = {"switchboard": [], "docker-way": []}
            paths = [("switchboard", SWITCHBOARD_NS), ("docker-way", DOCKER_NS)]
            for index in range(args.rounds):
                for name, ns in paths[index % 2:] + paths[:index % 2]:
                    results[name].append(iperf(ns, outside.ip, args.seconds))
            sw, dw = (statistics.median(results[k]) for k in ("switchboard", "docker-way"))
            print(f"container -> outside TCP, {args.rounds} rounds of {args.seconds} s")
            print(f"  switchboard  median {sw:.2f} Gbit/s  {results['switchboard']}")
            print(f"  docker way   median {dw:.2f} Gbit/s  {results['docker-way']}")
            print(f"  ratio switchboard / docker way: {sw / dw:.2f}")
        finally:
            server.kill()
            server.wait()
            docker_way_down()
            teardown(sb)


if __name__ == "__main__":
    main()
