"""Apply and remove topologies: the one path both the CLI and the Python API take.

Admission is one atomic step on Consul (switchboard.store): read everything, check the
topology against what is applied and allocate its addresses (keeping earlier ones), stage
it, then commit with a check-and-set on what was read; when another admission came in
between, read and decide again. Then wait until the host's daemon reports it converged.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any

from switchboard import ipam
from switchboard.admission import check_against_applied
from switchboard.desired import DesiredState, digest_of, topology_objects
from switchboard.model import Topology
from switchboard.store import Store

Reports = dict[tuple[str, str], dict[str, Any]]
Builder = Callable[[DesiredState], Topology]
ATTEMPTS = 100  # admissions lost to concurrent writers before giving up


class ApplyError(RuntimeError):
    """The host did not converge (the message says why and what to do)."""


def admit(store: Store, build: Topology | Builder, source: str) -> tuple[Topology, str]:
    """Store a topology as desired state in one atomic step; its digest.

    ``build`` is the topology, or a function that makes it from the state read (so that
    what it picks, such as a free subnet, is decided atomically with the rest). Raises
    TopologyError, having changed nothing, when it conflicts with an applied topology.
    """
    staged: str | None = None
    for attempt in range(ATTEMPTS):
        state = store.snapshot()
        topology = build(state) if callable(build) else build
        applied = state.topologies
        try:
            check_against_applied(topology, (s.topology for s in applied.values()))
        except Exception:
            if staged is not None:  # an earlier attempt staged a version: take it back
                _discard(store, topology.name, staged)
            raise
        previous = applied.get(topology.name)
        allocation = ipam.allocate(topology, previous.allocation if previous else None)
        objects = topology_objects(topology, allocation)
        digest = digest_of(objects)
        if previous is not None and (previous.digest, previous.source) == (digest, source):
            return topology, digest  # already desired as it is: nothing to write
        if staged is not None and staged != digest:
            _discard(store, topology.name, staged)
        staged = digest
        sealed = store.stage(state, topology.name, digest, objects)
        _pause_for_tests()
        if store.commit(state, topology.name, digest, source, sealed):
            return topology, digest
        time.sleep(random.uniform(0, 0.01 * min(attempt + 1, 20)))  # let the winner finish
    raise ApplyError(f"could not store topology {topology.name}: other writers changed the "
                     f"desired state {ATTEMPTS} times while it was being admitted; try again")


def _pause_for_tests() -> None:
    """Fault injection: ``SWITCHBOARD_ADMIT_PAUSE`` seconds between deciding and committing,
    so that tests make concurrent `up`s interleave in every round."""
    pause = float(os.environ.get("SWITCHBOARD_ADMIT_PAUSE") or 0)
    if pause > 0:
        time.sleep(pause)


def _discard(store: Store, name: str, digest: str) -> None:
    """Remove a version this call staged and did not commit (unless it became desired)."""
    for _ in range(ATTEMPTS):
        state = store.snapshot()
        marker = state.topologies.get(name)
        if digest not in state.versions.get(name, {}) or (marker and marker.digest == digest):
            return
        if store.discard(state, name, digest):
            return


def apply_topology(
    store: Store,
    topology: Topology | Builder,
    source: str,
    timeout: float = 120.0,
    wait: bool = True,
    progress: Callable[[Reports], None] | None = None,
) -> tuple[str, dict[str, Any] | None]:
    """Store ``topology`` as desired state; return its digest and the host's report.

    Raises TopologyError (nothing changed) when it conflicts with applied topologies, and
    ApplyError when the host does not converge within ``timeout`` seconds, or when another
    `up` or `down` of the same topology replaced this one before it did.
    """
    admitted, digest = admit(store, topology, source)
    if not wait:
        return digest, None
    name = admitted.name
    replaced: list[str] = []

    def settled(reports: Reports) -> bool:
        if any(r.get("digest") == digest and r.get("state") in ("converged", "error")
               for r in reports.values()):
            return True
        current = store.marker(name)
        if current is None or current.get("digest") != digest:
            replaced.append("removed by `switchboard down`" if current is None else
                            f"replaced by another `switchboard up` ({current.get('source')})")
            return True
        return False

    reports = store.wait_for_report(name, settled, timeout, progress)
    mine = [r for r in reports.values() if r.get("digest") == digest]
    if replaced and not mine:
        raise ApplyError(f"topology {name} was {replaced[0]} before the host converged on "
                         "this version")
    if not mine:
        pending = [r.get("error") for r in reports.values() if r.get("state") == "pending"]
        hint = f" (last word: {pending[0]})" if pending and pending[0] else ""
        raise ApplyError(f"no controller reported topology {name} within "
                         f"{timeout:.0f} s{hint}; is `switchboard controller` running?")
    failed = [r for r in mine if r.get("state") == "error"]
    if failed:
        raise ApplyError(f"topology {name} did not converge: {failed[0].get('error')}")
    converged = [r for r in mine if r.get("state") == "converged"]
    if not converged:
        why = mine[0].get("error") or mine[0].get("state")
        raise ApplyError(f"topology {name} did not converge within {timeout:.0f} s ({why}); "
                         "`switchboard status` shows what is missing")
    return digest, converged[0]


def remove_topology(store: Store, name: str, timeout: float = 60.0) -> bool:
    """Delete a topology's desired state and wait until no host holds it; False if unknown."""
    for _ in range(ATTEMPTS):
        state = store.snapshot()
        if name not in state.markers and name not in state.versions:
            return False
        if store.remove(state, name):
            if name not in state.markers:
                return False  # only versions staged by an `up` that never finished
            break
    else:
        raise ApplyError(f"could not remove topology {name}: other writers kept changing the "
                         "desired state; try again")
    reports = store.wait_for_report(name, lambda r: not r, timeout)
    if reports:
        raise ApplyError(f"hosts still hold {name} after {timeout:.0f} s: "
                         + ", ".join(host for host, _ in reports))
    # The local daemon deregisters the services it registered; this also covers a topology
    # that was removed while the daemon was down.
    from discovery.sync import ServiceSync

    ServiceSync(store.client).reconcile([], {name}, complete=True)
    return True
