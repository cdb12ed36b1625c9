"""The host inventory: who the hosts are (Consul KV) and which are alive (Consul health).

Each host's daemon (controller.daemon.registration) keeps two things in Consul::

    P/hosts/<host>      {"name", "slot", "tunnel_ip", "datapath", "underlay_mtu", "bridge",
                         "version", "pid", "started", ...}: the host's record, kept forever
    P/slots/<n>         "<host>": who holds slot n (claimed once, with a check-and-set)

and, in its local Consul agent, the service ``switchboard-host`` with a TTL check that the
daemon passes every few seconds (Meta: ``switchboard-host`` = the host, ``switchboard-prefix``
= P). Consul tracks liveness: a dead daemon's TTL check goes critical, a dead host's agent
fails its node's ``serfHealth``. A host is ``ready`` when it has a record and a registration
whose node and TTL check both pass; otherwise it is ``down``, with the reason.

Parsing is pure (:func:`parse_hosts`); :func:`read_hosts` is the one read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import consul

from sbcore.model.desired import raw_value
from sbcore.model.inventory import HostRecord, Hosts

SERVICE = "switchboard-host"  # the Consul service every host's daemon registers
HOST_META = "switchboard-host"  # Meta: the host's name
PREFIX_META = "switchboard-prefix"  # Meta: the KV prefix the daemon serves
DEFAULT_PREFIX = "switchboard"
SERF_CHECK = "serfHealth"
GRACE = 5.0  # seconds `up` waits for a host to become ready (a daemon started a moment ago)


def hosts_prefix(prefix: str) -> str:
    return f"{prefix.strip('/')}/hosts/"


def host_key(prefix: str, host: str) -> str:
    return hosts_prefix(prefix) + host


def slots_prefix(prefix: str) -> str:
    return f"{prefix.strip('/')}/slots/"


def service_id(prefix: str) -> str:
    """The ID of the daemon's registration in its local agent: ``switchboard-host`` for the
    default prefix; private prefixes (tests, several Switchboards on one agent) get their own
    so that they never replace each other's."""
    prefix = prefix.strip("/")
    return SERVICE if prefix == DEFAULT_PREFIX else f"{SERVICE}-{prefix.replace('/', '-')}"


# --------------------------------------------------------------------------- parsing (pure)

def parse_record(key: str, raw: bytes | None, base: str) -> dict[str, Any]:
    """A record's JSON value, checked: a dict naming the host of its key, with a slot.
    ValueError (with why) otherwise."""
    name = key[len(base):]
    if not name or "/" in name:
        raise ValueError("not a host record (nested key)")
    try:
        value = json.loads(raw or b"")
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
        raise ValueError("not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    if value.get("name") != name:
        raise ValueError(f"names host {value.get('name')!r}, not {name!r}")
    slot = value.get("slot")
    if not isinstance(slot, int) or isinstance(slot, bool) or slot < 0:
        raise ValueError(f"bad slot {slot!r}")
    for field_name, kind in (("tunnel_ip", str), ("underlay_mtu", int)):
        if value.get(field_name) is not None and not isinstance(value[field_name], kind):
            raise ValueError(f"bad {field_name} {value[field_name]!r}")
    return value


def liveness(entries: Iterable[Mapping[str, Any]], prefix: str) -> dict[str, tuple[bool, str]]:
    """Host -> (alive, why not) from ``/v1/health/service/switchboard-host`` entries of this
    prefix. A host with several registrations (a moved agent) is alive if one is."""
    prefix = prefix.strip("/")
    result: dict[str, tuple[bool, str]] = {}
    for entry in entries:
        service = entry.get("Service") or {}
        meta = service.get("Meta") or {}
        host = meta.get(HOST_META)
        if not host or meta.get(PREFIX_META, DEFAULT_PREFIX) != prefix:
            continue
        node = (entry.get("Node") or {}).get("Node", "?")
        alive, why = True, ""
        for check in entry.get("Checks") or []:
            mine = check.get("ServiceID") == service.get("ID")
            if check.get("Status") == "passing" or not (mine or check.get("CheckID") == SERF_CHECK):
                continue  # other node checks say nothing about this daemon
            alive = False
            if check.get("CheckID") == SERF_CHECK:
                why = f"its Consul agent (node {node}) is not alive in the cluster"
                break
            output = (check.get("Output") or "").strip().splitlines()
            label = check.get("Name") or check.get("CheckID")
            why = (f"its daemon stopped answering ({label}: {check.get('Status')}"
                   f"{'; ' + output[0] if output else ''})")
        if host not in result or (alive and not result[host][0]):
            result[host] = (alive, why)
    return result


def parse_hosts(
    entries: Iterable[Mapping[str, Any]], health: Iterable[Mapping[str, Any]], prefix: str
) -> Hosts:
    """The KV entries under ``P/hosts/`` (from a KV read or a transaction) joined with the
    health entries of the ``switchboard-host`` service. Pure."""
    base = hosts_prefix(prefix)
    alive = liveness(health, prefix)
    records, skipped = [], {}
    for entry in entries:
        key = entry["Key"]
        try:
            value = parse_record(key, raw_value(dict(entry)), base)
        except ValueError as exc:
            skipped[key] = str(exc)
            continue
        name = value["name"]
        up, why = alive.get(name, (False, "not registered in Consul (its daemon is not running, "
                                          "or its Consul agent lost the registration)"))
        records.append(HostRecord(
            name=name, slot=value["slot"], tunnel_ip=value.get("tunnel_ip"),
            datapath=str(value.get("datapath") or "netdev"),
            underlay_mtu=value.get("underlay_mtu"), bridge=str(value.get("bridge") or ""),
            version=str(value.get("version") or ""), state="ready" if up else "down",
            reason=why if not up else "",
        ))
    return Hosts(records, skipped)


def describe(hosts: Hosts) -> str:
    """A few words on why no host is ready: ``no host has registered`` or
    ``h1 is down (its daemon stopped answering ...), h2 is down (...)``."""
    if not hosts:
        return "no host has registered"
    return "no host is ready: " + "; ".join(
        f"{name} is down ({record.reason})" for name, record in hosts.items()
    )


# --------------------------------------------------------------------------- reading

def read_hosts(client: consul.Consul, prefix: str) -> Hosts:
    """Every host record under ``P/hosts/`` with its state (a Consul error propagates)."""
    _, entries = client.kv.get(hosts_prefix(prefix), recurse=True)
    return parse_hosts(entries or [], read_health(client), prefix)


def read_health(client: consul.Consul) -> list[dict[str, Any]]:
    """The ``switchboard-host`` registrations across the cluster, with their checks."""
    _, health = client.health.service(SERVICE)
    return list(health or [])


def wait_ready(client: consul.Consul, prefix: str, grace: float = GRACE) -> Hosts:
    """:func:`read_hosts`, polled for up to ``grace`` seconds until some host is ready."""
    deadline = time.monotonic() + grace
    while not (hosts := read_hosts(client, prefix)).ready() and time.monotonic() < deadline:
        time.sleep(0.25)
    return hosts
