"""Desired state in Consul KV: one key per object under one prefix, plus host status reports.

Layout (``P`` is the prefix, ``switchboard`` by default)::

    P/topologies/<topo>/networks/<name>      network object (as in the file)
    P/topologies/<topo>/routers/<name>
    P/topologies/<topo>/policies/<index>
    P/topologies/<topo>/containers/<name>    {"spec": ..., "addresses": {network: ip}}
    P/topologies/<topo>/services/<name>
    P/topologies/<topo>/applied              {"digest": ..., "source": ...}: written last
    P/status/<host>/<topo>                   the daemon's report for its host

A topology is desired once its ``applied`` digest matches its objects; while an update is
being written the digest does not match and the daemon keeps its previous view.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, ip_address
from typing import Any

import consul

from switchboard import ipam
from switchboard.model import Topology

DEFAULT_CONSUL = "http://127.0.0.1:8500"  # the local agent
TXN_LIMIT = 64  # Consul's limit of operations in one transaction


@dataclass(frozen=True)
class StoredTopology:
    """A desired topology as read back from KV, with its IP allocation."""

    topology: Topology
    allocation: ipam.Allocation
    digest: str
    source: str


def consul_client(address: str) -> consul.Consul:
    """Client for a Consul HTTP address such as ``http://127.0.0.1:8500``."""
    scheme, _, rest = address.partition("://")
    if not rest:
        scheme, rest = "http", address
    host, _, port = rest.partition(":")
    return consul.Consul(host=host, port=int(port or 8500), scheme=scheme)


def topology_objects(topology: Topology, allocation: ipam.Allocation) -> dict[str, Any]:
    """The KV objects of a topology, keyed by their path below ``topologies/<name>/``."""
    data = topology.model_dump(mode="json", by_alias=True, exclude_none=True)
    objects: dict[str, Any] = {}
    for kind in ("networks", "routers", "containers", "services"):
        for name, value in (data.get(kind) or {}).items():
            if kind == "containers":
                addresses = {
                    net: str(allocation[(name, net)]) for net in topology.containers[name].networks
                }
                # JSON keys are stored sorted: keep the file's network order (the first
                # network holds the default route) explicitly.
                value = {"spec": value, "addresses": addresses,
                         "network_order": list(topology.containers[name].networks)}
            objects[f"{kind}/{name}"] = value
    for index, policy in enumerate(data.get("policies") or []):
        objects[f"policies/{index:04d}"] = policy
    return objects


