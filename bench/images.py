"""Image containers' bring-up: `switchboard up` of N image containers (Podman, in the
namespaces Switchboard makes) until every one answers a ping from the host, against the
same image run with `podman run -d` on a bridge network of Podman's own, made for the run
(Podman's CNI backend here: netavark is not installed), until every one answers too. The
baseline starts 16 containers at a time, as the daemon does. Each size runs ``--rounds``
times, the sides taking turns to go first. Run as root with OVS, Consul and the demo image
(scripts/build-image.sh):

    /opt/switchboard/venv/bin/python bench/images.py 20 100 [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bringup import _all_answer  # noqa: E402
from tests.harness import private_switchboard, sh, teardown  # noqa: E402

IMAGE = "localhost/switchboard/demo:latest"
OURS = "10.180.64.0/20"
THEIRS = "10.180.128.0/20"
RUN = os.getpid()
LABEL = f"switchboard.bench=sbt-img-{RUN}"


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)


def switchboard_run(n: int, state: Path) -> float:
    sb = private_switchboard(state, prefix=f"sbbimg-{RUN}", bridge=f"sbbi{RUN % 100000}",
                             of_port=6694)
    sb.env["SWITCHBOARD_NETNS_PREFIX"] = f"sbbi{RUN % 100000}-"
    sb.start()
    try:
        containers = "\n".join(f"  c{i}: {{networks: [lan], image: {IMAGE}}}"
                               for i in range(n))
        topo = state / f"img{n}.yaml"
        topo.write_text(f"name: sbt-img-bench{n}\nnetworks:\n  lan: {{subnet: {OURS}}}\n"
                        f"containers:\n{containers}\n")
        sb.wait_ready()
        start = time.monotonic()
        sb.cli("up", str(topo), timeout=600)
        rows = sb.status(f"sbt-img-bench{n}")["containers"]
        _all_answer([r["ip"] for r in rows], timeout=300)
        return time.monotonic() - start
    finally:
        teardown(sb)


FORWARD_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")


# What iptables-restore needs to leave the filter and nat tables empty (as on a host without
# rules, where iptables-save prints nothing).
NO_RULES = "".join(f"*{table}\n" + "".join(f":{chain} ACCEPT [0:0]\n" for chain in chains)
                   + "COMMIT\n" for table, chains in (
                       ("filter", ("INPUT", "FORWARD", "OUTPUT")),
                       ("nat", ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"))))


def _host_firewall() -> tuple[str, str]:
    """The host's IPv4 forwarding flag and its iptables rules (without iptables-save's
    comments), to put back after Podman's bridge: its CNI plugins turn forwarding on and add
    chains of their own."""
    rules = sh("iptables-save").stdout
    return FORWARD_SYSCTL.read_text(), "".join(
        line + "\n" for line in rules.splitlines() if not line.startswith("#"))


def _restore_host_firewall(saved: tuple[str, str]) -> None:
    forwarding, rules = saved
    if _host_firewall()[1] != rules:
        subprocess.run(["iptables-restore"], input=rules or NO_RULES, text=True, check=False)
    FORWARD_SYSCTL.write_text(forwarding)


def baseline_run(n: int) -> float:
    net = f"sbt-img-bench-{RUN}"
    saved = _host_firewall()
    made = podman("network", "create", "--subnet", THEIRS, "--disable-dns", net)
    if made.returncode != 0:
        raise RuntimeError(f"podman network create: {made.stderr}")
    try:
        start = time.monotonic()

        def run(i: int) -> str:
            done = podman("run", "-d", "--rm", "--label", LABEL, "--name",
                          f"sbt-img-bench-{RUN}-{i}", "--network", net, IMAGE)
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
            return done.stdout.strip()
        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(run, range(n)))
        found = json.loads(podman("inspect", *ids).stdout)
        addresses = [c["NetworkSettings"]["Networks"][net]["IPAddress"] for c in found]
        _all_answer(addresses, timeout=300)
        return time.monotonic() - start
    finally:
        left = podman("ps", "-aq", "--filter", f"label={LABEL}").stdout.split()
        if left:
            podman("rm", "--force", "--time", "0", *left)
        info = podman("network", "inspect", net).stdout
        bridge = (json.loads(info or "[{}]")[0].get("network_interface") or "") if info else ""
        podman("network", "rm", "--force", net)
        if bridge:
            sh(f"ip link del {bridge}")
        _restore_host_firewall(saved)


def main(sizes: list[int], rounds: int) -> None:
    print(f"{'N':>5} {'first':>11} {'switchboard s':>14} {'podman bridge s':>16} "
          f"{'ratio':>7}")
    for n in sizes:
        for round_ in range(rounds):
            sides = ["switchboard", "podman"] if round_ % 2 == 0 else ["podman", "switchboard"]
            for side in sides:
                if side == "podman":
                    base = baseline_run(n)
                else:
                    with tempfile.TemporaryDirectory(prefix="sbbimg-") as tmp:
                        ours = switchboard_run(n, Path(tmp))
            print(f"{n:>5} {sides[0]:>11} {ours:>14.2f} {base:>16.2f} {ours / base:>7.2f}",
                  flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[20, 100])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    main(args.sizes, args.rounds)
