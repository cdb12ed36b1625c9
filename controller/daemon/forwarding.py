"""`up` returns once the data path forwards: the interfaces a pass plumbed stay unverified
until the switch answered an ARP request sent from inside their namespace (see
:mod:`plumbing.forwarding`), and their topology's report says ``pending`` until then."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from plumbing.forwarding import Probe, answered
from sbcore.plan.hostplan import Endpoint, TopologyPlan

LOG = logging.getLogger(__name__)


class ForwardingCheck:
    """Interfaces plumbed and not yet seen forwarding, by port."""

    def __init__(self, wait: float = 3.0, give_up: float = 120.0) -> None:
        self.wait = wait  # seconds one pass waits for answers
        self.give_up = give_up  # after this long unanswered, an interface is left alone
        self._unverified: dict[str, tuple[Probe, str, float]] = {}  # port -> probe, topology

    def plumbed(self, plans: list[TopologyPlan], endpoints: Iterable[Endpoint]) -> None:
        """Remember interfaces a pass made or set again (their network's host address is
        what their probe asks for)."""
        legs = {(p.name, n.name): n.host_leg.ip for p in plans for n in p.networks}
        now = time.monotonic()
        for ep in endpoints:
            target = legs.get((ep.topology, ep.network))
            if target is not None:
                probe = Probe(ep.netns, ep.ifname, ep.mac, ep.ip, target)
                self._unverified[ep.port] = (probe, ep.topology, now)

    def check(self, plans: list[TopologyPlan]) -> dict[str, str]:
        """Probe the unverified interfaces that are still wanted; topology -> why it is still
        pending, for those with interfaces that did not answer."""
        wanted = {ep.port for plan in plans for ep in plan.endpoints()}
        for port in set(self._unverified) - wanted:
            del self._unverified[port]
        if not self._unverified:
            return {}
        probes = [probe for probe, _, _ in self._unverified.values()]
        ok = answered(probes, self.wait)
        now = time.monotonic()
        waiting: dict[str, list[str]] = {}
        for port, (probe, topology, since) in list(self._unverified.items()):
            if probe in ok:
                del self._unverified[port]
            elif now - since > self.give_up:
                LOG.warning("%s/%s: no answer through the switch after %.0f s; not waiting "
                            "for it any more", probe.netns, probe.ifname, self.give_up)
                del self._unverified[port]
            else:
                waiting.setdefault(topology, []).append(probe.netns)
        return {
            topology: f"waiting for the data path to forward for {len(names)} interface(s) "
                      f"({', '.join(sorted(names)[:3])}{' …' if len(names) > 3 else ''})"
            for topology, names in waiting.items()
        }
