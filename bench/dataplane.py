"""Data-plane benchmark: iperf3 TCP through Switchboard's pipeline against a single NORMAL flow.

For each N, a topology of N containers on two networks joined by a router, with a policy
(so conntrack, routing and policy stages are all on the path) is brought up on a private
daemon. iperf3 runs between two of its containers on the same network and between two on
different networks. The baseline, in the same run and interleaved with it (each round
starts with the next kind, so each goes first as often): the same two containers'
namespaces, each with one more veth on a separate bridge on the daemon's datapath
(``detect_datapath``: kernel where the module is loaded, else userspace) that holds a single
NORMAL flow. Prints the median Gbit/s of each,
the ratios, and the flow count per container. Run as root with OVS and Consul started:

    /opt/switchboard/venv/bin/python bench/dataplane.py 10 20 40 [--seconds 4 --rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovsdb.bridge import detect_datapath  # noqa: E402
from tests.harness import Switchboard, private_switchboard, sh, teardown, wait_until  # noqa: E402

NORMAL_BRIDGE = "sbd-normal"
NORMAL_SUBNET = "10.234.9"  # .1 client, .2 server, on the NORMAL bridge
PORT = 5201  # iperf3's port; the policy opens it from network a to network b

TOPOLOGY = """name: {name}
networks:
  a: {{subnet: 10.234.0.0/24}}
  b: {{subnet: 10.234.1.0/24}}
routers:
  core: {{networks: [a, b]}}
policies:
  - {{from: a, to: b, ports: [tcp/{port}]}}
containers:
{containers}
"""


def topology_text(name: str, n: int) -> str:
    """N containers, alternately on a and b: c0 and c2 share a; c1 is on b."""
    rows = [f"  c{i}: {{networks: [{'a' if i % 2 == 0 else 'b'}]}}" for i in range(n)]
    return TOPOLOGY.format(name=name, port=PORT, containers="\n".join(rows))


def vswitchd_cpu_seconds() -> float:
    """CPU time ovs-vswitchd has used so far (user + system)."""
    pid = Path("/var/run/openvswitch/ovs-vswitchd.pid").read_text().strip()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iperf(client_ns: str, server_ip: str, seconds: int) -> tuple[float, float]:
    """(Gbit/s received, ovs-vswitchd CPU ms per GB) of one iperf3 TCP run from a namespace."""
    cpu = vswitchd_cpu_seconds()
    out = subprocess.run(
        ["ip", "netns", "exec", client_ns, "iperf3", "-c", server_ip, "-p", str(PORT),
         "-t", str(seconds), "-J"],
        capture_output=True, text=True, timeout=seconds + 30)
    cpu = vswitchd_cpu_seconds() - cpu
    data = json.loads(out.stdout or "{}")
    if "error" in data or out.returncode != 0:
        raise RuntimeError(f"iperf3 to {server_ip} failed: {data.get('error', out.stderr)}")
    received = data["end"]["sum_received"]
    return received["bits_per_second"] / 1e9, 1000 * cpu / (received["bytes"] / 1e9)


class Servers:
    """iperf3 servers this benchmark started in namespaces; stopped by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, netns: str) -> None:
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", netns, "iperf3", "-s", "-p", str(PORT)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_listening(namespaces: list[str], timeout: float = 10) -> None:
    """Wait until an iperf3 server listens on PORT in each namespace."""
    for ns in namespaces:
        if not wait_until(lambda ns=ns: sh(f"ip netns exec {ns} ss -Hltn sport = :{PORT}")
                          .stdout.strip(), timeout):
            raise RuntimeError(f"iperf3 -s did not start in {ns}")


def datapath_of(bridge: str) -> str:
    """A bridge's datapath type (OVS's empty default is the kernel's, ``system``)."""
    out = sh(f"ovs-vsctl get bridge {bridge} datapath_type", check=True).stdout
    return out.strip().strip('"') or "system"


def add_normal_legs(pairs: list[tuple[str, str]], datapath: str) -> None:
    """A bridge on ``datapath`` with one NORMAL flow and a veth into each (namespace,
    address)."""
    sh(f"ovs-vsctl --if-exists del-br {NORMAL_BRIDGE} -- add-br {NORMAL_BRIDGE} -- set bridge "
       f"{NORMAL_BRIDGE} datapath_type={datapath} fail_mode=secure", check=True)
    sh(f"ovs-ofctl -O OpenFlow13 add-flow {NORMAL_BRIDGE} actions=NORMAL", check=True)
    for i, (ns, ip) in enumerate(pairs):
        host, peer = f"sbdn{i}", f"sbdp{i}"
        sh(f"ip link add {host} type veth peer name {peer} && ip link set {peer} netns {ns} && "
           f"ip -n {ns} link set {peer} name nb0 && ip -n {ns} addr add {ip}/24 dev nb0 && "
           f"ip -n {ns} link set nb0 up && ip link set {host} up && "
           f"ovs-vsctl add-port {NORMAL_BRIDGE} {host}", check=True)


