"""Cluster bring-up benchmark: N containers spread over 3 lab hosts against N on a 1-host lab.

For each lab (a private 3-host lab and a private 1-host lab, made and removed in turn, also
on failure), one topology of N containers on one network, none pinned, is applied from h1
with `switchboard up` (which places them on the ready hosts, least loaded first). The clock
runs from the start of `up` until every container answers two pingers: on the 3-host lab,
the host that runs it and the next one (h1's containers from h2, h2's from h3, h3's from
h1); on the 1-host lab, the same pattern with three pingers on h1 (container cI is pinged
by pinger I mod 3 and the next one): 2N (container, pinger) pairs from three raw ICMP
sockets on both sides. ``--rounds`` (default 2) repeats the pair, the 3-host lab first in
even rounds and the 1-host lab first in odd ones, so neither side always runs right after
the other's teardown. Prints the seconds of each lab, when `up` returned, the placement, and
the ratio of each round.

All the simulated hosts share one kernel, and its ARP table's limits are global (not per
namespace): 1000 containers pinged from two hosts need about 4000 entries (hosts' and
containers'), past the default ``gc_thresh3`` of 1024 ("neighbor table overflow"). So the run
raises ``net.ipv4.neigh.default.gc_thresh1..3`` to fit and puts the old values back at the
end. Run as root:

    /opt/switchboard/venv/bin/python bench/cluster_bringup.py [--containers 1000 --rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labrun import LabRun, percentile, raw_icmp_socket  # noqa: E402

from plumbing.forwarding import echo_request, reply_ident  # noqa: E402

TOPOLOGY = "bup"
SUBNET = "10.232.0.0/16"
PINGERS = 3  # raw ICMP sockets on either lab: one per host of the 3-host lab


def topology_text(n: int) -> str:
    rows = "".join(f"  c{i}: {{networks: [lan]}}\n" for i in range(n))
    return f"name: {TOPOLOGY}\nnetworks:\n  lan: {{subnet: {SUBNET}}}\ncontainers:\n{rows}"


class HostPinger:
    """Pings a set of addresses from inside one host's namespace until each has answered."""

    def __init__(self, netns: str, addresses: set[str], ident: int) -> None:
        self.sock = raw_icmp_socket(netns)
        self.sock.settimeout(0.05)
        self.pending = set(addresses)
        self.ident = ident
        self.lock = threading.Lock()
        self.answered: dict[str, float] = {}
        self._queue: list[str] = []

    def send_some(self, seq: int, count: int) -> None:
        """One echo request to each of the next ``count`` pending addresses (round robin)."""
        packet = echo_request(self.ident, seq)
        with self.lock:
            if not self.pending:
                return
            if not self._queue:
                self._queue = sorted(self.pending)
            batch, self._queue = self._queue[:count], self._queue[count:]
            batch = [a for a in batch if a in self.pending]
        for address in batch:
            with contextlib.suppress(OSError):  # no route yet, or a full socket buffer
                self.sock.sendto(packet, socket.MSG_DONTWAIT, (address, 0))

    def receive(self, stop: threading.Event) -> None:
        while not stop.is_set() and self.pending:
            try:
                data, (address, _) = self.sock.recvfrom(2048)
            except OSError:
                continue
            if reply_ident(data) == self.ident:
                with self.lock:
                    if address in self.pending:
                        self.pending.discard(address)
                        self.answered[address] = time.monotonic()


def all_answer(pingers: list[HostPinger], timeout: float, window: int = 32,
               every: float = 0.01) -> None:
    """Ping until every pinger's addresses answered: ``window`` requests per pinger every
    ``every`` seconds, cycling over what is pending. (Paced like bench/bringup.py's 32
    parallel pings: a burst of a thousand requests at once, repeated, swamps the userspace
    datapath's upcalls and measures that instead: 26 s until the first answer here.)"""
    stop = threading.Event()
    for p in pingers:
        threading.Thread(target=p.receive, args=(stop,), daemon=True).start()
    deadline = time.monotonic() + timeout
    seq = 0
    try:
        while any(p.pending for p in pingers):
            if time.monotonic() > deadline:
                left = sum(len(p.pending) for p in pingers)
                raise RuntimeError(f"{left} (container, host) pairs never answered a ping")
            seq = (seq + 1) & 0xFFFF
            for p in pingers:
                p.send_some(seq, window)
            time.sleep(every)
    finally:
        stop.set()


