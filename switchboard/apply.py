"""Apply and remove topologies: the one path both the CLI and the Python API take.

Validate against what is applied, allocate addresses (keeping earlier ones), write the
desired state to Consul KV, then wait until the host's daemon reports it converged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from switchboard import ipam
from switchboard.model import Topology, check_against_applied
from switchboard.store import Store

Reports = dict[tuple[str, str], dict[str, Any]]


class ApplyError(RuntimeError):
    """The host did not converge (the message says why and what to do)."""


def apply_topology(
    store: Store,
    topology: Topology,
    source: str,
    timeout: float = 120.0,
    wait: bool = True,
    progress: Callable[[Reports], None] | None = None,
) -> tuple[str, dict[str, Any] | None]:
    """Store ``topology`` as desired state; return its digest and the host's report.

    Raises TopologyError (nothing changed) when it conflicts with applied topologies, and
    ApplyError when the host does not converge within ``timeout`` seconds.
    """
    applied = store.applied()
    check_against_applied(topology, [s.topology for s in applied.values()])
    previous = applied[topology.name].allocation if topology.name in applied else None
    allocation = ipam.allocate(topology, previous)
    digest = store.write_topology(topology, allocation, source)
    if not wait:
        return digest, None

    def settled(reports: Reports) -> bool:
        return any(r["digest"] == digest and r["state"] in ("converged", "error")
                   for r in reports.values())

    reports = store.wait_for_report(topology.name, settled, timeout, progress)
    mine = [r for r in reports.values() if r["digest"] == digest]
    if not mine:
        pending = [r.get("error") for r in reports.values() if r.get("state") == "pending"]
        hint = f" (last word: {pending[0]})" if pending and pending[0] else ""
        raise ApplyError(f"no controller reported topology {topology.name} within "
                         f"{timeout:.0f} s{hint}; is `switchboard controller` running?")
    failed = [r for r in mine if r["state"] == "error"]
    if failed:
        raise ApplyError(f"topology {topology.name} did not converge: {failed[0]['error']}")
    return digest, mine[0]


def remove_topology(store: Store, name: str, timeout: float = 60.0) -> bool:
    """Delete a topology's desired state and wait until no host holds it; False if unknown."""
    if not store.delete_topology(name):
        return False
    reports = store.wait_for_report(name, lambda r: not r, timeout)
    if reports:
        raise ApplyError(f"hosts still hold {name} after {timeout:.0f} s: "
                         + ", ".join(host for host, _ in reports))
    # The local daemon deregisters the services it registered; this also covers a topology
    # that was removed while the daemon was down.
    from discovery.sync import ServiceSync

    ServiceSync(store.client).reconcile([], {name}, complete=True)
    return True
