"""The daemon's registration: its host record in Consul KV and its liveness in Consul itself.

:func:`start` runs one thread that

1. claims the host record ``P/hosts/<host>`` (layout in sbcore.state.hosts). A new host takes
   the lowest slot nobody holds, with a check-and-set on ``P/slots/<n>`` in the same
   transaction that creates its record, so two hosts never share a slot; a host that comes
   back keeps its slot and has the rest of its record updated;
2. registers the service ``switchboard-host`` in the LOCAL Consul agent with a TTL check,
   and passes that check every ``interval`` seconds. When the daemon dies, the TTL expires;
   when the host dies, Consul fails its node's ``serfHealth``. When the agent lost the
   registration (a restart with no data), the pass fails and the service is registered again.

No Consul call holds the daemon: they all run on this thread, with the client's timeout;
a failure is retried every half second (an agent that restarts has the registration back
within that of answering) and logged once per outage.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import consul

from sbcore.model.desired import raw_value
from sbcore.state import hosts
from sbcore.state.store import kv_op

LOG = logging.getLogger("switchboard.registration")
TTL = 10.0  # seconds without a pass before Consul marks the daemon critical
INTERVAL = 2.0  # seconds between passes
RETRY = 0.5  # seconds between tries while the agent does not answer (a restart: back soon)
REAP_AFTER = "10m"  # the agent removes a registration critical for this long


@dataclass
class Registration:
    """What :func:`start` returns: the thread, and the slot once claimed (``claimed`` is set
    then; the slot never changes afterwards)."""

    host: str
    prefix: str
    thread: threading.Thread | None = None
    slot: int | None = None
    record: dict[str, Any] = field(default_factory=dict)
    claimed: threading.Event = field(default_factory=threading.Event)
    registered: bool = False


def version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:
        return "dev"


def start(
    client: consul.Consul, prefix: str, host_id: str, info: dict[str, Any],
    stopping: threading.Event, ttl: float = TTL, interval: float = INTERVAL,
) -> Registration:
    """Claim the host record and keep the host registered until ``stopping`` is set.

    ``info`` is merged into the record (tunnel_ip, datapath, underlay_mtu, bridge, and
    anything else); ``name``, ``slot`` and ``started`` are this function's."""
    prefix = prefix.strip("/")
    reg = Registration(host_id, prefix)
    started = time.time()
    base = {"tunnel_ip": None, "datapath": "netdev", "underlay_mtu": None, "bridge": "",
            "version": version(), "pid": os.getpid()}

    sid = hosts.service_id(prefix)

    def run() -> None:
        failing = False
        usurped = ""  # another daemon's host, once it registered under our ID
        while not stopping.is_set():
            try:
                if reg.slot is None:
                    record = {**base, **info, "name": host_id, "started": started}
                    reg.slot = claim(client, prefix, host_id, record)
                    reg.record = {**record, "slot": reg.slot}
                    reg.claimed.set()
                    LOG.info("host %s holds slot %d", host_id, reg.slot)
                owner = owner_of(client, sid)
                if owner is None:  # never registered, or the agent lost it (a restart)
                    if reg.registered:
                        LOG.warning("the Consul agent lost this host's registration; "
                                    "registering again")
                    register(client, prefix, host_id, ttl)
                    reg.registered, usurped = True, ""
                elif owner != host_id:  # one agent, two daemons of one prefix: never fight
                    if usurped != owner:
                        LOG.error("host %s: another daemon registered as host %s in this "
                                  "Consul agent (service %s); one agent serves one host, so "
                                  "%s shows as down: give each host its own agent", host_id,
                                  owner, sid, host_id)
                    usurped = owner
                    stopping.wait(interval)
                    continue
                try:
                    client.agent.check.ttl_pass(f"service:{sid}")
                except consul.ConsulException as exc:  # the check is gone: register again
                    LOG.warning("cannot pass this host's TTL check (%s); registering again",
                                exc)
                    register(client, prefix, host_id, ttl)
                if failing:
                    LOG.warning("host registration: the Consul agent answers again")
                failing = False
            except Exception as exc:  # noqa: BLE001 - Consul down: retried soon
                if not failing:
                    LOG.warning("host registration: cannot reach Consul: %s (retrying every "
                                "%g s)", exc, min(interval, RETRY))
                failing = True
            stopping.wait(min(interval, RETRY) if failing else interval)
        with contextlib.suppress(Exception):  # stopped cleanly: say so now, not after the TTL
            if owner_of(client, sid) == host_id:
                client.agent.check.ttl_fail(f"service:{sid}", "daemon stopped")

    reg.thread = threading.Thread(target=run, name="registration", daemon=True)
    reg.thread.start()
    return reg


