"""Follow which instances of VIP services Consul reports passing (blocking queries)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import consul

if TYPE_CHECKING:
    pass

LOG = logging.getLogger("switchboard.health")

ServiceKey = tuple[str, str]  # (topology, service)


def passing_containers(entries: Iterable[dict[str, Any]], topology: str) -> frozenset[str]:
    """Containers of ``topology`` among the passing entries of a health query. Pure."""
    found = set()
    for entry in entries:
        meta = (entry.get("Service") or {}).get("Meta") or {}
        if meta.get("switchboard-topology") == topology and "switchboard-container" in meta:
            found.add(meta["switchboard-container"])
    return frozenset(found)


class HealthWatch:
    """One blocking-query thread per watched service; calls ``on_change`` when a set changes."""

    def __init__(self, client: consul.Consul, on_change: Callable[[], None]) -> None:
        self.client = client
        self.on_change = on_change
        self._passing: dict[ServiceKey, frozenset[str]] = {}
        self._threads: dict[ServiceKey, threading.Event] = {}
        self._lock = threading.Lock()

    def passing(self) -> dict[ServiceKey, frozenset[str]]:
        """Known passing sets; a watched service not answered yet is absent (use all)."""
        with self._lock:
            return dict(self._passing)

    def watch(self, keys: Iterable[ServiceKey]) -> None:
        """Watch exactly these services (start new watchers, stop the others)."""
        wanted = set(keys)
        with self._lock:
            for key in set(self._threads) - wanted:
                self._threads.pop(key).set()
                self._passing.pop(key, None)
            for key in wanted - set(self._threads):
                stop = threading.Event()
                self._threads[key] = stop
                threading.Thread(target=self._follow, args=(key, stop), daemon=True,
                                 name=f"health-{key[0]}-{key[1]}").start()

    def _follow(self, key: ServiceKey, stop: threading.Event) -> None:
        topology, service = key
        index = None
        while not stop.is_set():
            try:
                index, entries = self.client.health.service(
                    service, passing=True, index=index, wait="30s"
                )
            except Exception as exc:  # noqa: BLE001 - agent restarting: retry
                LOG.warning("health of %s: %s", service, exc)
                index = None
                stop.wait(0.5)
                continue
            now = passing_containers(entries, topology)
            with self._lock:
                if stop.is_set():
                    return
                changed = self._passing.get(key) != now
                self._passing[key] = now
            if changed:
                LOG.info("service %s/%s passing: %s", topology, service, sorted(now))
                self.on_change()
