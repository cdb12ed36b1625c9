"""TCP between two image containers: iperf3 from one to the other on a Switchboard network
(Podman in the namespaces Switchboard makes, the userspace datapath between them), against the
same two containers on a bridge network of netavark, Podman's own network stack
(bench/netavark.py: a Linux bridge, in the kernel). Interleaved rounds, medians, the ratio.
Run as root with OVS, Consul and the iperf3 image (``scripts/build-image.sh --iperf3``):

    /opt/switchboard/venv/bin/python bench/images_tcp.py [--seconds 4 --rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bringup import _all_answer  # noqa: E402
from bench.netavark import NetavarkPodman  # noqa: E402
from tests.harness import private_switchboard, teardown  # noqa: E402

IMAGE = "localhost/switchboard/iperf3:latest"
OURS = "10.180.192.0/24"
THEIRS = "10.180.193.0/24"
RUN = os.getpid()
TOPOLOGY = f"""name: sbt-img-tcp
networks:
  lan: {{subnet: {OURS}}}
containers:
  server: {{networks: [lan], image: {IMAGE}, command: iperf3 -s}}
  client: {{networks: [lan], image: {IMAGE}, command: sleep 100000}}
"""


def iperf(exec_: Callable[..., subprocess.CompletedProcess[str]], client: str, server_ip: str,
          seconds: int) -> float:
    """Gbit/s received by one iperf3 TCP run of ``seconds`` from the container ``client``."""
    for _ in range(20):  # the server may still be starting
        done = exec_("exec", client, "iperf3", "-c", server_ip, "-t", str(seconds), "-J")
        data = json.loads(done.stdout or "{}")
        if done.returncode == 0 and "error" not in data:
            return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
        if "connect" not in str(data.get("error", done.stderr)):
            break
        subprocess.run(["sleep", "0.5"], check=False)
    raise RuntimeError(f"iperf3 to {server_ip}: {data.get('error', done.stderr)}")


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120,
                          check=False)


def main(seconds: int, rounds: int) -> None:
    runs: dict[str, list[float]] = {"switchboard": [], "netavark": []}
    with tempfile.TemporaryDirectory(prefix="sbbtcp-") as tmp:
        sb = private_switchboard(Path(tmp) / "sb", prefix=f"sbbtcp-{RUN}",
                                 bridge=f"sbbt{RUN % 100000}", of_port=6695)
        sb.state_dir.mkdir()
        sb.env["SWITCHBOARD_NETNS_PREFIX"] = f"sbbt{RUN % 100000}-"
        sb.start()
        try:
            topo = Path(tmp) / "tcp.yaml"
            topo.write_text(TOPOLOGY)
            sb.wait_ready()
            sb.cli("up", str(topo), timeout=300)
            rows = {r["container"]: r for r in sb.status("sbt-img-tcp")["containers"]}
            _all_answer([r["ip"] for r in rows.values()], timeout=120)
            label = f"switchboard.bench=sbt-img-tcp-{RUN}"
            with NetavarkPodman(Path(tmp) / "podman", f"sbt-img-tcp-{RUN}", THEIRS,
                                label) as theirs:
                names = [f"sbt-img-tcp-{RUN}-server", f"sbt-img-tcp-{RUN}-client"]
                ids = [theirs.run(names[:1], IMAGE, ("iperf3", "-s"))[0],
                       theirs.run(names[1:], IMAGE, ("sleep", "100000"))[0]]
                server_ip = theirs.addresses(ids)[0]
                _all_answer([server_ip], timeout=60)
                for round_ in range(rounds):
                    order = ["switchboard", "netavark"][::1 if round_ % 2 == 0 else -1]
                    for side in order:
                        if side == "switchboard":
                            gbit = iperf(podman, rows["client"]["netns"],
                                         rows["server"]["ip"], seconds)
                        else:
                            gbit = iperf(theirs, names[1], server_ip, seconds)
                        runs[side].append(gbit)
                        print(f"round {round_ + 1} {side:>11}: {gbit:.2f} Gbit/s", flush=True)
        finally:
            teardown(sb)
    ours, base = (statistics.median(runs[s]) for s in ("switchboard", "netavark"))
    print(f"median of {rounds}: Switchboard {ours:.2f} Gbit/s "
          f"({min(runs['switchboard']):.2f}-{max(runs['switchboard']):.2f}), netavark bridge "
          f"{base:.2f} Gbit/s ({min(runs['netavark']):.2f}-{max(runs['netavark']):.2f}), "
          f"ratio {ours / base:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    main(args.seconds, args.rounds)