def owner_of(client: consul.Consul, sid: str) -> str | None:
    """The host whose registration the local agent holds under ``sid`` (None: none)."""
    service = client.agent.services().get(sid)
    if service is None:
        return None
    return str((service.get("Meta") or {}).get(hosts.HOST_META) or "")


def register(client: consul.Consul, prefix: str, host_id: str, ttl: float) -> None:
    """(Re-)register ``switchboard-host`` in the local agent, its TTL check passing."""
    client.agent.service.register(
        hosts.SERVICE, service_id=hosts.service_id(prefix),
        meta={hosts.HOST_META: host_id, hosts.PREFIX_META: prefix},
        check={"Name": "TTL check", "TTL": f"{ttl:g}s", "Status": "passing",
               # a daemon stopped for good leaves no zombie (the host record stays: down)
               "DeregisterCriticalServiceAfter": REAP_AFTER,
               "Notes": "passed by switchboard controller; critical when it stops"},
        replace_existing_checks=True,
    )
    LOG.info("registered host %s in the local Consul agent (TTL %gs)", host_id, ttl)


def claim(client: consul.Consul, prefix: str, host_id: str, record: dict[str, Any]) -> int:
    """Write the host record, keeping the host's slot or claiming the lowest free one; the
    slot. Retries when another host claimed at the same time."""
    key = hosts.host_key(prefix, host_id)
    slots = hosts.slots_prefix(prefix)
    for _ in range(100):
        reply = client.txn.put([kv_op("get-tree", hosts.hosts_prefix(prefix)),
                                kv_op("get-tree", slots)])
        entries = [r["KV"] for r in reply.get("Results") or []]
        held: dict[int, str] = {}  # slot -> holder (slot keys and records)
        mine_index, mine_slot = 0, None
        for entry in entries:
            raw = raw_value(entry) or b""
            if entry["Key"].startswith(slots):
                try:
                    held.setdefault(int(entry["Key"][len(slots):]), raw.decode())
                except ValueError:
                    continue
            elif entry["Key"] == key:
                mine_index = int(entry["ModifyIndex"])
                try:
                    mine_slot = hosts.parse_record(key, raw, hosts.hosts_prefix(prefix))["slot"]
                except ValueError as exc:
                    LOG.warning("this host's record %s is unreadable (%s); rewriting it",
                                key, exc)
            else:
                try:
                    other = hosts.parse_record(entry["Key"], raw, hosts.hosts_prefix(prefix))
                except ValueError:
                    continue
                held.setdefault(other["slot"], other["name"])
        if mine_slot is None:  # a slot key this host holds (a record deleted by hand)
            mine_slot = min((s for s, h in held.items() if h == host_id), default=None)
        ops = []
        if mine_slot is None:
            mine_slot = next(s for s in range(len(held) + 1) if s not in held)
        if mine_slot not in held:  # claim its slot key: fails if someone took it meanwhile
            ops.append(kv_op("cas", slots + str(mine_slot), host_id.encode(), index=0))
        elif held[mine_slot] != host_id:
            LOG.error("host %s's slot %d is also claimed by %s; keeping it (fix the keys "
                      "under %s by hand)", host_id, mine_slot, held[mine_slot], slots)
        value = json.dumps({**record, "slot": mine_slot}, sort_keys=True).encode()
        ops.append(kv_op("cas", key, value, index=mine_index))
        try:
            client.txn.put(ops)
        except consul.ConsulException as exc:
            if str(exc).startswith("409"):
                time.sleep(0.05)
                continue  # another host claimed or the record changed: read again
            raise
        return mine_slot
    raise RuntimeError(f"could not claim a slot for host {host_id}: too many concurrent claims")

