"""What the daemons did, cluster-wide: events kept in Consul KV as a bounded history.

Each daemon writes its own events under ``P/events/<host>/<time_ns>-<seq>`` (one JSON value
each) and keeps only its last :data:`KEEP` keys, deleting its oldest in the same transaction
as it writes new ones (:mod:`controller.daemon.events`). One ring per host: a writer only ever
deletes its own keys, so hosts never contend, and the history is bounded by ``KEEP`` times
the number of hosts. Readers merge every host's keys and order them by time.

This module is pure apart from :func:`read_events` and :func:`follow` (Consul reads): the
key layout, the event record, the diffs that turn two consecutive status reports into
events, and the lines ``switchboard events`` prints.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import consul

KEEP = 256  # events each host keeps; older ones are deleted as new ones are written
ALIVE = frozenset({"running", "crash-looping", "up", "attached"})  # a row's live states
DEAD = frozenset({"stopped", "exited", "failed", "backoff", "missing"})

Row = Mapping[str, Any]
Report = Mapping[str, Any]


@dataclass(frozen=True)
class Event:
    """One thing a daemon did or saw. ``kind`` is ``subject.verb`` (``container.restarted``)."""

    kind: str
    message: str
    host: str = ""
    topology: str = ""
    container: str = ""
    time: float = 0.0  # seconds since the epoch
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def events_prefix(prefix: str, host: str = "") -> str:
    """``P/events/`` or one host's ``P/events/<host>/``."""
    return f"{prefix.strip('/')}/events/" + (f"{host}/" if host else "")


def event_key(prefix: str, host: str, time_ns: int, seq: int) -> str:
    """Sortable within a host: zero-padded nanoseconds, then a sequence number."""
    return f"{events_prefix(prefix, host)}{time_ns:020d}-{seq:06d}"


def decode(entry: Mapping[str, Any]) -> Event | None:
    """The event a KV entry holds; None when it is not one (foreign or corrupted)."""
    try:
        data = json.loads(entry.get("Value") or b"")
        details = data.get("details") or {}
        when = float(data["time"])
        if not 0 <= when < 1e11:  # NaN, infinite or no date a clock gives
            return None
        return Event(kind=str(data["kind"]), message=str(data["message"]),
                     host=str(data.get("host", "")), topology=str(data.get("topology", "")),
                     container=str(data.get("container", "")), time=when,
                     details=details if isinstance(details, dict) else {})
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def encode(event: Event) -> bytes:
    return json.dumps(event.to_json(), sort_keys=True, separators=(",", ":")).encode()


def ordered(entries: Iterable[Mapping[str, Any]]) -> list[tuple[str, Event]]:
    """(key, event) of the readable entries, oldest first (time, then host and key)."""
    found = [(str(e["Key"]), ev) for e in entries if (ev := decode(e)) is not None]
    return sorted(found, key=lambda ke: (ke[1].time, ke[1].host, ke[0]))


def line(event: Event) -> str:
    """One line of ``switchboard events``: local time, host, kind, subject, message."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.time))
    stamp += f".{int(event.time * 1000) % 1000:03d}"
    subject = "/".join(p for p in (event.topology, event.container) if p) or "-"
    return f"{stamp}  {event.host or '-'}  {event.kind:<22} {subject:<24} {event.message}"


# --------------------------------------------------------------------------- reading


def read_events(client: consul.Consul, prefix: str, index: str | None = None,
                wait: str | None = None) -> tuple[str | None, list[tuple[str, Event]]]:
    """Every host's events, oldest first; blocks up to ``wait`` for a change after ``index``."""
    kwargs: dict[str, Any] = {"recurse": True}
    if index is not None:
        kwargs.update(index=index, wait=wait or "30s")
    index, entries = client.kv.get(events_prefix(prefix), **kwargs)
    return index, ordered(entries or [])


def follow(client: consul.Consul, prefix: str, index: str | None,
           seen: Iterable[str]) -> Iterator[Event]:
    """New events as they are written (blocking queries), after those with keys ``seen``."""
    known = set(seen)
    while True:
        new_index, found = read_events(client, prefix, index, "30s")
        if new_index == index:
            continue
        for key, event in found:
            if key not in known:
                yield event
        known = {key for key, _ in found}  # keys deleted by a ring are forgotten too
        index = new_index


# --------------------------------------------------------------------------- diffs (pure)


def _containers(report: Report | None) -> dict[str, Row]:
    """Container name -> its first row (a container has one row per interface)."""
    found: dict[str, Row] = {}
    for row in (report or {}).get("containers") or []:
        if isinstance(row, Mapping) and "container" in row:
            found.setdefault(str(row["container"]), row)
    return found


