"""Image containers' bring-up: `switchboard up` of N image containers (Podman, in the
namespaces Switchboard makes) until every one answers a ping from the host and Podman reports
every one running, against the same image run with `podman run -d` (16 at a time) on a bridge
network of netavark, Podman's own network stack (bench/netavark.py), until every one answers
too. Each size runs ``--rounds`` times, the sides taking turns to go first. Run as root with
OVS, Consul and the demo image (scripts/build-image.sh):

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bringup import _all_answer  # noqa: E402
from bench.netavark import NetavarkPodman  # noqa: E402
from sbcore.state.store import DEFAULT_CONSUL, Store, consul_client  # noqa: E402
from tests.harness import private_switchboard, teardown  # noqa: E402

IMAGE = "localhost/switchboard/demo:latest"
OURS = "10.180.64.0/20"
THEIRS = "10.180.128.0/20"
RUN = os.getpid()
LABEL = f"switchboard.bench=sbt-img-{RUN}"


def _running(prefix: str) -> int:
    """How many of the daemon's runtime containers (``prefix``: its namespace prefix) run."""
    done = subprocess.run(["podman", "ps", "--format", "json", "--filter",
                           f"label=switchboard.prefix={prefix}"],
                          capture_output=True, text=True, timeout=120, check=False)
    rows = json.loads(done.stdout or "[]") if done.returncode == 0 else []
    return sum(1 for row in rows if row.get("State") == "running")


def switchboard_run(n: int, state: Path) -> tuple[float, float, float]:
    """Seconds from `up` until it returned, until every container answered a ping, and until
    Podman also reported every one running."""
    prefix = f"sbbi{RUN % 100000}-"
    sb = private_switchboard(state, prefix=f"sbbimg-{RUN}", bridge=f"sbbi{RUN % 100000}",
                             of_port=6694)
    sb.env["SWITCHBOARD_NETNS_PREFIX"] = prefix
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
        returned = time.monotonic() - start
        store = Store(consul_client(DEFAULT_CONSUL), sb.prefix)  # not a CLI process
        reports = store.reports(f"sbt-img-bench{n}").values()
        _all_answer([r["ip"] for report in reports for r in report["containers"]],
                    timeout=300)
        answered = time.monotonic() - start
        deadline = time.monotonic() + 300
        while _running(prefix) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"not all {n} image containers ran within 300 s")
            time.sleep(0.1)
        return returned, answered, time.monotonic() - start
    finally:
        if os.environ.get("SWITCHBOARD_BENCH_LOG"):  # the daemon's log, to see where time goes
            Path(os.environ["SWITCHBOARD_BENCH_LOG"]).write_text(sb.log.read_text())
        teardown(sb)


def baseline_run(n: int, base: Path) -> float:
    """Seconds from the first `podman run` until every container answered a ping."""
    with NetavarkPodman(base, f"sbt-img-bench-{RUN}", THEIRS, LABEL) as podman:
        start = time.monotonic()
        ids = podman.run([f"sbt-img-bench-{RUN}-{i}" for i in range(n)], IMAGE)
        _all_answer(podman.addresses(ids), timeout=300)
        return time.monotonic() - start


def main(sizes: list[int], rounds: int) -> None:
    print(f"{'N':>5} {'first':>11} {'up returned s':>14} {'pings s':>8} {'running s':>10} "
          f"{'netavark s':>11} {'ratio':>6}", flush=True)
    for n in sizes:
        for round_ in range(rounds):
            sides = ["switchboard", "netavark"] if round_ % 2 == 0 else ["netavark",
                                                                          "switchboard"]
            for side in sides:
                with tempfile.TemporaryDirectory(prefix="sbbimg-") as tmp:
                    if side == "netavark":
                        base = baseline_run(n, Path(tmp))
                    else:
                        returned, answered, ours = switchboard_run(n, Path(tmp))
            print(f"{n:>5} {sides[0]:>11} {returned:>14.2f} {answered:>8.2f} {ours:>10.2f} "
                  f"{base:>11.2f} {ours / base:>6.2f}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[20, 100])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    main(args.sizes, args.rounds)
