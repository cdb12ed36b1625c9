"""The desired state's encoding in Consul KV, and reading it back. Pure.

Layout below a topology's key ``P/topologies/<topo>/`` (``P`` is the prefix)::

    versions/<digest>/<kind>/<name>   one key per object of one version of the topology
    versions/<digest>/sealed          {"objects": n}: written once the version is complete
    applied                           {"digest": ..., "source": ...}: which version is desired
    placement                         {"<container>": "<host>"}: where its containers run,
                                      written in the transaction that switches ``applied``
    cni/<container>                   a container the CNI plugin added (``cni``): merged into
                                      every version of the topology (``with_cni``)

A version is staged under its own digest, so two writers never mix their keys; the
``applied`` marker is the commit point, switched in one transaction (sbcore.state.store).
A topology is desired when its marker names a version whose objects match the digest.

Anyone who reaches the agent can write below the prefix, so nothing read here is trusted:
a key that does not fit this layout, or a topology whose keys cannot be read, is skipped and
listed with why (``DesiredState.skipped``); reading never raises.
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

from pydantic import ValidationError

from sbcore.model import Topology, TopologyError, ipam, validation_problems

KINDS = ("networks", "routers", "policies", "containers", "services")
MARKER = "applied"
PLACEMENT = "placement"
SEALED = "sealed"
VERSIONS = "versions/"
CNI = "cni/"
CNI_FIELDS = ("container_id", "ifname", "netns", "network")  # strings every record has


@dataclass(frozen=True)
class StoredTopology:
    """A desired topology as read back from KV, with its IP allocation."""

    topology: Topology
    allocation: ipam.Allocation
    digest: str
    source: str
    applied_index: int = 0  # Consul index at which the topology was first applied
    # container -> host (sbcore.plan.placement); empty when stored before placement existed
    # or unreadable. A container it does not name is the local host's.
    placement: dict[str, str] = field(default_factory=dict)


@dataclass
class DesiredState:
    """Every topology under the prefix, as one read saw it.

    ``topologies``: the desired ones, in the order they were first applied; ``invalid``:
    topology -> why its marked version cannot be read (it is skipped, never a crash);
    ``versions``: topology -> digest -> path -> raw value of every staged version;
    ``markers``: topology -> its raw ``applied`` marker; ``skipped``: key -> why it was
    skipped (not in the layout, or the marker of an unreadable topology).
    """

    topologies: dict[str, StoredTopology] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    versions: dict[str, dict[str, dict[str, bytes | None]]] = field(default_factory=dict)
    markers: dict[str, bytes] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    admission_index: int = 0  # ModifyIndex of the admission key (0: no admission yet)
    generation: int = 0  # how many admissions the prefix has seen
    host_entries: list[dict[str, Any]] = field(default_factory=list)  # P/hosts/ (snapshot)
    # topology -> container -> record of a container added by the CNI plugin (see with_cni)
    cni: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def cni_record_problem(value: Any) -> str | None:
    """Why a value under ``cni/`` is not a CNI record; None when it is one. Pure."""
    if not isinstance(value, dict):
        return "not a JSON object"
    for key in CNI_FIELDS:
        if not isinstance(value.get(key), str) or not value[key]:
            return f"{key!r} is not a string"
    for key in ("ip", "host"):
        if value.get(key) is not None and not isinstance(value[key], str):
            return f"{key!r} is not a string"
    return None


def cni_container(record: dict[str, Any]) -> dict[str, Any]:
    """The container spec (as in a topology file) of a CNI record."""
    attachment = {"ip": record["ip"]} if record.get("ip") else {}
    spec: dict[str, Any] = {
        "networks": {record["network"]: attachment},
        "attach": {"netns": record["netns"], "ifname": record["ifname"]},
    }
    if record.get("host"):
        spec["host"] = record["host"]
    return spec


def with_cni(topology: Topology, records: dict[str, dict[str, Any]]) -> Topology:
    """``topology`` (what its file declares) with the containers the CNI plugin added.
    TopologyError when the file declares a container of the same name, or when a record no
    longer fits (its network is gone, its address left the subnet)."""
    if not records:
        return topology
    doc = topology.model_dump(mode="json", by_alias=True, exclude_none=True)
    containers = doc.setdefault("containers", {})
    problems = [f"containers.{name}: the CNI plugin added a container of this name (container "
                f"ID {records[name]['container_id'][:12]}); rename the file's container"
                for name in sorted(records) if name in containers]
    if problems:
        raise TopologyError(problems)
    for name, record in sorted(records.items()):
        containers[name] = cni_container(record)
    try:
        return Topology.model_validate(doc)
    except ValidationError as err:
        raise TopologyError([f"with the containers the CNI plugin added: {p}"
                             for p in validation_problems(err)]) from None


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
    """Rebuild a topology and its allocation from its KV objects (ValueError, KeyError or
    TypeError when they do not hold one)."""
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
    try:
        return Topology.model_validate(doc), allocation
    except ValidationError as err:
        raise ValueError("; ".join(validation_problems(err))) from None


def raw_value(entry: dict[str, Any]) -> bytes | None:
    """An entry's value as bytes, from a KV read (bytes) or a transaction (base64 text)."""
    value = entry.get("Value")
    if isinstance(value, str):
        return base64.b64decode(value)
    return value


