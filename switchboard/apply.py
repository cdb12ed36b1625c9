"""Apply and remove topologies: the one path both the CLI and the Python API take.

Admission is one atomic step on Consul (sbcore.state.store): read everything, check the
topology against what is applied, allocate its addresses (keeping earlier ones) and place its
containers on hosts (keeping earlier places), stage it, then commit the version and its
placement with a check-and-set on what was read; when another admission came in between,
read and decide again. Then wait until every host the placement uses reports it converged.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from plumbing.listeners import listening
from sbcore.model import Topology, TopologyError, ipam
from sbcore.model.desired import (
    DesiredState,
    StoredTopology,
    digest_of,
    topology_objects,
    with_cni,
)
from sbcore.plan.admission import check_against_applied
from sbcore.plan.hostplan import mtu_problems, overlay_mtu
from sbcore.plan.placement import Placement, load_of, place
from sbcore.state import hosts as host_inventory
from sbcore.state.store import Store

Reports = dict[tuple[str, str], dict[str, Any]]
Builder = Callable[[DesiredState], Topology]
Progress = Callable[[Reports, list[str]], None]  # (reports, hosts waited for)
ATTEMPTS = 100  # admissions lost to concurrent writers before giving up


class ApplyError(RuntimeError):
    """The host did not converge (the message says why and what to do)."""


@dataclass(frozen=True)
class Decision:
    """What admitting a topology on one snapshot stores: its addresses, placement and
    objects, and the stored version it replaces (None: a new topology)."""

    topology: Topology
    allocation: ipam.Allocation
    placement: Placement
    objects: dict[str, Any]
    digest: str
    previous: StoredTopology | None


def decide(
    store: Store, state: DesiredState, build: Topology | Builder, allow_unplaced: bool = False,
    cni: dict[str, dict[str, Any]] | None = None,
) -> Decision:
    """Admission's decision on ``state``, writing nothing: check ``build`` against the
    applied topologies and the hosts' MTU, place its containers and allocate its addresses
    (keeping earlier ones). The containers the CNI plugin added (``cni``, else those
    ``state`` holds) are merged in. Raises TopologyError or PlacementError. `up` commits what
    this returns; `switchboard plan` shows it."""
    topology = build(state) if callable(build) else build
    topology = with_cni(topology, state.cni.get(topology.name, {}) if cni is None else cni)
    applied = state.topologies
    previous = applied.get(topology.name)
    check_against_applied(topology, (s.topology for s in applied.values()))
    taken = taken_host_ports(topology, previous.topology if previous else None)
    if taken:
        raise TopologyError(taken)
    hosts = _hosts(store, state)
    fits = mtu_problems(topology, overlay_mtu([h.underlay_mtu for h in hosts.values()]))
    if fits:
        raise TopologyError(fits)
    placement = place(topology, previous.placement if previous else {},
                      hosts if topology.containers else {},
                      load_of(s.placement for s in applied.values()), allow_unplaced)
    allocation = ipam.allocate(topology, previous.allocation if previous else None)
    objects = topology_objects(topology, allocation)
    return Decision(topology, allocation, placement, objects, digest_of(objects), previous)


def taken_host_ports(topology: Topology, previous: Topology | None) -> list[str]:
    """Ports ``topology`` newly publishes (its containers' and its services') that something
    on this host already listens on, from the host's socket tables (a port its earlier
    version publishes is the topology's own)."""
    before = set(previous.host_ports()) if previous else set()
    taken = listening()
    problems = []
    for name, container in topology.containers.items():
        for i, pub in enumerate(container.published):
            if (pub.proto, pub.host_port) not in before and (pub.proto, pub.host_port) in taken:
                problems.append(
                    f"topology {topology.name!r}: containers.{name}.publish.{i}: host port "
                    f"{pub.host_port}/{pub.proto} is already taken on this host (something "
                    "listens on it); publish another host port or stop what listens on it")
    for name, settings in topology.services.items():
        spub = settings.published
        if spub and (spub.proto, spub.host_port) not in before \
                and (spub.proto, spub.host_port) in taken:
            problems.append(
                f"topology {topology.name!r}: services.{name}.publish: host port "
                f"{spub.host_port}/{spub.proto} is already taken on this host (something "
                "listens on it); publish another host port or stop what listens on it")
    return problems


def admit(
    store: Store, build: Topology | Builder, source: str, allow_unplaced: bool = False
) -> tuple[Topology, str, Placement]:
    """Store a topology as desired state, with its placement, in one atomic step; the
    topology, its digest and its placement (container -> host).

    ``build`` is the topology, or a function that makes it from the state read (so that
    what it picks, such as a free subnet, is decided atomically with the rest). Raises
    TopologyError or PlacementError, having changed nothing, when it conflicts with an
    applied topology or names a host that is unknown or down. ``allow_unplaced`` stores
    containers no ready host can take without a host (see sbcore.plan.placement).
    """
    staged: str | None = None
    name = ""
    for attempt in range(ATTEMPTS):
        state = store.snapshot()
        try:
            decision = decide(store, state, build, allow_unplaced)
        except Exception:
            if staged is not None:  # an earlier attempt staged a version: take it back
                _discard(store, name, staged)
            raise
        topology, placement, digest = decision.topology, decision.placement, decision.digest
        name, previous = topology.name, decision.previous
        if previous is not None and (previous.digest, previous.source, previous.placement) == (
            digest, source, placement
        ):
            return topology, digest, placement  # already desired as it is: nothing to write
        if staged is not None and staged != digest:
            _discard(store, topology.name, staged)
        staged = digest
        sealed = store.stage(state, topology.name, digest, decision.objects)
        _pause_for_tests()
        if store.commit(state, topology.name, digest, source, sealed, placement):
            return topology, digest, placement
        time.sleep(random.uniform(0, 0.01 * min(attempt + 1, 20)))  # let the winner finish
    raise ApplyError(f"could not store topology {topology.name}: other writers changed the "
                     f"desired state {ATTEMPTS} times while it was being admitted; try again")


