"""Forgetting a host that has left the cluster for good: its record, slot, reports and events.

A host's record is kept forever (:mod:`sbcore.state.hosts`), so a machine taken out of the
cluster would stay in ``switchboard hosts`` as ``down``, its underlay MTU would still bound
the overlay's, and restarted switches would still probe its tunnel address. ``switchboard
hosts forget NAME`` removes what Switchboard keeps about it, in one KV transaction with a
check-and-set on the admission key (so no ``up`` places anything on it meanwhile), and only
when nothing depends on it any more:

- it is down (Consul says its agent or daemon is gone): a live host is never forgotten;
- no container is placed on it. Containers that name no host move to a ready host once the
  host has been down for the reschedule grace period; those pinned to it with ``host:``
  stay until their topology is edited or taken down;
- it does not hold the lowest slot while a topology has containers stored without a
  placement (they run on that host).

A forgotten host that starts again registers afresh (a new record, the lowest free slot).
Consul's own member list is Consul's: a failed node leaves it after ``reconnect_timeout``
(72 h by default), or at once with ``consul force-leave -prune NAME``.

:func:`refusal` is pure; :func:`forget` does the one read and the one write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sbcore.model.desired import StoredTopology
from sbcore.model.inventory import Hosts
from sbcore.state import hosts as host_inventory

if TYPE_CHECKING:
    from sbcore.state.store import Store

__all__ = ["ForgetRefused", "forget", "placed_on", "refusal"]


class ForgetRefused(RuntimeError):
    """The host cannot be forgotten (the message says why and what to do)."""


def placed_on(host: str, applied: Mapping[str, StoredTopology], first: bool
              ) -> dict[str, list[str]]:
    """Topology -> its containers that run on ``host``: placed there, or (``first``: the host
    holds the lowest slot) stored without a placement. Pure."""
    found: dict[str, list[str]] = {}
    for name, stored in applied.items():
        mine = [c for c in stored.topology.containers
                if stored.placement.get(c) == host or (first and c not in stored.placement)]
        if mine:
            found[name] = sorted(mine)
    return found


def refusal(host: str, hosts: Hosts, applied: Mapping[str, StoredTopology]) -> str | None:
    """Why ``host`` cannot be forgotten now, or None when it can. Pure."""
    record = hosts.get(host)
    if record is None:
        known = ", ".join(hosts) or "none"
        return f"no host {host!r} has registered (hosts: {known})"
    if record.ready:
        return (f"host {host} is up; forget only a host that has left the cluster (stop its "
                f"Switchboard daemon and its Consul agent first)")
    first = min(hosts.values(), key=lambda r: r.slot).name == host
    placed = placed_on(host, applied, first)
    if not placed:
        return None
    pinned = sorted(f"{t}/{c}" for t, cs in placed.items() for c in cs
                    if applied[t].topology.containers[c].host == host)
    where = "; ".join(f"{t}: {', '.join(cs)}" for t, cs in sorted(placed.items()))
    advice = (f"those that name it ({', '.join(pinned)}) stay until their topology no longer "
              f"does" if pinned else
              "containers that name no host move to a ready host once it has been down for "
              "the reschedule grace period (controller --reschedule-after)")
    return f"containers still run on host {host} ({where}): {advice}"


def forget(store: Store, host: str) -> list[str]:
    """Forget ``host`` (see the module's docstring): the keys removed. Raises
    :class:`ForgetRefused` when :func:`refusal` says no, or when something was admitted
    meanwhile (then nothing changed: ask again)."""
    state = store.snapshot()
    hosts = host_inventory.parse_hosts(state.host_entries,
                                       host_inventory.read_health(store.client), store.prefix)
    why = refusal(host, hosts, state.topologies)
    if why is not None:
        raise ForgetRefused(why)
    _, slot_entries = store.client.kv.get(host_inventory.slots_prefix(store.prefix),
                                          recurse=True)
    slots = [e["Key"] for e in slot_entries or [] if (e.get("Value") or b"") == host.encode()]
    removed = store.forget_host(state, host, slots)
    if removed is None:
        raise ForgetRefused("the desired state changed while forgetting (an `up`, `down` or a "
                            "move); nothing was changed: run it again")
    return removed