def bring_up(run: LabRun, n: int) -> dict[str, object]:
    """Seconds from `up` until every container answers; when `up` returned; placement."""
    with tempfile.TemporaryDirectory(prefix="sbbench-bup-") as tmp:
        path = Path(tmp) / f"{TOPOLOGY}.yaml"
        path.write_text(topology_text(n))
        time.sleep(2)  # let the daemons settle after `lab up` before the clock starts
        start = time.monotonic()
        run.sb("h1", "up", str(path), "--timeout", "1800", timeout=1900)
        returned = time.monotonic() - start
        rows = run.status(TOPOLOGY)
        names = [h.name for h in run.hosts]
        targets: list[set[str]] = [set() for _ in range(PINGERS)]
        for container, row in rows.items():
            own = (names.index(row["host"]) if len(names) == PINGERS
                   else int(container.removeprefix("c")) % PINGERS)
            targets[own].add(row["ip"])
            targets[(own + 1) % PINGERS].add(row["ip"])  # and from the next pinger
        pingers = [HostPinger(run.host(names[k % len(names)]).netns, targets[k],
                              (os.getpid() + k) & 0xFFFF) for k in range(PINGERS)]
        pinging = time.monotonic()
        all_answer(pingers, timeout=600)
        elapsed = time.monotonic() - start
    waits = sorted(t - pinging for p in pingers for t in p.answered.values())
    placed = Counter(row["host"] for row in rows.values())
    return {"seconds": elapsed, "up": returned, "placed": dict(sorted(placed.items())),
            "pairs": sum(len(t) for t in targets),
            "answers": [percentile(waits, q) for q in (50, 90, 99)]}


NEIGH = Path("/proc/sys/net/ipv4/neigh/default")


@contextlib.contextmanager
def arp_table_room(entries: int) -> Iterator[None]:
    """Raise the kernel's ARP table limits to hold ``entries``; the old values back after."""
    old = {k: int((NEIGH / k).read_text()) for k in ("gc_thresh1", "gc_thresh2", "gc_thresh3")}
    wanted = {"gc_thresh1": old["gc_thresh1"], "gc_thresh2": max(old["gc_thresh2"], entries),
              "gc_thresh3": max(old["gc_thresh3"], 2 * entries)}
    try:
        for key in ("gc_thresh3", "gc_thresh2"):
            (NEIGH / key).write_text(str(wanted[key]))
        yield
    finally:
        for key in ("gc_thresh2", "gc_thresh3"):
            (NEIGH / key).write_text(str(old[key]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Makes and removes its own labs; run as root. See the module docstring.")
    parser.add_argument("--containers", type=int, default=1000, help="N (default 1000)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="pairs of runs, each lab first in turn (default 2)")
    parser.add_argument("--lab", default="sbbup", help="prefix of the private labs' names")
    args = parser.parse_args()
    n = args.containers
    ratios = []
    for round_ in range(args.rounds):
        order = (3, 1) if round_ % 2 == 0 else (1, 3)
        results = {}
        for hosts in order:
            t0 = time.monotonic()
            with arp_table_room(4 * n + 1024), LabRun(f"{args.lab}{hosts}", hosts) as run:
                results[hosts] = r = bring_up(run, n)
                print(f"round {round_ + 1}, {hosts} host(s): all {n} answer after "
                      f"{r['seconds']:.2f} s (`up` returned after {r['up']:.2f} s; placed "
                      f"{r['placed']}; {r['pairs']} (container, pinger) pings, answered "
                      "p50/p90/p99 " + "/".join(f"{a:.2f}" for a in r["answers"])
                      + " s after pinging began)", flush=True)
            print(f"  (lab up {run.up_seconds:.1f} s; whole lab, up to down, "
                  f"{time.monotonic() - t0:.0f} s)", flush=True)
        ratios.append((order[0], results[3], results[1]))
    print(f"\n{'first':>5} {'containers':>10} {'3 hosts s':>10} {'up returned':>12} "
          f"{'1 host s':>9} {'up returned':>12} {'1 host / 3 hosts':>17}")
    for first, spread, single in ratios:
        print(f"{first:>4}h {n:>10} {spread['seconds']:>10.2f} {spread['up']:>12.2f} "
              f"{single['seconds']:>9.2f} {single['up']:>12.2f} "
              f"{single['seconds'] / spread['seconds']:>16.2f}x")


if __name__ == "__main__":
    main()
