"""Failover benchmark: an instance's process dies; how long do new connections to the VIP fail?

Two paths, measured in the same run, on the same VIP, in alternating rounds:

- exit: the instance's server is the container's command. Killing it (SIGKILL to its process
  group) is seen by the daemon at once (plumbing.exitwatch): the instance leaves the VIP and
  is put in maintenance in Consul without waiting for its check (controller.daemon.exits).
- check: the server is a child of the command (``server & exec sleep infinity``), as in
  tests/integration/host/test_vip.py. Killing the server leaves the command running, so only the
  instance's TCP check (every 1 s) notices: the path every failure took before.

A client container loops on new connections to vip:80 (one GET each, 1 s timeout). The
failover time of a kill runs from the kill to the end of the last request that started
after it and failed (0 when none did). The exit path's instance restarts (``restart:
always``) and gets connections again once its check passes: requests from then on are the
new process's, and are not counted. Goal: exit p95 < 100 ms.

Run as root with OVS and Consul started:

    /opt/switchboard/venv/bin/python bench/failover.py [--kills 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import consul  # noqa: E402

from tests.harness import private_switchboard, teardown, wait_until  # noqa: E402
from tests.integration.host.test_vip import (  # noqa: E402
    SERVER,
    SERVER_FILE,
    ServiceLab,
    answers,
    gets_of,
    http_gets,
    server_pids,
    start_gets,
)

TOPO, SERVICE = "sbbench-fo", "sbbench-foweb"
FRONT, BACK = "10.246.1", "10.246.2"
VIP = f"{BACK}.100"
CLIENT_NS = f"sb-{TOPO}-client"
EXIT = ("ex-1", "ex-2")  # the server is the command
CHECK = ("ck-1", "ck-2")  # the server is the command's child
INSTANCES = EXIT + CHECK


def topology(server: Path) -> str:
    def instance(name: str, i: int) -> str:
        command = (f"python3 {server} {name} 8080" if name in EXIT
                   else f"python3 {server} {name} 8080 & exec sleep infinity")
        return f"""
  {name}:
    networks: {{back: {{ip: {BACK}.1{i}}}}}
    command: "{command}"
    services: [{{name: {SERVICE}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]"""
    return f"""
name: {TOPO}
networks:
  front: {{subnet: {FRONT}.0/24}}
  back: {{subnet: {BACK}.0/24}}
routers:
  core: {{networks: [front, back]}}
containers:
  client: {{networks: {{front: {{ip: {FRONT}.10}}}}}}{"".join(
        instance(n, i) for i, n in enumerate(INSTANCES, start=1))}
services:
  {SERVICE}: {{vip: {VIP}, port: 80}}
"""


def passing() -> set[str]:
    _, entries = consul.Consul().health.service(SERVICE, passing=True)
    return {e["Service"]["Meta"].get("switchboard-container") for e in entries}


def critical_after(victim: str, since: float, found: list[float]) -> None:
    """Append the seconds from ``since`` until Consul stops showing ``victim`` passing."""
    deadline = since + 5
    while time.monotonic() < deadline:
        if victim not in passing():
            found.append(time.monotonic() - since)
            return
        time.sleep(0.005)


def one_kill(sb, lab: ServiceLab, victim: str
             ) -> tuple[float, float | None, list[tuple[float, float, str]]]:
    """Kill ``victim``'s server under load; (failover seconds, seconds until Consul saw it,
    the failed requests: start and end after the kill, answer)."""
    gets = start_gets(CLIENT_NS, VIP, 80, seconds=3.5)
    time.sleep(1.0)
    consul_seen: list[float] = []
    killed_at = time.monotonic()
    if victim in EXIT:
        pid = int((sb.state_dir / "pids" / TOPO / f"{victim}.pid").read_text().split()[0])
        assert pid > 1
        os.killpg(pid, signal.SIGKILL)
    else:
        for pid in server_pids(lab.netns(victim)):
            os.kill(pid, signal.SIGKILL)
    watcher = threading.Thread(target=critical_after, args=(victim, killed_at, consul_seen))
    watcher.start()
    results = gets_of(gets)
    watcher.join()
    # an answer from the victim after the kill comes from its restarted command: not a failure
    # until its restarted command answers again (exit path): what comes after is that new
    # process's start-up, not the failover
    back = min((start for start, _, answer in results
                if start >= killed_at and answer == victim), default=float("inf"))
    bad = [(start - killed_at, end - killed_at, answer) for start, end, answer in results
           if killed_at <= start < back and answer not in INSTANCES]
    return max((end for _, end, _ in bad), default=0.0), (consul_seen or [None])[0], bad


def all_back(lab: ServiceLab) -> None:
    for name in CHECK:
        if not server_pids(lab.netns(name)):
            lab.revive(name)
    assert wait_until(lambda: passing() == set(INSTANCES), 30, interval=0.1), passing()
    assert wait_until(
        lambda: set(answers(http_gets(CLIENT_NS, VIP, 80, 40))) == set(INSTANCES), 30)


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (f"{name:<28} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   "
            f"max {ms[-1]:7.1f} ms   (n={len(ms)})")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kills per path")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="sbbench-fo-"))
    sb = private_switchboard(state, prefix="sbbench-fo", bridge="sbbfo", of_port=16993)
    server = state / SERVER_FILE
    server.write_text(SERVER)
    lab = ServiceLab(sb, TOPO, SERVICE, VIP, INSTANCES, server)
    sb.start()
    try:
        sb.wait_ready()
        sb.up(state, topology(server))
        times: dict[str, list[float]] = {"exit": [], "check": []}
        consul_times: dict[str, list[float]] = {"exit": [], "check": []}
        for i in range(args.kills):
            for path, victims in (("exit", EXIT), ("check", CHECK)):
                all_back(lab)
                took, seen, bad = one_kill(sb, lab, victims[i % len(victims)])
                times[path].append(took)
                if seen is not None:
                    consul_times[path].append(seen)
                print(f"round {i + 1} {path:<5} failover {took * 1000:7.1f} ms  Consul "
                      f"{'-' if seen is None else f'{seen * 1000:.0f} ms'}  failed requests "
                      f"{len(bad)}" + (f", the last from {bad[-1][0] * 1000:.0f} to "
                                       f"{bad[-1][1] * 1000:.0f} ms: {bad[-1][2]}" if bad else ""),
                      flush=True)
        print()
        print(summary("exit: failover", times["exit"]))
        print(summary("check: failover", times["check"]))
        print(summary("exit: Consul not passing", consul_times["exit"]))
        print(summary("check: Consul not passing", consul_times["check"]))
        ratio = p95(times["check"]) / max(p95(times["exit"]), 1e-3)
        print(f"p95 check / exit: {ratio:.1f}x; goal exit p95 < 100 ms: "
              f"{'met' if p95(times['exit']) < 0.1 else 'NOT met'}")
    finally:
        lab.stop()
        teardown(sb)


if __name__ == "__main__":
    main()