def load_json(raw: Any) -> Any:
    """A KV value's JSON, read without trusting it; ValueError saying why when it is not
    JSON, including nesting too deep to read."""
    try:
        return json.loads(raw if raw is not None else b"")
    except RecursionError:
        raise ValueError("nested too deeply to be read") from None
    except (ValueError, TypeError):
        raise ValueError("not JSON") from None


def parse_desired(base: str, entries: Iterable[dict[str, Any]]) -> DesiredState:
    """Group the entries below ``base`` (``P/topologies/``) into a DesiredState. Never raises.

    A topology whose marker names a version that is missing, incomplete, corrupt or invalid
    is listed in ``invalid`` with the reason, and its marker in ``skipped``. Keys of
    topologies with no marker (a version being staged) are not desired and are left alone;
    a key that fits no part of the layout is listed in ``skipped``.
    """
    state = DesiredState()
    objects: dict[str, dict[str, bytes | None]] = {}  # topology -> path -> raw (old layout)
    marker_index: dict[str, int] = {}
    for entry in entries:
        key = str(entry.get("Key", ""))
        name, _, path = key[len(base):].partition("/")
        try:
            raw = raw_value(entry)
        except ValueError:
            state.skipped[key] = "its value is not base64 (not written by Switchboard)"
            continue
        if path == MARKER and name:
            state.markers[name] = raw if isinstance(raw, bytes) else b""
            marker_index[name] = _index(entry.get("CreateIndex"))
        elif path.startswith(VERSIONS) and name and all(path[len(VERSIONS):].partition("/")):
            digest, _, rest = path[len(VERSIONS):].partition("/")
            state.versions.setdefault(name, {}).setdefault(digest, {})[rest] = raw
        elif name and (path == PLACEMENT or path.partition("/")[0] in KINDS):
            objects.setdefault(name, {})[path] = raw
        elif name and path.startswith(CNI) and "/" not in path[len(CNI):] and path[len(CNI):]:
            try:
                record = load_json(raw)
                if why := cni_record_problem(record):
                    raise ValueError(why)
            except ValueError as exc:
                state.skipped[key] = f"not a CNI record: {exc}"
                continue
            state.cni.setdefault(name, {})[path[len(CNI):]] = record
        else:
            state.skipped[key] = (f"not a key of Switchboard's layout ({base}<topology>/"
                                  f"{MARKER}, {PLACEMENT}, {CNI}<container> or "
                                  f"{VERSIONS}<digest>/...)")
    for name in sorted(state.markers, key=lambda n: (marker_index[n], n)):
        try:
            stored = _read_version(name, state, objects.get(name, {}), marker_index[name])
            placement = parse_placement(objects.get(name, {}).get(PLACEMENT),
                                        stored.topology.containers)
            state.topologies[name] = dataclasses.replace(stored, placement=placement)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            why = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            if isinstance(exc, RecursionError):
                why = "nested too deeply to be read"
            state.invalid[name] = f"the desired state of {name!r} in Consul KV is unreadable: {why}"
            state.skipped[f"{base}{name}/{MARKER}"] = state.invalid[name]
    return state


def _index(value: Any) -> int:
    try:
        return max(0, int(value or 0))
    except (ValueError, TypeError):
        return 0


def parse_placement(raw: bytes | None, containers: Iterable[str]) -> dict[str, str]:
    """A stored placement, read without trusting it: container -> host for the topology's
    containers; anything unreadable is left out (an unplaced container is the local host's)."""
    try:
        value = load_json(raw or b"{}")
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
    try:
        marker = load_json(state.markers[name])
    except ValueError as exc:
        raise ValueError(f"its {MARKER!r} marker is {exc}") from None
    if not isinstance(marker, dict) or not isinstance(marker.get("digest"), str):
        raise ValueError(f"its {MARKER!r} marker names no version (expected "
                         '{"digest": ..., "source": ...})')
    digest, source = marker["digest"], str(marker.get("source", ""))
    version = state.versions.get(name, {}).get(digest)
    if version is None:  # written before versions existed: objects beside the marker
        version = legacy
        if not any(path.partition("/")[0] in KINDS for path in version):
            raise ValueError(f"version {digest} that its marker names is not stored")
    elif SEALED not in version:
        raise ValueError(f"version {digest} is not complete")
    values = {}
    for path, raw in version.items():
        if path != SEALED and raw is not None and path.split("/", 1)[0] in KINDS:
            try:
                values[path] = load_json(raw)
            except ValueError as exc:
                raise ValueError(f"object {path} of version {digest} is {exc}") from None
    if digest_of(values) != digest:
        raise ValueError(f"the objects of version {digest} do not match its digest "
                         "(changed after it was stored)")
    try:
        topology, allocation = topology_from_objects(name, values)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"version {digest} does not hold a topology ({type(exc).__name__}: "
                         f"{exc})") from None
    except ValueError as exc:
        raise ValueError(f"version {digest} does not hold a valid topology: {exc}") from None
    return StoredTopology(topology, allocation, digest, source, index)
