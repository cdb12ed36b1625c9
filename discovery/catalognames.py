"""Which service names Consul's catalog holds, followed with one blocking query.

When many containers start together, their instances are answered from this host before
Consul has their registrations (:mod:`discovery.fresh`), and each answer also needs what
Consul holds of the same name (instances on other hosts, or registered by hand). Reading
the health API for that at every question put a Consul round trip on each answer, while
the agent was busiest taking the registrations: with 100 containers at once, that read was
most of a question's 60-170 ms. A name the catalog does not hold has no instance in Consul,
so its answer needs no read at all; this set says which names those are.

It is one ``/v1/catalog/services`` blocking query (stale reads, as the DNS interface's),
read again when the catalog's service list changes, at most every ``min_interval``
seconds. A name counts as absent only while the set is current: before the first read,
after a failed one, and once the watch stops, every name is "unknown" and the caller reads
the health API as before. A name the catalog gains is seen a few milliseconds (at most
``min_interval`` plus a round trip) after Consul has it; until then an answer holds this
host's own fresh instances of it, which is what the catalog is gaining.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

LOG = logging.getLogger("switchboard.catalognames")

__all__ = ["CatalogNames", "ServicesRead", "consul_services"]

# (index or None, wait) -> (new index, service name -> tags); raises when Consul fails
ServicesRead = Callable[[str | None, str], tuple[str, Mapping[str, Any]]]

MIN_INTERVAL = 0.05  # seconds between two reads: a registration storm costs ~20 reads a second
RETRY = 0.5  # seconds before reading again after a failure


def consul_services(client: Any) -> ServicesRead:
    """Reads through a py-consul client (its token and address): a stale blocking query."""

    def read(index: str | None, wait: str) -> tuple[str, Mapping[str, Any]]:
        new_index, services = client.catalog.services(index=index, wait=wait, consistency="stale")
        return new_index, services

    return read


class CatalogNames:
    """The set of service names in Consul's catalog, kept current by a daemon thread."""

    def __init__(self, read: ServicesRead, wait: str = "30s",
                 min_interval: float = MIN_INTERVAL) -> None:
        self.read = read
        self.wait = wait
        self.min_interval = min_interval
        self._names: frozenset[str] | None = None  # None: not current (unknown)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lacks(self, service: str) -> bool:
        """Whether the catalog surely holds no instance of ``service`` (any case); False when
        the set is not current."""
        names = self._names
        return names is not None and service.lower() not in names

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="catalog-names",
                                             daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._names = None

    def _follow(self) -> None:
        index: str | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                index, services = self.read(index, self.wait)
                if not isinstance(services, Mapping):
                    raise TypeError(f"a {type(services).__name__}, not a mapping")
                self._names = frozenset(str(name).lower() for name in services)
            except Exception as exc:  # noqa: BLE001 - Consul down or odd: unknown, retry
                if self._names is not None:
                    LOG.warning("cannot read Consul's service names: %s", exc)
                self._names = None
                index = None
                self._stop.wait(RETRY)
                continue
            if self._stop.is_set():
                self._names = None
            self._stop.wait(max(0.0, self.min_interval - (time.monotonic() - started)))
