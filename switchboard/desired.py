"""The desired state's encoding in Consul KV, and reading it back. Pure.

Layout below a topology's key ``P/topologies/<topo>/`` (``P`` is the prefix)::

    versions/<digest>/<kind>/<name>   one key per object of one version of the topology
    versions/<digest>/sealed          {"objects": n}: written once the version is complete
    applied                           {"digest": ..., "source": ...}: which version is desired
    placement                         {"<container>": "<host>"}: where its containers run,
                                      written in the transaction that switches ``applied``

A version is staged under its own digest, so two writers never mix their keys; the
``applied`` marker is the commit point, switched in one transaction (switchboard.store).
A topology is desired when its marker names a version whose objects match the digest.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address
from typing import Any

from switchboard import ipam
from switchboard.model import Topology

KINDS = ("networks", "routers", "policies", "containers", "services")
MARKER = "applied"
PLACEMENT = "placement"
SEALED = "sealed"
VERSIONS = "versions/"


@dataclass(frozen=True)
class StoredTopology:
    """A desired topology as read back from KV, with its IP allocation."""

    topology: Topology
    allocation: ipam.Allocation
    digest: str
    source: str
    applied_index: int = 0  # Consul index at which the topology was first applied
    # container -> host (switchboard.placement); empty when stored before placement existed
    # or unreadable. A container it does not name is the local host's.
    placement: dict[str, str] = field(default_factory=dict)


@dataclass
class DesiredState:
    """Every topology under the prefix, as one read saw it.

    ``topologies``: the desired ones, in the order they were first applied; ``invalid``:
    topology -> why its marked version cannot be read (it is skipped, never a crash);
    ``versions``: topology -> digest -> path -> raw value of every staged version;
    ``markers``: topology -> its raw ``applied`` marker.
    """

    topologies: dict[str, StoredTopology] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    versions: dict[str, dict[str, dict[str, bytes | None]]] = field(default_factory=dict)
    markers: dict[str, bytes] = field(default_factory=dict)
    admission_index: int = 0  # ModifyIndex of the admission key (0: no admission yet)
    generation: int = 0  # how many admissions the prefix has seen
    host_entries: list[dict[str, Any]] = field(default_factory=list)  # P/hosts/ (snapshot)


def topology_objects(topology: Topology, allocation: ipam.Allocation) -> dict[str, Any]:
    """The KV objects of a topology, keyed by their path below a version's key."""
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


def encode(value: Any) -> bytes:
    """How an object is stored: JSON with sorted keys."""
    return json.dumps(value, sort_keys=True).encode()


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


def raw_value(entry: dict[str, Any]) -> bytes | None:
    """An entry's value as bytes, from a KV read (bytes) or a transaction (base64 text)."""
    value = entry.get("Value")
    if isinstance(value, str):
        return base64.b64decode(value)
    return value


def parse_desired(base: str, entries: Iterable[dict[str, Any]]) -> DesiredState:
    """Group the entries below ``base`` (``P/topologies/``) into a DesiredState.

    A topology whose marker names a version that is missing, incomplete, corrupt or invalid
    is listed in ``invalid`` with the reason; keys of topologies with no marker (a version
    being staged, a foreign key) are not desired and are left alone.
    """
    state = DesiredState()
    objects: dict[str, dict[str, bytes | None]] = {}  # topology -> path -> raw (old layout)
    marker_index: dict[str, int] = {}
    for entry in entries:
        name, _, path = entry["Key"][len(base):].partition("/")
        if not name or not path:
            continue
        raw = raw_value(entry)
        if path == MARKER:
            state.markers[name] = raw or b""
            marker_index[name] = int(entry.get("CreateIndex") or 0)
        elif path.startswith(VERSIONS):
            digest, _, rest = path[len(VERSIONS):].partition("/")
            if digest and rest:
                state.versions.setdefault(name, {}).setdefault(digest, {})[rest] = raw
        else:
            objects.setdefault(name, {})[path] = raw
    for name in sorted(state.markers, key=lambda n: (marker_index[n], n)):
        try:
            stored = _read_version(name, state, objects.get(name, {}), marker_index[name])
            placement = parse_placement(objects.get(name, {}).get(PLACEMENT),
                                        stored.topology.containers)
            state.topologies[name] = dataclasses.replace(stored, placement=placement)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            state.invalid[name] = f"the desired state of {name!r} in Consul KV is unreadable: {exc}"
    return state


def parse_placement(raw: bytes | None, containers: Iterable[str]) -> dict[str, str]:
    """A stored placement, read without trusting it: container -> host for the topology's
    containers; anything unreadable is left out (an unplaced container is the local host's)."""
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    known = set(containers)
    return {c: h for c, h in value.items()
            if c in known and isinstance(h, str) and h and "/" not in h}


def _read_version(
    name: str, state: DesiredState, legacy: dict[str, bytes | None], index: int
) -> StoredTopology:
    marker = json.loads(state.markers[name])
    digest, source = str(marker["digest"]), str(marker.get("source", ""))
    version = state.versions.get(name, {}).get(digest)
    if version is None:  # written before versions existed: objects beside the marker
        version = legacy
    elif SEALED not in version:
        raise ValueError(f"version {digest} is not complete")
    values = {
        path: json.loads(raw) for path, raw in version.items()
        if path != SEALED and raw is not None and path.split("/", 1)[0] in KINDS
    }
    if digest_of(values) != digest:
        raise ValueError(f"its objects do not match version {digest}")
    topology, allocation = topology_from_objects(name, values)
    return StoredTopology(topology, allocation, digest, source, index)
