"""Steady-state plumbing pass: what one reconcile pass costs once N containers are up.

Brings up N containers with a private daemon, then times, in this process, the plumbing
pass the daemon runs on every resync (observe, diff, and nothing to apply). The baseline in
the same run is the pass as it was before issue 14: OVSDB ports, namespace names, pid files
and resolv.conf files only, no look at the interfaces inside the namespaces. Run as root with
OVS and Consul started:

    /opt/switchboard/venv/bin/python bench/steady_pass.py 400
"""

from __future__ import annotations

import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovsdb.bridge import Bridge  # noqa: E402
from plumbing import resolvconf  # noqa: E402
from plumbing.plan import plan_plumbing  # noqa: E402
from plumbing.plumber import Plumber  # noqa: E402
from sbcore.plan.hostplan import TopologyPlan, plan_topology  # noqa: E402
from sbcore.state.store import Store, consul_client  # noqa: E402
from tests.harness import private_switchboard, teardown  # noqa: E402

SUBNET = IPv4Network("10.238.0.0/16")
ROUNDS = 15


def _median_ms(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    fn()  # warm up (IDL replica, page cache)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _ports_only_pass(plumber: Plumber, plans: list[TopologyPlan]) -> object:
    """The pass before issue 14: no observation of the interfaces inside namespaces."""
    seen = plumber._observe(plans, interfaces=False)  # noqa: SLF001 - the baseline
    return plan_plumbing(
        plans, seen.ports, seen.netns, seen.running, observed_commands=seen.commands,
        stale_netns=seen.stale,
        wanted_resolv=resolvconf.wanted_files(plans, resolvconf.host_text()),
        observed_resolv=seen.resolv,
    )


def run(n: int, state: Path) -> tuple[float, float]:
    sb = private_switchboard(state, prefix="sbpass", bridge="sbp-br", of_port=6697)
    sb.start()
    try:
        sb.wait_ready()
        containers = "\n".join(f"  c{i}: {{networks: [lan]}}" for i in range(n))
        topo = state / f"pass{n}.yaml"
        topo.write_text(f"name: pass{n}\nnetworks:\n  lan: {{subnet: {SUBNET}}}\n"
                        f"containers:\n{containers}\n")
        sb.cli("up", str(topo), timeout=600)
        store = Store(consul_client("http://127.0.0.1:8500"), "sbpass")
        plans = [plan_topology(s.topology, s.allocation) for s in store.applied().values()]
        plumber = Plumber(Bridge("sbp-br"), state)
        writes = plumber.bridge.writes
        full = _median_ms(lambda: plumber.reconcile(plans))
        before = _median_ms(lambda: _ports_only_pass(plumber, plans))
        assert plumber.bridge.writes == writes, "a steady-state pass wrote to OVSDB"
        if os.environ.get("BENCH_PROFILE"):
            cProfile.runctx("plumber.reconcile(plans)", globals(), locals(), "/tmp/pass.prof")
            pstats.Stats("/tmp/pass.prof").sort_stats("cumtime").print_stats(25)
        return full, before
    finally:
        teardown(sb)


def main(sizes: list[int]) -> None:
    print(f"{'N':>5} {'pass ms':>9} {'ports-only ms':>14} {'ratio':>6} {'per container':>14}")
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="sbpass-") as tmp:
            full, before = run(n, Path(tmp))
        print(f"{n:>5} {full:>9.1f} {before:>14.1f} {full / before:>6.2f} "
              f"{1000 * full / n:>11.0f} us", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [400])
