"""What to change in the local Consul agent so it holds the desired instances. Pure.

A service is *ours* iff its Meta has ``switchboard`` = ``"1"``. Services that are not ours are
never deregistered. Ours are deregistered only when they belong to a topology this sync
owns; instances of the programmatic registry (Meta ``switchboard-registry``) are never
touched by a topology sync.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from discovery.instances import (
    REGISTRY_KEY,
    TOPOLOGY_KEY,
    Instance,
    consul_meta,
    is_ours,
)

__all__ = ["SyncPlan", "differs", "plan_sync", "topology_of"]


@dataclass(frozen=True)
class SyncPlan:
    """Instances to (re-)register and service IDs to deregister. ``conflicts`` lists IDs
    that more than one desired instance used (the first one is kept)."""

    register: list[Instance]
    deregister: list[str]
    conflicts: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.register and not self.deregister


def differs(instance: Instance, entry: Mapping[str, Any] | None) -> bool:
    """Whether the agent's entry (None: absent) differs from the instance in name, address,
    port, tags, meta or check (the check is compared through the Meta it is stored in)."""
    if entry is None:
        return True
    return (
        entry.get("Service") != instance.name
        or (entry.get("Address") or "") != instance.address
        or int(entry.get("Port") or 0) != instance.port
        or list(entry.get("Tags") or ()) != list(instance.tags)
        or dict(entry.get("Meta") or {}) != consul_meta(instance)
    )


def topology_of(entry: Mapping[str, Any]) -> str | None:
    """The topology an agent entry of ours belongs to; None for registry instances."""
    meta = entry.get("Meta") or {}
    if REGISTRY_KEY in meta:
        return None
    return meta.get(TOPOLOGY_KEY)


def plan_sync(
    desired: list[Instance],
    registered: Mapping[str, Mapping[str, Any]],
    owned_topologies: set[str] | None,
) -> SyncPlan:
    """Plan the changes from ``registered`` (``/v1/agent/services``) to ``desired``.

    Register what is missing or differs, in desired order. Deregister services that are ours,
    not desired, and belong to a topology in ``owned_topologies`` (any topology when None).
    A desired ID held by a foreign service is taken over: the ``sb-`` IDs are Switchboard's.
    """
    wanted: dict[str, Instance] = {}
    conflicts: list[str] = []
    for inst in desired:
        if inst.id in wanted:
            if inst != wanted[inst.id] and inst.id not in conflicts:
                conflicts.append(inst.id)
            continue
        wanted[inst.id] = inst
    register = [inst for inst in wanted.values() if differs(inst, registered.get(inst.id))]
    deregister = []
    for service_id, entry in registered.items():
        if service_id in wanted or not is_ours(entry):
            continue
        topology = topology_of(entry)
        if topology is None:
            continue
        if owned_topologies is None or topology in owned_topologies:
            deregister.append(service_id)
    return SyncPlan(register, sorted(deregister), conflicts)
