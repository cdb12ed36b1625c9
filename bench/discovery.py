"""Discovery benchmark: how soon a container's service resolves, and how soon a dead one stops.

A private daemon (own bridge, KV prefix, state; the host's Consul agent) runs a topology on
10.234.0.0/16 whose N/5 ``probeJ`` containers are up first (their own ``switchboard up``);
then one ``switchboard up`` adds N containers to it at once, each running a small TCP
listener on port 8080 and declaring one service ``sbbdisc-cI`` with a TCP check every
second. (The listener is a Perl one-liner: ``python3`` here is a pyenv shim that takes 0.4 s
to start, and a hundred of them at once would measure interpreter start-up, not discovery.)
From the moment that second ``up`` starts, three observers run side by side (the pinger and
the SRV prober are in bench/probers.py):

- reachable: a raw ICMP socket on the host pings every container until it answers;
- registered: ``/v1/agent/services`` lists the instance (polled);
- resolves: from inside the ``probeJ`` containers (UDP sockets made in their namespaces),
  an SRV query for ``sbbdisc-cI.service.consul`` to the container's nameserver (the daemon's
  forwarder on the host address) includes the instance. A name is first asked the moment
  its container answers a ping, then every 25 ms, closed-loop (again once answered; or after
  0.25 s unanswered), until an answer includes it. Each probe asks at most 5 names, 200
  questions a second: the forwarder's fair share of one source (``discovery.ratelimit``),
  which drops a source's excess (one probe asking all 100 names measured the limiter,
  0.25 s per dropped question).

So "reachable -> resolves" is what a client that asks as soon as an instance answers waits.
(Until 2026-12-01 the probes came up in the same ``up`` and asked every name from the moment
the probe itself answered a ping: a name was asked late when its probe's first reply came
after its container's, and questions asked before the instance answered only loaded the
forwarder. "reachable -> first question" shows what is left of that delay: the pinger's
and the prober's own.)

Then K instances' processes are killed at once; removal is the time until their SRV answer no
longer includes them.

The baseline, in the same run, is Consul's own floor: N instances registered straight into
the agent (passing, from as many threads as the daemon uses) until Consul's DNS answers each,
and one registration at a time until Consul's DNS answers it. It runs in the machine state
the bring-up starts from (the daemon idle, the probes up, none of the N instances), just
before it. The two printed ratios divide like by like (p95 each): from the start of the
burst until each instance resolves ("up -> resolves" over Consul's "N at once ->
resolves"), and from the moment each instance is there until it resolves ("reachable ->
resolves", from its container's first ping reply, over Consul's "N at once, registering ->
resolves", from the start of its own registration call).
Run as root with OVS and Consul started (scripts/start-services.sh):

    /opt/switchboard/venv/bin/python bench/discovery.py [-n 100] [-k 20] [--subnet CIDR]

It refuses to start when a route of the host overlaps the subnet (another run is using it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

import consul

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from probers import Pinger, SrvProber, socket_in_netns  # noqa: E402

from sbcore.model import (
    ipam,  # noqa: E402
    load_topology,  # noqa: E402
)
from tests.harness import Switchboard, private_switchboard, teardown  # noqa: E402

SUBNET = IPv4Network("10.234.0.0/16")  # the default; --subnet to change it
AGENT_CALLS = 4  # the daemon's registrations in flight at once (discovery.sync.AGENT_CALLS)
PER_PROBE = 5  # names one probe asks: 5 every 25 ms is 200/s, the forwarder's RATE per source
TOPOLOGY = "sbbdisc"
CHECK_INTERVAL = "1s"
LISTENER = ("perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 8080, "
            "Listen => 64, ReuseAddr => 1) or die $!; while ($c = $s->accept) { close $c }'")


# --------------------------------------------------------------------------- topology


def probe_count(n: int) -> int:
    return -(-n // PER_PROBE)


def topology_text(n: int, subnet: IPv4Network = SUBNET, instances: bool = True) -> str:
    """The topology: its probes, and (``instances``) the N containers whose names they ask."""
    probes = "".join(f"  probe{j}: {{networks: [lan]}}\n" for j in range(probe_count(n)))
    containers = "" if not instances else "".join(
        f"  c{i}:\n    networks: [lan]\n    command: {json.dumps(LISTENER)}\n"
        f"    services: [{{name: sbbdisc-c{i}, port: 8080, "
        f"check: {{tcp: 8080, interval: {CHECK_INTERVAL}}}}}]\n"
        for i in range(n)
    )
    return (f"name: {TOPOLOGY}\nnetworks:\n  lan: {{subnet: {subnet}}}\ncontainers:\n"
            f"{probes}{containers}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


# --------------------------------------------------------------------------- waiting


def watch_until(
    done: Callable[[], bool], step: Callable[[], None], timeout: float, what: Callable[[], str]
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"benchmark timed out: {what()}")
        step()


# --------------------------------------------------------------------------- the run


def probes_up(sb: Switchboard, n: int, state: Path, subnet: IPv4Network) -> None:
    """The topology with its probes only: they are up before the instances and ask from the
    moment each instance answers."""
    topo = state / "discovery.yaml"
    topo.write_text(topology_text(n, subnet, instances=False))
    sb.cli("up", str(topo), "--timeout", "120")


def bring_up(
    sb: Switchboard, n: int, state: Path, subnet: IPv4Network
) -> tuple[dict[str, list[float]], SrvProber, dict[str, str]]:
    """Figures of the bring-up, the prober (for the removal) and container -> address. The
    probes are up (:func:`probes_up`)."""
    text = topology_text(n, subnet)
    topo = state / "discovery.yaml"
    topo.write_text(text)
    topology = load_topology(text)
    allocation = ipam.allocate(topology)  # what the daemon will use: IPAM is deterministic
    address = {f"c{i}": str(allocation[(f"c{i}", "lan")]) for i in range(n)}
    nameserver = str(ipam.host_leg_address(topology, "lan"))
    probes = [f"probe{j}" for j in range(probe_count(n))]
    pinger = Pinger(list(address.values()))
    start = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "switchboard.cli", "up", str(topo),
                           "--timeout", "600"], env=sb.env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    try:
        return _observe(sb, n, up, start, pinger, address, nameserver, probes)
    finally:  # let `up` finish even on failure: `down` before the first report is a no-op
        try:
            up.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()


def _observe(
    sb: Switchboard, n: int, up: subprocess.Popen[bytes], start: float, pinger: Pinger,
    address: dict[str, str], nameserver: str, probes: list[str],
) -> tuple[dict[str, list[float]], SrvProber, dict[str, str]]:
    name_of = {f"sbbdisc-{c}": c for c in address}
    agent = consul.Consul()
    registered: dict[str, float] = {}
    resolved: dict[str, float] = {}
    threading.Thread(target=pinger.run, daemon=True).start()

    def poll_registrations() -> None:
        while len(registered) < n and time.monotonic() - start < 300:
            now = time.monotonic()
            for entry in agent.agent.services().values():
                container = name_of.get(entry["Service"])
                if container and container not in registered:
                    registered[container] = now
            time.sleep(0.02)

    threading.Thread(target=poll_registrations, daemon=True).start()
    sockets = {probe: socket_in_netns(f"sb-{TOPOLOGY}-{probe}") for probe in probes}
    asker = {name: probes[i // PER_PROBE] for i, name in enumerate(name_of)}
    prober = SrvProber((nameserver, 53), {name: sockets[p] for name, p in asker.items()})

    def probe_round() -> None:  # a name is asked from the moment its container answers
        pending = {name: address[c] for name, c in name_of.items()
                   if c not in resolved and address[c] in pinger.seen}
        if not pending:
            time.sleep(0.001)
            return
        answers = prober.ask(pending)
        for name, found in answers.items():
            if pending[name] in found:
                resolved[name_of[name]] = prober.answered[name]

    watch_until(lambda: len(resolved) == n, probe_round, 120, lambda: (
        f"{len(pinger.seen)} reachable, {len(registered)} registered, {len(resolved)} "
        f"resolve, of {n}\n--- daemon log ---\n{sb.log_tail()}"))
    out = up.communicate(timeout=600)[0]
    if up.returncode != 0:
        raise RuntimeError(f"switchboard up failed: {out.decode()}")
    pinger.stop.set()
    reachable = {c: pinger.seen[ip] for c, ip in address.items()}
    return {
        "up -> reachable": [reachable[c] - start for c in address],
        "up -> registered": [registered[c] - start for c in address],
        "up -> resolves": [resolved[c] - start for c in address],
        "reachable -> registered": [registered[c] - reachable[c] for c in address],
        "reachable -> resolves": [resolved[c] - reachable[c] for c in address],
        "reachable -> first question": [prober.first_asked[f"sbbdisc-{c}"] - reachable[c]
                                        for c in address],
        "question -> answer": prober.latencies,
    }, prober, address


def removal(sb: Switchboard, prober: SrvProber, address: dict[str, str], k: int) -> list[float]:
    """Kill k instances' processes at once; seconds until each leaves its SRV answer."""
    victims = sorted(address, key=lambda c: int(c[1:]))[:k]
    killed = {}
    for c in victims:
        pid = int((sb.state_dir / "pids" / TOPOLOGY / f"{c}.pid").read_text().split()[0])
        os.killpg(pid, signal.SIGKILL)
        killed[c] = time.monotonic()
    gone: dict[str, float] = {}

    def probe_round() -> None:
        pending = {f"sbbdisc-{c}": address[c] for c in victims if c not in gone}
        answers = prober.ask(pending)
        for name, found in answers.items():
            if pending[name] not in found:
                gone[name.removeprefix("sbbdisc-")] = prober.answered[name]

    watch_until(lambda: len(gone) == k, probe_round, 60,
                lambda: f"{len(gone)} of {k} gone from DNS")
    return [gone[c] - killed[c] for c in victims]


