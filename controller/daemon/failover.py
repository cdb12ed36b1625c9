"""Moving containers off hosts that stay down: the rescheduler every daemon runs, of which
exactly one decides at a time.

The decider is the holder of a Consul lock, ``P/leader``, acquired with a session tied to
this node's ``serfHealth`` and renewed every second with a 10 s TTL: when the host dies, or
the daemon stops renewing, Consul ends the session and frees the lock (after a 1 s lock
delay), and another daemon takes it. A daemon started again on the same host ends its
predecessor's session at once. No consensus of our own: Consul's servers decide who holds it.

The holder reads the hosts every second and notes when it first saw each one down. A host
down for longer than the grace period (``--reschedule-after``, 30 s by default; a new holder
starts counting afresh) is *gone*: every container placed there that does not name its host
is placed on a ready host (sbcore.plan.placement.evacuate), keeping its addresses and MACs,
which the allocation holds, not the host. The new placements are one KV transaction that
also checks the lock is still held and does the admission check-and-set, so a concurrent
`up` or a former holder can never interleave with it. The daemons see the new placement
through their KV watch: the new host plumbs the container and registers its services, every
host routes its address there, and the old host, when it comes back, removes its copy before
it programs any flow.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import consul

from sbcore.plan.placement import evacuate, load_of
from sbcore.state import hosts as host_inventory
from sbcore.state.store import TXN_LIMIT, Store

LOG = logging.getLogger("switchboard.failover")

LOCK = "leader"  # P/leader: who decides moves (the session holder), value = its host
INTERVAL = 1.0  # seconds between looks at the hosts
LOCK_DELAY = 1  # seconds: how long Consul keeps a freed lock from being taken again
SESSION_TTL = 10  # seconds (Consul's minimum): a daemon that stops renewing loses the lock

Clock = Callable[[], float]


def lock_key(prefix: str) -> str:
    return f"{prefix.strip('/')}/{LOCK}"


class DownClock:
    """When each host was first seen down (by this decider), and which are down longer than
    the grace period. Pure apart from the clock it is given."""

    def __init__(self, grace: float, clock: Clock = time.monotonic) -> None:
        self.grace, self.clock = grace, clock
        self.since: dict[str, float] = {}

    def observe(self, records: host_inventory.Hosts) -> set[str]:
        """Note the hosts' states; the hosts down for at least the grace period."""
        now = self.clock()
        for name, record in records.items():
            if record.ready:
                self.since.pop(name, None)
            else:
                self.since.setdefault(name, now)
        for name in set(self.since) - set(records):
            del self.since[name]
        return {name for name, since in self.since.items() if now - since >= self.grace}

    def reset(self) -> None:
        self.since.clear()