def digest_of(objects: dict[str, Any]) -> str:
    """Content digest of a topology's objects (order independent)."""
    canonical = json.dumps(objects, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def topology_from_objects(name: str, objects: dict[str, Any]) -> tuple[Topology, ipam.Allocation]:
    """Rebuild a topology and its allocation from its KV objects."""
    doc: dict[str, Any] = {"name": name}
    allocation: ipam.Allocation = {}
    for path, value in sorted(objects.items()):
        kind, _, obj = path.partition("/")
        if kind == "policies":
            doc.setdefault("policies", []).append(value)
        elif kind == "containers":
            spec = dict(value["spec"])
            order = value.get("network_order") or list(spec["networks"])
            spec["networks"] = {net: spec["networks"][net] for net in order}
            doc.setdefault("containers", {})[obj] = spec
            for net, ip in value["addresses"].items():
                allocation[(obj, net)] = IPv4Address(ip_address(ip))
        elif kind in ("networks", "routers", "services"):
            doc.setdefault(kind, {})[obj] = value
    return Topology.model_validate(doc), allocation


class Store:
    """Reads and writes Switchboard's keys in Consul KV."""

    def __init__(self, client: consul.Consul, prefix: str = "switchboard") -> None:
        self.client = client
        self.prefix = prefix.strip("/")

    # --- paths ----------------------------------------------------------------------------
    def _topo_prefix(self, name: str = "") -> str:
        return f"{self.prefix}/topologies/{name + '/' if name else ''}"

    def status_key(self, host: str, topology: str) -> str:
        return f"{self.prefix}/status/{host}/{topology}"

    # --- desired state ----------------------------------------------------------------------
    def read_topologies(
        self, index: str | None = None, wait: str = "10s"
    ) -> tuple[str | None, dict[str, StoredTopology]]:
        """Every fully written topology; blocks up to ``wait`` for a change after ``index``."""
        index, entries = self.client.kv.get(
            self._topo_prefix(), recurse=True, index=index, wait=wait
        )
        return index, parse_topologies(self._topo_prefix(), entries or [])

    def applied(self) -> dict[str, StoredTopology]:
        """The currently applied topologies (non-blocking)."""
        return self.read_topologies()[1]

    def write_topology(self, topology: Topology, allocation: ipam.Allocation, source: str) -> str:
        """Write a topology's objects, delete its stale ones, then mark it applied; the digest."""
        base = self._topo_prefix(topology.name)
        objects = topology_objects(topology, allocation)
        digest = digest_of(objects)
        _, existing = self.client.kv.get(base, recurse=True)
        current = {e["Key"][len(base):]: e.get("Value") for e in existing or []}
        ops: list[dict[str, Any]] = []
        for path, value in objects.items():
            raw = json.dumps(value, sort_keys=True).encode()
            if current.get(path) != raw:
                ops.append(_kv_op("set", base + path, raw))
        for path in current:
            if path not in objects and path != "applied":
                ops.append(_kv_op("delete", base + path))
        marker = json.dumps({"digest": digest, "source": source}, sort_keys=True).encode()
        if ops or current.get("applied") != marker:
            ops.append(_kv_op("set", base + "applied", marker))
        for chunk in _chunks(ops, TXN_LIMIT):
            self.client.txn.put(chunk)
        return digest

    def delete_topology(self, name: str) -> bool:
        """Remove every key of a topology; False when it was not applied."""
        _, existing = self.client.kv.get(self._topo_prefix(name), keys=True)
        if not existing:
            return False
        self.client.kv.delete(self._topo_prefix(name), recurse=True)
        return True

    # --- status -------------------------------------------------------------------------------
    def report(self, host: str, topology: str, report: dict[str, Any]) -> None:
        self.client.kv.put(self.status_key(host, topology), json.dumps(report, sort_keys=True))

    def clear_report(self, host: str, topology: str) -> None:
        self.client.kv.delete(self.status_key(host, topology))

    def reports(self, topology: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """(host, topology) -> the daemon's last report."""
        _, entries = self.client.kv.get(f"{self.prefix}/status/", recurse=True)
        result = {}
        for entry in entries or []:
            host, _, topo = entry["Key"][len(self.prefix) + 8:].partition("/")
            if topology is None or topo == topology:
                result[(host, topo)] = json.loads(entry["Value"])
        return result

    def wait_for_report(
        self, topology: str, predicate: Any, timeout: float, on_poll: Any = None
    ) -> dict[tuple[str, str], dict[str, Any]]:
        """Poll the reports of a topology until ``predicate(reports)`` is true or time is up."""
        deadline = time.monotonic() + timeout
        while True:
            reports = self.reports(topology)
            if on_poll is not None:
                on_poll(reports)
            if predicate(reports) or time.monotonic() > deadline:
                return reports
            time.sleep(0.1)


def parse_topologies(base: str, entries: list[dict[str, Any]]) -> dict[str, StoredTopology]:
    """Group KV entries by topology; keep those whose applied digest matches their objects."""
    grouped: dict[str, dict[str, Any]] = {}
    for entry in entries:
        name, _, path = entry["Key"][len(base):].partition("/")
        if path and entry.get("Value") is not None:
            grouped.setdefault(name, {})[path] = json.loads(entry["Value"])
    result = {}
    for name, objects in grouped.items():
        marker = objects.pop("applied", None)
        if not marker or marker.get("digest") != digest_of(objects):
            continue
        topology, allocation = topology_from_objects(name, objects)
        result[name] = StoredTopology(topology, allocation, marker["digest"], marker["source"])
    return result


def _kv_op(verb: str, key: str, value: bytes | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = base64.b64encode(value).decode()
    return {"KV": op}


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
