"""What ``switchboard services`` shows: instances from Consul's health API, VIPs from the
daemons' status reports. Building rows is pure; :func:`health_entries` is the I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import consul

from discovery.catalog import worst_status
from discovery.instances import (
    CONTAINER_KEY,
    OWNER_KEY,
    OWNER_VALUE,
    REGISTRY_KEY,
    TOPOLOGY_KEY,
    TOPOLOGY_TAG,
)

__all__ = ["health_entries", "instance_rows", "vip_rows"]

Reports = Mapping[tuple[str, str], Mapping[str, Any]]


def _instance_name(meta: Mapping[str, str], service_id: str) -> str:
    if REGISTRY_KEY in meta:
        return f"registry:{meta[REGISTRY_KEY]}"
    return meta.get(CONTAINER_KEY) or service_id


def instance_rows(
    entries: Mapping[str, Iterable[Mapping[str, Any]]],
    topology: str | None = None,
    everything: bool = False,
) -> list[dict[str, Any]]:
    """One row per instance in ``/v1/health/service/<name>`` answers (service -> entries),
    sorted by service, topology and instance. Only Switchboard's instances unless
    ``everything``; only those of ``topology`` when given."""
    rows = []
    for name, found in entries.items():
        for entry in found:
            svc, node = entry.get("Service") or {}, entry.get("Node") or {}
            meta = svc.get("Meta") or {}
            ours = meta.get(OWNER_KEY) == OWNER_VALUE
            if not (ours or everything) or (topology and meta.get(TOPOLOGY_KEY) != topology):
                continue
            checks = entry.get("Checks") or []
            rows.append({
                "service": name,
                "instance": _instance_name(meta, svc.get("ID", "")),
                "topology": meta.get(TOPOLOGY_KEY, ""),
                "id": svc.get("ID", ""),
                "address": svc.get("Address") or node.get("Address", ""),
                "port": int(svc.get("Port") or 0),
                "tags": [t for t in svc.get("Tags") or []  # the topology column has it
                         if not (ours and t == TOPOLOGY_TAG.format(meta.get(TOPOLOGY_KEY)))],
                "health": worst_status(c.get("Status", "critical") for c in checks),
                "checks": {c.get("CheckID", ""): c.get("Status", "") for c in checks},
                "node": node.get("Node", ""),
            })
    return sorted(rows, key=lambda r: (r["service"], r["topology"], r["instance"], r["id"]))


def vip_rows(reports: Reports, topology: str | None = None) -> list[dict[str, Any]]:
    """One row per service VIP in the daemons' reports (host, topology) -> report, with
    the instances the switch currently sends new connections to."""
    rows = []
    for (host, topo), report in sorted(reports.items()):
        if topology and topo != topology:
            continue
        for svc in report.get("services") or []:
            rows.append({"service": svc["name"], "topology": topo, "host": host,
                         "vip": svc["vip"], "port": svc.get("port"),
                         "published": svc.get("published"),
                         "backends": list(svc.get("backends") or [])})
    return sorted(rows, key=lambda r: (r["service"], r["topology"], r["host"]))


def health_entries(client: consul.Consul) -> dict[str, list[dict[str, Any]]]:
    """Service name -> ``/v1/health/service/<name>`` for every service in the catalog."""
    _, names = client.catalog.services()
    result = {}
    for name in sorted(names or {}):
        _, entries = client.health.service(name)
        result[name] = entries or []
    return result