class Rescheduler:
    """Campaigns for the lock and, while holding it, moves containers off gone hosts."""

    def __init__(self, store: Store, host_id: str, check_id: str, grace: float,
                 stopping: threading.Event) -> None:
        self.store, self.host_id = store, host_id
        self.check_id = check_id  # the daemon's TTL check: campaign once it is registered
        self.stopping = stopping
        self.clock = DownClock(grace)
        self.session: str | None = None
        self.leading = False
        self.session_name = f"switchboard rescheduler {host_id} {store.prefix}"
        self.events: Any = None  # controller.daemon.events.EventLog: host up/down, container moved

    def start(self) -> None:
        threading.Thread(target=self._run, name="rescheduler", daemon=True).start()

    def _run(self) -> None:
        failing = False
        while not self.stopping.is_set():
            try:
                self._campaign()
                if self.leading:
                    self._tick()
                failing = False
            except Exception as exc:  # noqa: BLE001 - Consul unreachable or no leader
                if not failing:
                    LOG.warning("rescheduler: %s (retrying every %.0f s)", exc, INTERVAL)
                failing = True
                self._lose("cannot reach Consul")
            self.stopping.wait(INTERVAL)
        self._release()

    def _campaign(self) -> None:
        """Hold a session and try to take the lock with it (Consul says who holds it)."""
        client = self.store.client
        if self.session is None and self.check_id not in client.agent.checks():
            return  # the daemon's own registration is not made yet
        if self.session is not None:
            try:
                client.session.renew(self.session)
            except consul.NotFound:
                self._lose("its session ended")
        if self.session is None:
            self.session = client.session.create(
                name=self.session_name, behavior="release", lock_delay=LOCK_DELAY,
                ttl=SESSION_TTL, checks=["serfHealth"])
        if not self.leading:
            key = lock_key(self.store.prefix)
            self._free_from_previous_self(key)
            if client.kv.put(key, self.host_id, acquire=self.session):
                self.leading = True
                self.clock.reset()
                LOG.info("this host decides where containers of hosts that stay down go")
        else:
            _, entry = client.kv.get(lock_key(self.store.prefix))
            if entry is None or entry.get("Session") != self.session:
                self._lose("the lock was taken from it")

    def _free_from_previous_self(self, key: str) -> None:
        """End the session of this host's previous daemon if it holds the lock (a daemon
        killed and started at once), rather than wait for its TTL to run out."""
        client = self.store.client
        _, entry = client.kv.get(key)
        held_by = (entry or {}).get("Session")
        if not held_by or held_by == self.session:
            return
        _, info = client.session.info(held_by)
        if info and info.get("Name") == self.session_name and \
                info.get("Node") == client.agent.self()["Config"]["NodeName"]:
            client.session.destroy(held_by)
            LOG.info("ended the session of this host's previous daemon, which held the lock")

    def _lose(self, why: str) -> None:
        if self.leading:
            LOG.warning("this host no longer decides moves: %s", why)
        self.leading = False
        self.clock.reset()
        if why != "the lock was taken from it":
            self.session = None

    def _release(self) -> None:
        if self.session is not None:
            try:
                self.store.client.session.destroy(self.session)
            except Exception:  # noqa: BLE001 - Consul ends it with the TTL check anyway
                LOG.debug("could not destroy the rescheduler's session", exc_info=True)

    def _tick(self) -> None:
        """Move what the gone hosts hold, in one transaction."""
        records = host_inventory.read_hosts(self.store.client, self.store.prefix)
        if self.events is not None:
            self.events.hosts({name: record.ready for name, record in records.items()})
        gone = self.clock.observe(records)
        if not gone:
            return
        state = self.store.snapshot()
        load = load_of(s.placement for s in state.topologies.values())
        moved: dict[str, dict[str, str]] = {}
        for name, stored in state.topologies.items():
            after = evacuate(stored.topology, stored.placement, records, load, gone)
            if after != stored.placement:
                moved[name] = after
                load = load_of([*(s.placement for t, s in state.topologies.items()
                                  if t not in moved), *moved.values()])
        # One transaction (at most TXN_LIMIT - 2 topologies): the rest on the next tick,
        # decided again from a fresh read.
        batch = {name: moved[name] for name in sorted(moved)[:TXN_LIMIT - 2]}
        if not batch:
            return
        if not self.store.relocate(
                state, batch, "move off " + ",".join(sorted(gone)),
                (lock_key(self.store.prefix), self.session or "")):
            LOG.info("a concurrent change or a lost lock: deciding again")
            return
        for name, placement in sorted(batch.items()):
            before = state.topologies[name].placement
            for container, host in sorted(placement.items()):
                if before.get(container) != host:
                    LOG.warning("moved container %s of topology %s from %s (down for more "
                                "than %.0f s) to %s", container, name, before.get(container),
                                self.clock.grace, host)
                    if self.events is not None:
                        self.events.emit("container.moved", f"moved from {before.get(container)} "
                                         f"(down for more than {self.clock.grace:.0f} s) to "
                                         f"{host}", name, container,
                                         source=before.get(container), target=host)


def session_check_id(service_id: str) -> str:
    """The ID of the TTL check Consul made for the daemon's ``switchboard-host`` service."""
    return f"service:{service_id}"

