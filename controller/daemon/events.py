"""The daemon's side of ``switchboard events``: finding events and writing them to Consul.

Nothing here runs in the reconcile loop. The loop hands over its latest reports
(:meth:`EventLog.observe`, a reference swap) and anything may :meth:`EventLog.emit`; both
return at once. One background thread turns report changes into events
(:func:`sbcore.state.events.reports_events`) and writes the queue in Consul transactions of
up to 64 operations: the new keys plus the deletion of this host's oldest ones beyond
:data:`sbcore.state.events.KEEP`. While Consul does not answer, events wait in a bounded
queue (the oldest are dropped past :data:`QUEUE_MAX`, and counted).

:class:`InstanceHealth` follows the checks of this host's instances (a blocking query on the
node's health) for ``instance.passing``/``critical`` events and the instance metrics.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import consul

from sbcore.state import events as ev
from sbcore.state.events import Event
from sbcore.state.store import TXN_LIMIT, Store, kv_op

LOG = logging.getLogger("switchboard.events")

QUEUE_MAX = 10_000  # events waiting for Consul; older ones are dropped beyond it
FLUSH_SECONDS = 0.5  # how often the writer looks at the queue and the reports
HOSTS_FRESH = 5.0  # seconds: a decider's view of the hosts older than this starts afresh
HEALTH_SETTLE = 0.5  # seconds between two reads of the node's checks: a burst is read once

Reports = Mapping[str, Mapping[str, Any]]


class EventLog:
    """This host's events: found and written in the background; never blocks the caller."""

    def __init__(self, store: Store, host: str, keep: int = ev.KEEP,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.host, self.keep, self.clock = store, host, keep, clock
        self.written = 0  # events stored in Consul
        self.dropped = 0  # events lost: the queue overflowed while Consul did not answer
        self._queue: deque[Event] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._seq = itertools.count()
        self._own: deque[str] | None = None  # this host's keys, oldest first (None: unread)
        self._latest: Reports | None = None  # the loop's last reports, not yet diffed
        self._reports: Reports | None = None  # the reports events were last found against
        self._hosts: dict[str, bool] = {}
        self._hosts_at = 0.0
        self._thread: threading.Thread | None = None

    # --- what callers use (all return at once) -------------------------------------------
    def emit(self, kind: str, message: str, topology: str = "", container: str = "",
             **details: Any) -> None:
        """Queue one event of this host."""
        self.add([Event(kind, message, self.host, topology, container, self.clock(),
                         {k: v for k, v in details.items() if v is not None})])

    def observe(self, reports: Reports) -> None:
        """The reports of the pass that just ended (topology -> report)."""
        self._latest = dict(reports)
        self._wake.set()

    def hosts(self, ready: Mapping[str, bool]) -> None:
        """The hosts' readiness as the rescheduler's decider sees it (every second while it
        holds the lock). A decider new to the lock assumes every host it knows was ready,
        so a host down when it takes over (often the former decider's) is reported down."""
        now = time.monotonic()
        before = self._hosts if now - self._hosts_at < HOSTS_FRESH else dict.fromkeys(ready, True)
        self._hosts, self._hosts_at = dict(ready), now
        self.add(ev.host_events(before, ready, self.host, self.clock()))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds), then stop."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until the queue is written (tests, shutdown); True when it was."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pending() and self._latest is None:
                return True
            self._wake.set()
            time.sleep(0.05)
        return False

    # --- the writer thread ---------------------------------------------------------------
    def add(self, events: list[Event]) -> None:
        """Queue events found elsewhere (instance health)."""
        if not events:
            return
        with self._lock:
            self._queue.extend(events)
            while len(self._queue) > QUEUE_MAX:
                self._queue.popleft()
                self.dropped += 1
        self._wake.set()

    def _run(self) -> None:
        failing = False
        while self._reports is None and not self._stopping.is_set():
            try:  # before the first pass writes its reports over them
                self._reports = self._earlier_reports()
            except Exception as exc:  # noqa: BLE001 - Consul down: compare with the first
                LOG.debug("cannot read this host's earlier reports: %s", exc)
                if self._latest is not None:
                    self._reports = self._latest
                self._stopping.wait(0.5)
        while True:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            stopping = self._stopping.is_set()
            try:
                self._find()
                while self._write_batch():
                    pass
                if failing:
                    LOG.info("events are written to Consul again")
                failing = False
            except Exception as exc:  # noqa: BLE001 - Consul down: the queue waits
                if not failing:
                    LOG.warning("cannot write events to Consul: %s (they wait, up to %d)",
                                exc, QUEUE_MAX)
                failing = True
                if stopping:
                    return
                self._stopping.wait(1.0)
            if stopping:
                return

    def _find(self) -> None:
        """Turn the latest reports into events, against the previous ones. The first
        reports are compared with those the previous daemon left in Consul (read when the
        thread starts), so a restarted daemon reports what changed meanwhile and nothing
        twice."""
        latest = self._latest
        if latest is None or self._reports is None:
            return
        self._latest = None if self._latest is latest else self._latest
        self.add(ev.reports_events(self.host, self._reports, latest, self.clock()))
        self._reports = latest

    def _earlier_reports(self) -> dict[str, Any]:
        prefix = self.store.status_key(self.host, "")
        _, entries = self.store.client.kv.get(prefix, recurse=True)
        found = {}
        for entry in entries or []:
            try:
                found[entry["Key"][len(prefix):]] = json.loads(entry["Value"] or b"")
            except (ValueError, TypeError):
                continue
        return found

    def _write_batch(self) -> bool:
        """Write up to one transaction: queued events, and the deletion of this host's
        oldest keys beyond ``keep``; True when more remains to be written or deleted."""
        if self._own is None:
            _, keys = self.store.client.kv.get(ev.events_prefix(self.store.prefix, self.host),
                                               keys=True)
            self._own = deque(sorted(keys or []))
        with self._lock:
            batch = list(itertools.islice(self._queue, TXN_LIMIT // 2))
        excess = max(0, len(self._own) + len(batch) - self.keep)
        doomed = list(itertools.islice(self._own, min(excess, TXN_LIMIT - len(batch))))
        if not batch and not doomed:
            return False
        keys = [ev.event_key(self.store.prefix, self.host, int(e.time * 1e9),
                             next(self._seq) % 1_000_000) for e in batch]
        self.store.client.txn.put(
            [kv_op("set", k, ev.encode(e)) for k, e in zip(keys, batch, strict=True)]
            + [kv_op("delete", k) for k in doomed])
        with self._lock:
            for _ in batch:
                self._queue.popleft()
            more = bool(self._queue)
        for _ in doomed:
            self._own.popleft()
        self._own.extend(keys)
        self.written += len(batch)
        return more or len(self._own) > self.keep


# --------------------------------------------------------------------------- instance health


def parse_service_id(service_id: str) -> tuple[str, str, str] | None:
    """(topology, container, service) of a Switchboard instance ID ``sb.T.C.S``; else None."""
    parts = service_id.split(".")
    return (parts[1], parts[2], parts[3]) if len(parts) == 4 and parts[0] == "sb" else None


_RANK = {"passing": 0, "warning": 1, "critical": 2}


def instance_statuses(checks: list[Mapping[str, Any]], services: Mapping[str, Any],
                      owned: set[tuple[str, str]]) -> dict[ev.Check, str]:
    """(topology, container, service) -> worst check status of each instance this host owns
    (``owned``: its (topology, container) pairs); an instance without a check is passing,
    as Consul counts it. Pure."""
    found: dict[ev.Check, str] = {}
    for service_id in services:
        key = parse_service_id(service_id)
        if key is not None and key[:2] in owned:
            found[key] = "passing"
    for check in checks:
        key = parse_service_id(str(check.get("ServiceID") or ""))
        if key is None or key[:2] not in owned:
            continue
        status = str(check.get("Status") or "critical")
        if _RANK.get(status, 2) >= _RANK.get(found.get(key, "passing"), 0):
            found[key] = status
    return found


class InstanceHealth:
    """Follows the health of this node's checks (blocking queries) and reports the changes
    of this host's instances to the event log. After each answer it waits
    :data:`HEALTH_SETTLE` before asking again: a hundred registrations in a row are then
    read a few times, not a hundred (each read lists every check and service of the node,
    while the daemon is busiest and the agent is applying them)."""

    def __init__(self, client: consul.Consul, log: EventLog,
                 owned: Callable[[], set[tuple[str, str]]]) -> None:
        self.client, self.log, self.owned = client, log, owned
        self.statuses: dict[ev.Check, str] = {}  # the latest view (metrics read it)
        self._seen: tuple[list[Any], dict[str, Any]] | None = None  # last checks, services
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="instance-health", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()

    def refresh(self) -> None:
        """Judge the last answer again against what this host owns now (its reports
        changed: an instance's check may have been seen before its container's row)."""
        self._judge(None)

    def _judge(self, seen: tuple[list[Any], dict[str, Any]] | None) -> None:
        with self._lock:
            first = self._seen is None
            self._seen = seen or self._seen
            if self._seen is None:
                return
            now = instance_statuses(*self._seen, self.owned())
            if not first:
                self.log.add(ev.health_events(self.log.host, self.statuses, now,
                                              self.log.clock()))
            self.statuses = now

    def _run(self) -> None:
        index, node = None, None
        while not self._stopping.is_set():
            try:
                node = node or self.client.agent.self()["Config"]["NodeName"]
                index, checks = self.client.health.node(node, index=index, wait="30s")
                services = self.client.agent.services()
            except Exception as exc:  # noqa: BLE001 - agent down: try again
                LOG.debug("instance health: %s", exc)
                index = None
                self._stopping.wait(1.0)
                continue
            self._judge((checks or [], services or {}))
            self._stopping.wait(HEALTH_SETTLE)