def _hosts(store: Store, state: DesiredState) -> host_inventory.Hosts:
    """The host records the snapshot read, with their health as Consul sees it now."""
    return host_inventory.parse_hosts(state.host_entries,
                                      host_inventory.read_health(store.client), store.prefix)


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
    progress: Progress | None = None,
) -> tuple[str, dict[str, Any] | None]:
    """Store ``topology`` as desired state; return its digest and the hosts' report (the
    first host's, with the container rows of every host the placement uses).

    Raises TopologyError or PlacementError (nothing changed) when it conflicts with applied
    topologies or cannot be placed, and ApplyError when a host it is placed on does not
    converge within ``timeout`` seconds, or when another `up` or `down` of the same
    topology replaced this one before it did.
    """
    admitted, digest, placement = admit(store, topology, source, allow_unplaced=not wait)
    if not wait:
        return digest, None
    name = admitted.name
    down = _down_hosts(store, set(placement.values()))
    waiting = {host: sorted(c for c, h in placement.items() if h == host) for host in down}
    needed = sorted(set(placement.values()) - set(down))  # none: any one host
    if down and not needed:  # nothing can converge until a host is back or they move
        return digest, {"containers": [], "waiting": waiting}
    replaced: list[str] = []

    def mine(reports: Reports) -> dict[str, dict[str, Any]]:
        """The reports of this version from the hosts that count: the placement's (any
        host when nothing is placed)."""
        return {host: r for (host, _), r in reports.items()
                if r.get("digest") == digest and (host in needed or not needed)}

    def settled(reports: Reports) -> bool:
        done = {h: r for h, r in mine(reports).items() if r.get("state") in ("converged", "error")}
        if any(r.get("state") == "error" for r in done.values()):
            return True
        if (all(h in done for h in needed) if needed else done):
            return True
        current = store.marker(name)
        if current is None or current.get("digest") != digest:
            replaced.append("removed by `switchboard down`" if current is None else
                            f"replaced by another `switchboard up` ({current.get('source')})")
            return True
        return False

    on_poll = (lambda reports: progress(reports, needed)) if progress is not None else None
    reports = store.wait_for_report(name, settled, timeout, on_poll)
    found = mine(reports)
    if replaced and not found:
        raise ApplyError(f"topology {name} was {replaced[0]} before the host converged on "
                         "this version")
    failed = [(h, r) for h, r in sorted(found.items()) if r.get("state") == "error"]
    if failed:
        host, report = failed[0]
        raise ApplyError(f"topology {name} did not converge on host {host}: "
                         f"{report.get('error')}")
    silent = [h for h in needed if h not in found] if needed else ([] if found else ["?"])
    if silent:
        pending = [r.get("error") for r in reports.values() if r.get("state") == "pending"]
        hint = f" (last word: {pending[0]})" if pending and pending[0] else ""
        where = f" from host {', '.join(silent)}" if needed else ""
        raise ApplyError(f"no controller reported topology {name}{where} within "
                         f"{timeout:.0f} s{hint}; is `switchboard controller` running there? "
                         "(see `switchboard hosts`)")
    if needed:
        hosts = needed
        unconverged = [(h, found[h]) for h in needed if found[h].get("state") != "converged"]
    else:  # nothing placed: one host's report will do
        hosts = [h for h, r in sorted(found.items()) if r.get("state") == "converged"][:1]
        unconverged = [] if hosts else sorted(found.items())[:1]
    if unconverged:
        host, report = unconverged[0]
        why = report.get("error") or report.get("state")
        raise ApplyError(f"topology {name} did not converge on host {host} within "
                         f"{timeout:.0f} s ({why}); `switchboard status` shows what is missing")
    merged = dict(found[hosts[0]])
    merged["containers"] = [{"host": h, **row} for h in hosts
                            for row in found[h].get("containers", [])]
    merged["waiting"] = waiting
    return digest, merged


def _down_hosts(store: Store, placed: set[str]) -> list[str]:
    """The hosts of a placement that are down now: `up` does not wait for them (their
    containers start when the host is back, or on another host once the rescheduler moves
    them)."""
    records = host_inventory.read_hosts(store.client, store.prefix)
    return sorted(h for h in placed if h in records and not records[h].ready)


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
    # A host that is down lets go when it is back (its daemon clears what is not desired).
    down = set(_down_hosts(store, {host for host, _ in store.reports(name)}))
    reports = store.wait_for_report(
        name, lambda r: not [h for h, _ in r if h not in down], timeout)
    if holding := [host for host, _ in reports if host not in down]:
        raise ApplyError(f"hosts still hold {name} after {timeout:.0f} s: "
                         + ", ".join(holding))
    # The local daemon deregisters the services it registered; this also covers a topology
    # that was removed while the daemon was down.
    from discovery.sync import ServiceSync

    ServiceSync(store.client).reconcile([], {name}, complete=True)
    return True