def consul_floor(n: int, single: int = 10) -> dict[str, list[float]]:
    """Consul alone: seconds from registering (N at once, then one at a time) until Consul's
    DNS answers each instance: for the N, from the start of the burst and from the start of
    each one's own registration call. TTL checks registered passing: nothing turns them
    critical."""
    agent = consul.Consul()
    prober = SrvProber(("127.0.0.1", 8600), default=socket.socket(socket.AF_INET,
                                                                  socket.SOCK_DGRAM))
    names = [f"sbbdisc-floor-{os.getpid()}-{i}" for i in range(n)]
    asked: dict[str, float] = {}  # name -> when its registration call started

    def register(name: str) -> None:
        asked[name] = time.monotonic()
        agent.agent.service.register(name, service_id=name, address="127.0.0.1", port=8080,
                                     check={"TTL": "600s", "Status": "passing"})

    def resolved_after(pending: list[str], start: float) -> dict[str, float]:
        seen: dict[str, float] = {}

        def step() -> None:
            answers = prober.ask({name: "" for name in pending if name not in seen})
            seen.update({name: prober.answered[name] - start
                         for name, found in answers.items() if found})

        watch_until(lambda: len(seen) == len(pending), step, 120,
                    lambda: f"Consul's DNS answers {len(seen)} of {len(pending)}")
        return seen

    try:
        start = time.monotonic()
        workers = [threading.Thread(target=lambda part=names[i::AGENT_CALLS]: [
            register(name) for name in part]) for i in range(min(AGENT_CALLS, n))]
        for worker in workers:
            worker.start()
        burst = resolved_after(names, start)
        for worker in workers:
            worker.join()
        own = [start + burst[name] - asked[name] for name in names]
        one = []
        for name in names[:single]:
            agent.agent.service.deregister(name)
        for name in names[:single]:
            start = time.monotonic()
            register(name)
            one.append(resolved_after([name], start)[name])
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                agent.agent.service.deregister(name)
    return {"N at once -> resolves": list(burst.values()),
            "N at once, registering -> resolves": own, "one -> resolves": one}


