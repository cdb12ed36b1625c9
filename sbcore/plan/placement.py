"""Which host runs each container of a topology. Pure.

The rules, in order:

1. A container that names its host (``host: h2``) goes there. The host must be known and
   ready, unless the container is already there (then it stays, as in rule 2).
2. A container already placed keeps its host, even if that host is down now: moving
   containers off a host that stays down is the rescheduler's job (:func:`evacuate`).
3. A new container goes to the ready host with the fewest containers (all topologies), ties
   broken by host name; new containers are placed in name order.

With no ready host, rule 3 cannot place anything: that is a :class:`PlacementError`, unless
``allow_unplaced`` (``up --no-wait`` storing a topology for daemons started later), which
leaves such containers out of the placement. A daemon treats an unplaced container as its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from sbcore.model import Topology
from sbcore.model.inventory import HostRecord

Placement = dict[str, str]  # container -> host


class PlacementError(ValueError):
    """A container cannot be placed (the message names it, the host and the ready hosts)."""


def load_of(placements: Iterable[Mapping[str, str]]) -> Counter[str]:
    """Host -> how many containers the given placements put there."""
    return Counter(host for placement in placements for host in placement.values())


def place(
    topology: Topology,
    previous: Mapping[str, str],
    hosts: Mapping[str, HostRecord],
    load: Mapping[str, int],
    allow_unplaced: bool = False,
) -> Placement:
    """The new placement of ``topology``'s containers.

    ``previous`` is its stored placement (container -> host, empty for a new topology);
    ``load`` counts the containers every stored placement puts on each host, this
    topology's previous one included (it is subtracted here and this topology's containers
    are counted again as they are placed).
    """
    ready = sorted(name for name, record in hosts.items() if record.ready)
    counts = Counter({host: n for host, n in load.items() if n > 0})
    counts.subtract(Counter(previous.values()))
    placement: Placement = {}
    for name in sorted(topology.containers):
        wanted = topology.containers[name].host
        was = previous.get(name)
        if wanted is not None and wanted != was:
            record = hosts.get(wanted)
            if record is None or not record.ready:
                why = "is not a known host" if record is None else f"is down ({record.reason})"
                raise PlacementError(
                    f"containers.{name}.host: {wanted} {why}; "
                    + (f"ready hosts: {', '.join(ready)}" if ready else "no host is ready")
                    + " (see `switchboard hosts`)"
                )
            placement[name] = wanted
        elif was is not None:
            placement[name] = was
        else:
            continue
        counts[placement[name]] += 1
    for name in sorted(set(topology.containers) - set(placement)):
        if not ready:
            if allow_unplaced:
                continue
            raise PlacementError(
                f"container {name} cannot be placed: no host is ready; start "
                "`switchboard controller` on a host (see `switchboard hosts`)"
            )
        host = min(ready, key=lambda h: (counts[h], h))
        placement[name] = host
        counts[host] += 1
    return placement


def evacuate(
    topology: Topology,
    previous: Mapping[str, str],
    hosts: Mapping[str, HostRecord],
    load: Mapping[str, int],
    gone: Iterable[str],
) -> Placement:
    """``previous`` with the containers on the ``gone`` hosts (down past the grace period)
    moved to ready hosts, fewest containers first, as rule 3 places new ones. A container
    that names its host (``host:``) stays, and so does every container when no host is
    ready. ``load`` is as in :func:`place`. Pure."""
    gone = set(gone)
    ready = sorted(name for name, record in hosts.items() if record.ready and name not in gone)
    placement = dict(previous)
    counts = Counter({host: n for host, n in load.items() if n > 0})
    for name in sorted(placement):
        spec = topology.containers.get(name)
        if placement[name] not in gone or spec is None or spec.host is not None or not ready:
            continue
        host = min(ready, key=lambda h: (counts[h], h))
        counts[placement[name]] -= 1
        placement[name] = host
        counts[host] += 1
    return placement
