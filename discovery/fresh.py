"""Instances this host has seen answer and is registering: in its DNS answers at once.

The Consul agent takes registrations one at a time (about 5-20 ms each here, whatever the
number of callers), so when many containers start together, the last of them waits for
every registration before its own: 100 instances take 0.5-2 s to reach Consul. An
instance's container answers well before that. So from the moment the daemon has seen an
instance answer (its check passed when run from the host, or it has no check and its
container is plumbed with its flows in) until Consul holds it, the daemon's DNS server
answers it too, to the containers of its own topology on this host.

The rule stays: nothing is answered before it was seen answering. Consul's view wins as
soon as it has the instance, in whatever state; an instance leaves this set when its
registration fails, when it is deregistered, when its command exits, and ``linger``
seconds after the agent took its registration (the agent's sync to the catalog, which
Consul's DNS and health API read, takes milliseconds). Containers on other hosts see it
when Consul has it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from discovery.instances import CONTAINER_KEY, TOPOLOGY_KEY, Instance, consul_meta

__all__ = ["FreshInstances", "health_entry", "with_fresh"]

LINGER = 1.0  # seconds an instance stays after the agent took its registration


@dataclass
class _Fresh:
    instance: Instance
    registered: float | None = None  # monotonic time the agent took it


def health_entry(inst: Instance, datacenter: str = "dc1") -> dict[str, Any]:
    """An instance as an entry of ``/v1/health/service/NAME`` with its check passing (what
    Consul will hold once it has the registration). Pure."""
    return {
        "Node": {"Datacenter": datacenter},
        "Service": {"ID": inst.id, "Service": inst.name, "Address": inst.address,
                    "Port": inst.port, "Tags": list(inst.tags), "Meta": consul_meta(inst)},
        "Checks": [{"CheckID": f"service:{inst.id}", "Status": "passing"}],
    }


def with_fresh(
    entries: list[Mapping[str, Any]], fresh: Iterable[Instance]
) -> list[Mapping[str, Any]]:
    """Consul's entries, plus the fresh instances Consul does not hold yet (in any state: an
    instance Consul has is answered as Consul says). Pure."""
    known = {(e.get("Service") or {}).get("ID") for e in entries}
    datacenter = next((str((e.get("Node") or {}).get("Datacenter") or "dc1") for e in entries),
                      "dc1")
    return [*entries, *(health_entry(i, datacenter) for i in fresh if i.id not in known)]


class FreshInstances:
    """The instances seen answering whose registration has not reached Consul yet.

    ``down`` returns the ``topology/container`` keys whose command exited (their instances
    are never answered from here). Safe to use from several threads.
    """

    def __init__(
        self,
        down: Callable[[], set[str]] | None = None,
        linger: float = LINGER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.down = down or set
        self.linger = linger
        self.clock = clock
        self._lock = threading.Lock()
        self._fresh: dict[str, _Fresh] = {}

    def add(self, inst: Instance) -> None:
        """``inst`` was seen answering and is about to be registered."""
        with self._lock:
            self._fresh[inst.id] = _Fresh(inst)

    def registered(self, service_id: str) -> None:
        """The agent took the registration: Consul answers it from now on (``linger``)."""
        with self._lock:
            entry = self._fresh.get(service_id)
            if entry is not None and entry.registered is None:
                entry.registered = self.clock()

    def drop(self, service_id: str) -> None:
        """Its registration failed, or it is being deregistered."""
        with self._lock:
            self._fresh.pop(service_id, None)

    def of(self, topology: str, service: str) -> list[Instance]:
        """The fresh instances of ``topology``'s service ``service`` (any case)."""
        now = self.clock()
        down = self.down()
        with self._lock:
            for sid in [sid for sid, e in self._fresh.items()
                        if e.registered is not None and now - e.registered > self.linger]:
                del self._fresh[sid]
            found = [e.instance for e in self._fresh.values()
                     if e.instance.name.lower() == service.lower()
                     and e.instance.topology == topology]
        return [i for i in found
                if f"{i.meta_dict.get(TOPOLOGY_KEY)}/{i.meta_dict.get(CONTAINER_KEY)}"
                not in down]
