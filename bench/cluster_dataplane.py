"""Cluster data-plane benchmark: TCP and ping between two lab hosts through Switchboard's pipeline.

Makes a private 2-host lab (`switchboard lab up --hosts 2 `, name ``--lab``) and applies one
network with three containers: ``a`` and ``c`` on h1, ``b`` on h2. Three paths, measured in
interleaved rounds (iperf3 TCP from the first to the second, then ping):

- pipeline, across hosts: a (h1) -> b (h2), through the full pipeline and the flow-based
  VXLAN port ``sb-tun``;
- plain VXLAN baseline: on the same two hosts' OVS, a second bridge per host, on the same
  datapath as the daemon's ``sb-int`` there (kernel or userspace), with one
  NORMAL flow, a VXLAN port with a fixed ``remote_ip`` (the peer's tunnel address) and key
  (UDP port 4790, so it never meets ``sb-tun``'s traffic), and a namespace on a veth with
  the containers' settings: MTU 1450, ``ethtool -K eth0 tx off``;
- pipeline, one host: a -> c, both on h1 (the same offload settings).

Each round starts with the next path, so each path goes first as often. Prints the median
Gbit/s, TCP retransmits and ping RTT of each, and the ratios. The lab is
removed at the end, also on failure. Needs iperf3 (``apt-get install -y iperf3``). Run as
root:

    /opt/switchboard/venv/bin/python bench/cluster_dataplane.py [--rounds 5 --seconds 4]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataplane import PORT, Servers, wait_listening  # noqa: E402
from labrun import LabRun  # noqa: E402

TOPOLOGY = "dp"
SUBNET = "10.235.0.0/24"
BASE_SUBNET = "10.236.0"  # .1 on h1, .2 on h2
BASE_BRIDGE = "sbbl"
BASE_KEY = 4242
BASE_UDP_PORT = 4790
MTU = 1450  # what the pipeline's containers get on a 1500-byte underlay

TOPOLOGY_TEXT = f"""name: {TOPOLOGY}
networks:
  lan: {{subnet: {SUBNET}}}
containers:
  a: {{host: h1, networks: [lan]}}
  b: {{host: h2, networks: [lan]}}
  c: {{host: h1, networks: [lan]}}
