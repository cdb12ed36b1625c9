"""`up` returns once the data path forwards: the interfaces a pass plumbed stay unverified
until each has answered an echo request from the host (see :mod:`plumbing.forwarding`), and
their topology's report says ``pending`` until then."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from plumbing.forwarding import answered
from sbcore.plan.hostplan import Endpoint, TopologyPlan

LOG = logging.getLogger(__name__)


class ForwardingCheck:
    """Interfaces plumbed and not yet seen forwarding, by port."""

    def __init__(self, wait: float = 3.0, give_up: float = 30.0) -> None:
        self.wait = wait  # seconds one pass waits for answers
        self.give_up = give_up  # after this long, a few silent interfaces are not waited for
        self._unverified: dict[str, tuple[str, str, float]] = {}  # port -> ip, topology, since
        self._answered: dict[str, int] = {}  # topology -> interfaces that answered meanwhile

    def plumbed(self, endpoints: Iterable[Endpoint]) -> None:
        """Remember the interfaces a pass made or set again."""
        now = time.monotonic()
        for ep in endpoints:
            self._unverified[ep.port] = (str(ep.ip), ep.topology, now)

    def _forwards(self, topology: str) -> bool:
        """Whether the data path evidently forwards for ``topology``: at least 9 in 10 of its
        interfaces waited for answered (the rest may drop pings themselves)."""
        left = sum(1 for _, t, _ in self._unverified.values() if t == topology)
        return self._answered.get(topology, 0) >= 9 * left

    def check(self, plans: list[TopologyPlan]) -> dict[str, str]:
        """Ping the unverified interfaces that are still wanted; topology -> why it is still
        pending, for those with interfaces that did not answer."""
        wanted = {ep.port for plan in plans for ep in plan.endpoints()}
        for port in set(self._unverified) - wanted:
            del self._unverified[port]
        if not self._unverified:
            return {}
        try:
            ok = answered({ip for ip, _, _ in self._unverified.values()}, self.wait)
        except OSError as err:  # no raw socket here: do not hold topologies back for it
            LOG.warning("cannot ping the containers from the host: %s", err)
            self._unverified.clear()
            return {}
        now = time.monotonic()
        for port, (ip, topology, _) in list(self._unverified.items()):
            if ip in ok:
                del self._unverified[port]
                self._answered[topology] = self._answered.get(topology, 0) + 1
        waiting: dict[str, list[str]] = {}
        for port, (ip, topology, since) in list(self._unverified.items()):
            if now - since > self.give_up and self._forwards(topology):
                LOG.warning("%s (%s) did not answer the host for %.0f s while the others "
                            "did; not waiting for it any more", ip, port, self.give_up)
                del self._unverified[port]
            else:
                waiting.setdefault(topology, []).append(ip)
        for topology in set(self._answered) - {t for _, t, _ in self._unverified.values()}:
            del self._answered[topology]  # all verified: count afresh next time
        return {
            topology: f"waiting for the data path to forward to {len(ips)} interface(s) "
                      f"({', '.join(sorted(ips)[:3])}{' …' if len(ips) > 3 else ''})"
            for topology, ips in waiting.items()
        }