def _alive(row: Row | None) -> bool | None:
    """True when its state is a live one, False when dead, None when unknown (``broken``)."""
    state = (row or {}).get("state")
    return True if state in ALIVE else False if state in DEAD else None


def _backends(report: Report | None) -> set[tuple[str, str]]:
    """(service, container) of every active VIP backend in a report."""
    found = set()
    for svc in (report or {}).get("services") or []:
        for backend in svc.get("backends") or []:
            found.add((str(svc.get("name")), str(backend.get("container"))))
    return found


def report_events(host: str, topology: str, before: Report | None,
                  after: Report | None, now: float) -> list[Event]:
    """What changed between two consecutive reports of one host for one topology. Pure.

    Containers: started (it appears alive, or comes back to life), restarted (its restart
    count went up), exited (a live one died), stopped (its row is gone: `down`, an edit, or
    it moved to another host). VIP backends added and removed, for backends this host runs
    (every host reports every backend of a topology: one reports each). The topology's
    reconcile failed (its state turns ``error``) and recovered (back to ``converged``).
    """
    events: list[Event] = []

    def add(kind: str, container: str, message: str, **details: Any) -> None:
        events.append(Event(kind, message, host, topology, container, now,
                            {k: v for k, v in details.items() if v not in (None, "")}))

    old, new = _containers(before), _containers(after)
    for name, row in new.items():
        was = old.get(name)
        alive, restarts = _alive(row), int(row.get("restarts") or 0)
        if was is None:
            if alive:
                add("container.started", name, f"started on {host}")
            continue
        if restarts > int(was.get("restarts") or 0):
            add("container.restarted", name,
                f"restarted (restart {restarts}, policy {row.get('restart') or '-'}, "
                f"last exit status {row.get('exit_status')})",
                restarts=restarts, exit_status=row.get("exit_status"))
        elif _alive(was) and alive is False:
            add("container.exited", name, f"{row.get('state')}: {row.get('note') or 'exited'}",
                state=row.get("state"), exit_status=row.get("exit_status"))
        elif _alive(was) is False and alive:
            add("container.started", name, f"started on {host}")
    for name in sorted(set(old) - set(new)):
        add("container.stopped", name, f"stopped on {host} (removed from this host)")
    mine = set(old) | set(new)
    before_b, after_b = _backends(before), _backends(after)
    for service, container in sorted(after_b - before_b):
        if container in mine:
            add("vip.backend_added", container, f"now a backend of VIP service {service}",
                service=service)
    for service, container in sorted(before_b - after_b):
        if container in mine:
            add("vip.backend_removed", container, f"no longer a backend of VIP service "
                f"{service}", service=service)
    state_before = (before or {}).get("state")
    state_after = (after or {}).get("state")
    if state_after == "error" and state_before != "error":
        add("reconcile.failed", "", str((after or {}).get("error") or "error"))
    elif state_after == "converged" and state_before == "error":
        add("reconcile.recovered", "", "converged again")
    return events


def reports_events(host: str, before: Mapping[str, Report], after: Mapping[str, Report],
                   now: float) -> list[Event]:
    """:func:`report_events` for every topology in either set of reports. Pure."""
    events = []
    for topology in sorted(set(before) | set(after)):
        if before.get(topology) != after.get(topology):
            events += report_events(host, topology, before.get(topology),
                                    after.get(topology), now)
    return events


def host_events(before: Mapping[str, bool], after: Mapping[str, bool], by: str,
                now: float) -> list[Event]:
    """host.up / host.down for hosts whose readiness changed (host -> ready), and host.up
    for a host that joins ready. Pure."""
    events = []
    for name in sorted(after):
        was = before.get(name, False)
        if was != after[name]:
            kind = "host.up" if after[name] else "host.down"
            state = "ready" if after[name] else "down"
            events.append(Event(kind, f"{name} is {state} (seen by {by})", host=by, time=now,
                                details={"host": name}))
    return events


Check = tuple[str, str, str]  # (topology, container, service)


def health_events(host: str, before: Mapping[Check, str], after: Mapping[Check, str],
                  now: float) -> list[Event]:
    """instance.<status> for instances whose check status changed, or that are new. Pure."""
    events = []
    for (topology, container, service), status in sorted(after.items()):
        if before.get((topology, container, service)) != status:
            events.append(Event(f"instance.{status}", f"instance of {service} is {status}",
                                host, topology, container, now, {"service": service}))
    return events