"""


def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
    return out


def add_baseline(run: LabRun) -> dict[str, str]:
    """Per host, bridge sbbl (one NORMAL flow) with a plain VXLAN port to the other host and a
    namespace on a veth. Returns host -> the namespace. `lab down` removes all of it."""
    h1, h2 = run.host("h1"), run.host("h2")
    datapath = run.run("h1", "ovs-vsctl", "get", "bridge", "sb-int",
                       "datapath_type").stdout.strip().strip('"') or "system"
    print(f"datapath: {datapath} (the daemons' sb-int and the baseline's {BASE_BRIDGE})",
          flush=True)
    made = {}
    for k, (me, peer) in enumerate(((h1, h2), (h2, h1)), start=1):
        ns = f"{run.name}-bl{k}"
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", me.netns, "link", "add", "blv", "mtu", str(MTU), "type", "veth",
           "peer", "name", "eth0", "netns", ns)
        for cmd in (["link", "set", "lo", "up"], ["link", "set", "eth0", "mtu", str(MTU), "up"],
                    ["addr", "add", f"{BASE_SUBNET}.{k}/24", "dev", "eth0"]):
            sh("ip", "-n", ns, *cmd)
        sh("ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off")
        sh("ip", "-n", me.netns, "link", "set", "blv", "up")
        run.run(me.name, "ovs-vsctl", "add-br", BASE_BRIDGE, "--", "set", "bridge", BASE_BRIDGE,
                f"datapath_type={datapath}", "fail_mode=secure", "--", "add-port", BASE_BRIDGE,
                "blv", "--", "add-port", BASE_BRIDGE, "bltun", "--", "set", "interface",
                "bltun", "type=vxlan", f"options:remote_ip={peer.tunnel_ip}",
                f"options:key={BASE_KEY}", f"options:dst_port={BASE_UDP_PORT}")
        run.run(me.name, "ovs-ofctl", "-O", "OpenFlow13", "add-flow", BASE_BRIDGE,
                "actions=NORMAL")
        made[me.name] = ns
    return made


def iperf(client_ns: str, server_ip: str, seconds: int) -> tuple[float, int]:
    """(Gbit/s received, retransmits) of one iperf3 TCP run from a namespace."""
    out = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-p",
                          str(PORT), "-t", str(seconds), "-J"],
                         capture_output=True, text=True, timeout=seconds + 30)
    data = json.loads(out.stdout or "{}")
    if "error" in data or out.returncode != 0:
        raise RuntimeError(f"iperf3 to {server_ip} failed: {data.get('error', out.stderr)}")
    end = data["end"]
    return end["sum_received"]["bits_per_second"] / 1e9, int(end["sum_sent"]["retransmits"])


def ping(client_ns: str, address: str, count: int) -> tuple[list[float], int]:
    """(RTTs in ms, packets lost) of ``ping -c count -i 0.05`` from a namespace."""
    out = subprocess.run(["ip", "netns", "exec", client_ns, "ping", "-n", "-c", str(count),
                          "-i", "0.05", "-W", "1", address],
                         capture_output=True, text=True, timeout=count + 10)
    rtts = [float(m) for m in re.findall(r"time=([0-9.]+) ms", out.stdout)]
    return rtts, count - len(rtts)


def measure(run: LabRun, rounds: int, seconds: int, pings: int) -> None:
    with tempfile.TemporaryDirectory(prefix="sbbench-dp-") as tmp:
        path = Path(tmp) / f"{TOPOLOGY}.yaml"
        path.write_text(TOPOLOGY_TEXT)
        run.sb("h1", "up", str(path))
    rows = run.status(TOPOLOGY)
    ns = {c: run.container_ns(rows[c]["host"], TOPOLOGY, c) for c in "abc"}
    first_rtts, first_lost = ping(ns["a"], rows["b"]["ip"], 3)  # the very first packets across
    base = add_baseline(run)
    paths = {  # kind -> (client namespace, server namespace, server address)
        "pipeline, 2 hosts": (ns["a"], ns["b"], rows["b"]["ip"]),
        "plain VXLAN, 2 hosts": (base["h1"], base["h2"], f"{BASE_SUBNET}.2"),
        "pipeline, 1 host": (ns["a"], ns["c"], rows["c"]["ip"]),
    }
    servers = Servers()
    try:
        for _, server_ns, _ in paths.values():
            servers.start(server_ns)
        wait_listening([server_ns for _, server_ns, _ in paths.values()])
        for client, _, address in paths.values():  # warm: ARP, tunnel neighbours, conntrack
            ping(client, address, 3)
        gbits: dict[str, list[float]] = {k: [] for k in paths}
        retrans: dict[str, list[int]] = {k: [] for k in paths}
        rtts: dict[str, list[float]] = {k: [] for k in paths}
        lost: dict[str, int] = dict.fromkeys(paths, 0)
        order = list(paths)
        for r in range(rounds):  # interleaved, each path first in turn, so load from
            turn = r % len(order)  # elsewhere and warm caches hit every path alike
            for kind in order[turn:] + order[:turn]:
                client, _, address = paths[kind]
                g, re_ = iperf(client, address, seconds)
                gbits[kind].append(g)
                retrans[kind].append(re_)
                times, missing = ping(client, address, pings)
                rtts[kind] += times
                lost[kind] += missing
            print(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{k} {gbits[k][-1]:.2f}" for k in paths) + " Gbit/s", flush=True)
    finally:
        servers.stop()
    median = {k: statistics.median(v) for k, v in gbits.items()}
    print(f"\n{rounds} rounds of iperf3 -t {seconds} (median; min-max) and {rounds} x "
          f"{pings} pings per path:")
    print(f"{'path':<22} {'Gbit/s':>7} {'min-max':>11} {'retransmits':>12} "
          f"{'RTT p50 ms':>11} {'RTT p95':>8} {'lost':>5}")
    for kind in paths:
        ordered = sorted(rtts[kind])
        p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)] if ordered else float("nan")
        print(f"{kind:<22} {median[kind]:>7.2f} "
              f"{min(gbits[kind]):>5.2f}-{max(gbits[kind]):<5.2f} "
              f"{statistics.median(retrans[kind]):>12.0f} "
              f"{statistics.median(rtts[kind]) if rtts[kind] else float('nan'):>11.3f} "
              f"{p95:>8.3f} {lost[kind]:>5}")
    print(f"\npipeline 2 hosts / plain VXLAN:      "
          f"{median['pipeline, 2 hosts'] / median['plain VXLAN, 2 hosts']:.2f}  (goal >= 0.9)")
    print(f"pipeline 2 hosts / pipeline 1 host:  "
          f"{median['pipeline, 2 hosts'] / median['pipeline, 1 host']:.2f}")
    print(f"first 3 pings across hosts right after up: {3 - first_lost} answered "
          f"({', '.join(f'{t:.2f}' for t in first_rtts)} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Makes and removes its own lab; run as root. See the module docstring.")
    parser.add_argument("--rounds", type=int, default=5, help="iperf3 runs per path (median)")
    parser.add_argument("--seconds", type=int, default=4, help="length of one iperf3 run")
    parser.add_argument("--pings", type=int, default=20, help="pings per path per round")
    parser.add_argument("--lab", default="sbbdp", help="the private lab's name")
    args = parser.parse_args()
    if shutil.which("iperf3") is None:
        sys.exit("iperf3 is missing: apt-get install -y iperf3")
    with LabRun(args.lab, 2) as run:
        print(f"lab {args.lab}: 2 hosts up in {run.up_seconds:.1f} s", flush=True)
        measure(run, args.rounds, args.seconds, args.pings)


if __name__ == "__main__":
    main()
