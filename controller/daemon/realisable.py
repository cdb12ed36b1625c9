"""Which desired topologies this host realises, and why it refuses the others. Pure."""

from __future__ import annotations

import logging

from sbcore.model.desired import DesiredState, load_json
from sbcore.plan.admission import first_come
from sbcore.state.store import StoredTopology

LOG = logging.getLogger("switchboard.daemon")


def realisable(
    state: DesiredState,
) -> tuple[dict[str, StoredTopology], dict[str, tuple[str, str]]]:
    """The desired topologies this host realises, and the others: topology -> (digest, why).

    A topology that conflicts with one applied before it (which `up` never admits, but the
    desired state may still hold one: written by hand, by an older version, by a bug) is
    refused, as is one whose keys cannot be read. Pure.
    """
    admitted, rejected = first_come((s.topology, s) for s in state.topologies.values())
    refused = {name: (state.topologies[name].digest, why) for name, why in rejected.items()}
    for name, why in state.invalid.items():
        refused[name] = (_marker_digest(state.markers.get(name)), why)
    return {s.topology.name: s for s in admitted}, refused


def log_skipped(before: DesiredState | None, after: DesiredState) -> None:
    """Log each key of the desired state that cannot be read, once (when it appears)."""
    seen = before.skipped if before is not None else {}
    for key, why in after.skipped.items():
        if seen.get(key) != why:
            LOG.warning("skipping %s in Consul KV: %s", key, why)


def _marker_digest(raw: bytes | None) -> str:
    try:
        return str(load_json(raw)["digest"])
    except (ValueError, KeyError, TypeError):
        return ""