def report(label: str, values: list[float]) -> None:
    print(f"{label:<34} median {statistics.median(values) * 1000:7.0f} ms   "
          f"p95 {percentile(values, 95) * 1000:7.0f} ms   max {max(values) * 1000:7.0f} ms"
          f"   (n={len(values)})", flush=True)


def overlapping_routes(subnet: IPv4Network) -> list[str]:
    """Routes of the host's main table that overlap ``subnet``."""
    out = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        dest = line.split()[0]
        if dest != "default" and IPv4Network(dest, strict=False).overlaps(subnet):
            found.append(line)
    return found


def main(n: int, k: int, subnet: IPv4Network, log: Path | None = None) -> None:
    busy = overlapping_routes(subnet)
    if busy:
        sys.exit(f"{subnet} is in use on this host ({busy[0]}); pick another with --subnet")
    with tempfile.TemporaryDirectory(prefix="sbbdisc-") as tmp:
        state = Path(tmp)
        sb = private_switchboard(state, prefix=f"sbbdisc-{os.getpid()}", bridge="sbbd-br",
                                 of_port=6694)
        # No periodic pass during the run: it would restart the killed commands.
        sb.env["SWITCHBOARD_RESYNC_SECONDS"] = "600"
        sb.start()
        try:
            sb.wait_ready()
            probes_up(sb, n, state, subnet)
            floor = consul_floor(n)  # the same machine state as the bring-up's start
            figures, prober, address = bring_up(sb, n, state, subnet)
            print(f"{n} containers, one service each, TCP check every {CHECK_INTERVAL}:")
            for label, values in figures.items():
                report(label, values)
            print(f"Consul's floor, run just before ({n} registered straight into the agent "
                  f"at once from {AGENT_CALLS} threads; then one at a time):")
            for label, values in floor.items():
                report(label, values)
            ours = percentile(figures["up -> resolves"], 95)
            theirs = percentile(floor["N at once -> resolves"], 95)
            print(f"from the start of the burst: up -> resolves p95 / Consul's N at once -> "
                  f"resolves p95: {ours / theirs:.2f}")
            ours = percentile(figures["reachable -> resolves"], 95)
            theirs = percentile(floor["N at once, registering -> resolves"], 95)
            print(f"from each instance's start (its container answers / its registration "
                  f"call): reachable -> resolves p95 / Consul's N at once, registering -> "
                  f"resolves p95: {ours / theirs:.2f}")
            gone = removal(sb, prober, address, k)
            print(f"{k} instances killed at once:")
            report("kill -> gone from DNS", gone)
        finally:
            if sb.proc is not None and sb.proc.poll() is None:
                down = sb.cli("down", TOPOLOGY, check=False, timeout=300)
                if down.returncode != 0:
                    print(f"switchboard down {TOPOLOGY} failed:\n{down.stdout}{down.stderr}",
                          file=sys.stderr)
            if log is not None:
                shutil.copyfile(sb.log, log)
            teardown(sb)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="containers (one service each)")
    parser.add_argument("-k", type=int, default=20, help="instances killed for the removal")
    parser.add_argument("--subnet", type=IPv4Network, default=SUBNET)
    parser.add_argument("--log", type=Path, help="keep a copy of the daemon's log here")
    args = parser.parse_args()
    main(args.n, min(args.k, args.n), args.subnet, args.log)
