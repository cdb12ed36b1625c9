"""Bring-up benchmark: `switchboard up` of N containers until all answer a ping.

Baseline in the same run: the ovs-docker way (one `ip` / `ovs-vsctl` sequence per container)
on the same OVS and the same datapath as the daemon's bridge (``detect_datapath``), with a
single NORMAL flow. Each size runs ``--rounds`` times (default 2), the two sides taking turns
to go first. Prints seconds, per-container cost and the ratio, and the daemon's peak memory,
one line per round. Run as root with OVS and Consul started:

    /opt/switchboard/venv/bin/python bench/bringup.py 50 200 400 [--rounds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from ipaddress import IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovsdb.bridge import detect_datapath  # noqa: E402
from tests.harness import private_switchboard, sh, teardown  # noqa: E402

SUBNET = IPv4Network("10.232.0.0/16")
BASE_BRIDGE = "sbb-base"


def _all_answer(addresses: list[str], timeout: float = 120) -> None:
    """Ping every address from the host (in parallel) until each has answered once."""
    pending = set(addresses)
    deadline = time.monotonic() + timeout

    def ping(address: str) -> str | None:
        ok = subprocess.run(["ping", "-c", "1", "-W", "1", address],
                            capture_output=True).returncode == 0
        return address if ok else None

    with ThreadPoolExecutor(32) as pool:
        while pending and time.monotonic() < deadline:
            pending -= {a for a in pool.map(ping, sorted(pending)) if a}
    if pending:
        raise RuntimeError(f"{len(pending)} containers never answered, e.g. {min(pending)}")


def switchboard_run(n: int, state: Path, datapath: str) -> tuple[float, int]:
    sb = private_switchboard(state, prefix="sbbench", bridge="sbb-br", of_port=6692)
    sb.start()
    try:
        containers = "\n".join(f"  c{i}: {{networks: [lan]}}" for i in range(n))
        topo = state / f"bench{n}.yaml"
        topo.write_text(f"name: bench{n}\nnetworks:\n  lan: {{subnet: {SUBNET}}}\n"
                        f"containers:\n{containers}\n")
        sb.wait_ready()  # the daemon has programmed its bridge before the clock starts
        used = sh("ovs-vsctl get bridge sbb-br datapath_type").stdout.strip().strip('"') or "system"
        if used != datapath:
            raise RuntimeError(f"the daemon's bridge is on {used}, the baseline on {datapath}")
        start = time.monotonic()
        sb.cli("up", str(topo), timeout=600)
        rows = sb.status(f"bench{n}")["containers"]
        _all_answer([r["ip"] for r in rows])
        elapsed = time.monotonic() - start
        hwm = _peak_kib(sb.proc.pid if sb.proc else 0)
        return elapsed, hwm
    finally:
        teardown(sb)


def _peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def baseline_run(n: int, datapath: str) -> float:
    """ovs-docker style: namespace, veth, address, one ovs-vsctl add-port per container."""
    hosts = list(SUBNET.hosts())
    sh(f"ovs-vsctl --if-exists del-br {BASE_BRIDGE} -- add-br {BASE_BRIDGE} -- set bridge "
       f"{BASE_BRIDGE} datapath_type={datapath} fail_mode=secure", check=True)
    sh(f"ovs-ofctl add-flow {BASE_BRIDGE} actions=NORMAL", check=True)
    sh(f"ovs-vsctl add-port {BASE_BRIDGE} sbbleg -- set interface sbbleg type=internal "
       f"&& ip addr add {hosts[-1]}/{SUBNET.prefixlen} dev sbbleg && ip link set sbbleg up",
       check=True)
    addresses = []
    try:
        start = time.monotonic()
        for i in range(n):
            ns, veth, ip = f"sbb{i}", f"sbbv{i}", str(hosts[i + 10])
            sh(f"ip netns add {ns} && ip link add {veth} type veth peer name sbbp{i} && "
               f"ip link set sbbp{i} netns {ns} && ip -n {ns} link set sbbp{i} name eth0 && "
               f"ip -n {ns} addr add {ip}/{SUBNET.prefixlen} dev eth0 && "
               f"ip -n {ns} link set eth0 up && ip -n {ns} link set lo up && "
               f"ip link set {veth} up && ovs-vsctl add-port {BASE_BRIDGE} {veth}", check=True)
            addresses.append(ip)
        _all_answer(addresses)
        return time.monotonic() - start
    finally:
        sh(f"ovs-vsctl --if-exists del-br {BASE_BRIDGE}")
        batch = "".join(f"netns del sbb{i}\n" for i in range(n))
        subprocess.run(["ip", "-force", "-batch", "-"], input=batch, text=True,
                       capture_output=True)


def main(sizes: list[int], rounds: int) -> None:
    datapath = detect_datapath()  # what the daemon gives its bridge
    print(f"datapath: {datapath} (both sides); {rounds} rounds per size, taking turns first")
    print(f"{'N':>5} {'first':>11} {'switchboard s':>14} {'ms/container':>13} "
          f"{'baseline s':>11} {'ms/container':>13} {'speed-up':>9} {'daemon peak MB':>15}")
    for n in sizes:
        for round_ in range(rounds):
            sides = ["switchboard", "baseline"] if round_ % 2 == 0 else ["baseline",
                                                                        "switchboard"]
            for side in sides:
                if side == "baseline":
                    base = baseline_run(n, datapath)
                else:
                    with tempfile.TemporaryDirectory(prefix="sbbench-") as tmp:
                        ours, hwm = switchboard_run(n, Path(tmp), datapath)
            print(f"{n:>5} {sides[0]:>11} {ours:>14.2f} {1000 * ours / n:>13.1f} "
                  f"{base:>11.2f} {1000 * base / n:>13.1f} {base / ours:>8.1f}x "
                  f"{hwm / 1024:>15.0f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[50, 200, 400])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    main(args.sizes, args.rounds)