def remove_normal_legs(count: int) -> None:
    sh(f"ovs-vsctl --if-exists del-br {NORMAL_BRIDGE}")
    for i in range(count):
        sh(f"ip link del sbdn{i}")


def flow_count(sb: Switchboard) -> int:
    out = sh(f"ovs-ofctl -O OpenFlow13 --no-stats dump-flows {sb.bridge}").stdout
    return sum(1 for line in out.splitlines() if "cookie=" in line)


def measure(sb: Switchboard, n: int, seconds: int, rounds: int) -> dict[str, float]:
    name = f"sbd-bench{n}"
    path = sb.state_dir / f"{name}.yaml"
    path.write_text(topology_text(name, n))
    sb.cli("up", str(path), timeout=600)
    rows = {r["container"]: r for r in sb.status(name)["containers"]}
    client, same, routed = (f"sb-{name}-c{i}" for i in (0, 2, 1))
    servers = Servers()
    try:
        add_normal_legs([(client, f"{NORMAL_SUBNET}.1"), (same, f"{NORMAL_SUBNET}.2")],
                        datapath_of(sb.bridge))
        servers.start(same)
        servers.start(routed)
        wait_listening([same, routed])
        runs: dict[str, list[tuple[float, float]]] = {"same": [], "routed": [], "normal": []}
        targets = [("same", rows["c2"]["ip"]), ("routed", rows["c1"]["ip"]),
                   ("normal", f"{NORMAL_SUBNET}.2")]
        for round_ in range(rounds):  # interleaved, each kind first in turn: load from
            turn = round_ % len(targets)  # elsewhere and warm caches hit all three alike
            for kind, ip in targets[turn:] + targets[:turn]:
                runs[kind].append(iperf(client, ip, seconds))
        result = {kind: statistics.median(g for g, _ in values) for kind, values in runs.items()}
        result.update({f"{kind}_cpu": statistics.median(c for _, c in values)
                       for kind, values in runs.items()})
        result["flows"] = flow_count(sb)
        return result
    finally:
        servers.stop()
        remove_normal_legs(2)
        sb.cli("down", name, check=False, timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10, 20, 40])
    parser.add_argument("--seconds", type=int, default=4, help="length of one iperf3 run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each kind (median)")
    args = parser.parse_args()
    if shutil.which("iperf3") is None:
        sys.exit("iperf3 is missing: apt-get install -y iperf3")
    previous: tuple[int, int] | None = None
    with tempfile.TemporaryDirectory(prefix="sbd-bench-") as tmp:
        sb = private_switchboard(Path(tmp), prefix="sbbench-dp", bridge="sbd-br",
                                 of_port=6694)
        sb.start()
        try:
            sb.wait_ready()
            print(f"datapath: {datapath_of(sb.bridge)} (the daemon's bridge and the NORMAL "
                  f"bridge; detect_datapath: {detect_datapath()})", flush=True)
            print(f"{'N':>4} {'same net Gb/s':>14} {'routed+policy':>14} {'NORMAL Gb/s':>12} "
                  f"{'same/NORMAL':>12} {'routed/NORMAL':>14} {'vswitchd ms/GB s|r|N':>21} "
                  f"{'flows':>6} {'flows/container':>16}")
            for n in args.sizes:
                r = measure(sb, n, args.seconds, args.rounds)
                flows = int(r["flows"])
                marginal = "" if previous is None else (
                    f" (+{(flows - previous[1]) / (n - previous[0]):.1f} per added)")
                previous = (n, flows)
                cpu = f"{r['same_cpu']:.0f}|{r['routed_cpu']:.0f}|{r['normal_cpu']:.0f}"
                print(f"{n:>4} {r['same']:>14.2f} {r['routed']:>14.2f} {r['normal']:>12.2f} "
                      f"{r['same'] / r['normal']:>12.2f} {r['routed'] / r['normal']:>14.2f} "
                      f"{cpu:>21} {flows:>6} {flows / n:>16.1f}{marginal}", flush=True)
        finally:
            teardown(sb)


if __name__ == "__main__":
    main()
