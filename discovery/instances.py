"""Service instances as Switchboard wants them in Consul. Pure.

An :class:`Instance` is one Consul service registration: ID, name, address, port, tags,
ownership meta and an optional check. :func:`desired_instances` derives them from a topology
and its IP allocation; the programmatic :class:`discovery.registry.Registry` builds them by
hand. :func:`consul_meta` is the Meta actually written to Consul: the instance's meta plus
the check definition under ``switchboard-check``, because the agent's services API does not
return checks and a changed check must still be seen as a change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sbcore.model import Check, Topology, naming
from sbcore.model.ipam import Allocation

__all__ = [
    "CHECK_KEY",
    "CONTAINER_KEY",
    "OWNER_KEY",
    "OWNER_VALUE",
    "REGISTRY_KEY",
    "TOPOLOGY_KEY",
    "TOPOLOGY_TAG",
    "CheckSpec",
    "Instance",
    "check_spec",
    "consul_meta",
    "desired_instances",
    "instance_from_agent",
    "is_ours",
]

OWNER_KEY = naming.OWNER_KEY  # "switchboard"
OWNER_VALUE = "1"
TOPOLOGY_KEY = "switchboard-topology"
CONTAINER_KEY = "switchboard-container"
REGISTRY_KEY = "switchboard-registry"
CHECK_KEY = "switchboard-check"
TOPOLOGY_TAG = "topology-{}"  # the tag that marks a topology's instances for Consul's DNS
META_VALUE_LIMIT = 512  # Consul's limit on the length of one Meta value

Meta = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CheckSpec:
    """A Consul check: ``kind`` http (``target`` is a URL) or tcp (``target`` is HOST:PORT)."""

    kind: Literal["http", "tcp"]
    target: str
    interval: str
    timeout: str | None = None

    def encode(self) -> str:
        """The definition as stored under ``switchboard-check`` (a digest when too long)."""
        text = json.dumps(
            {"kind": self.kind, "target": self.target, "interval": self.interval,
             "timeout": self.timeout},
            sort_keys=True, separators=(",", ":"),
        )
        if len(text) <= META_VALUE_LIMIT:
            return text
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def decode(cls, text: str | None) -> CheckSpec | None:
        """Inverse of :meth:`encode`; None when absent, a digest or not ours."""
        if not text or not text.startswith("{"):
            return None
        try:
            data = json.loads(text)
            if data["kind"] not in ("http", "tcp"):
                return None
            return cls(data["kind"], str(data["target"]), str(data["interval"]),
                       None if data.get("timeout") is None else str(data["timeout"]))
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class Instance:
    """One service registration. ``tags`` and ``meta`` are normalised to tuples (meta sorted),
    so instances compare and hash by value; a dict or list may be passed for either."""

    id: str
    name: str
    address: str
    port: int
    tags: tuple[str, ...] = ()
    meta: Meta = ()
    check: CheckSpec | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))
        pairs = self.meta.items() if isinstance(self.meta, Mapping) else self.meta
        object.__setattr__(self, "meta", tuple(sorted((str(k), str(v)) for k, v in pairs)))

    @property
    def meta_dict(self) -> dict[str, str]:
        return dict(self.meta)

    @property
    def topology(self) -> str | None:
        """The topology this instance belongs to (None for registry instances)."""
        return self.meta_dict.get(TOPOLOGY_KEY)


def url_host(address: str) -> str:
    """``address`` as the host part of a URL or HOST:PORT (IPv6 literals in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def check_spec(check: Check, address: str, port: int) -> CheckSpec:
    """A topology check made concrete for one instance: HTTP ``http://ADDR:PORT/path`` on the
    service port, TCP ``ADDR:PORT`` on the check's port."""
    host = url_host(address)
    if check.http is not None:
        return CheckSpec("http", f"http://{host}:{port}{check.http}", check.interval,
                         check.timeout)
    return CheckSpec("tcp", f"{host}:{check.tcp}", check.interval, check.timeout)


def topology_meta(topology: str, container: str) -> dict[str, str]:
    """Ownership meta of a topology's instance."""
    return {OWNER_KEY: OWNER_VALUE, TOPOLOGY_KEY: topology, CONTAINER_KEY: container}


def desired_instances(topology: Topology, allocation: Allocation) -> list[Instance]:
    """One instance per service a container declares, at the container's address on the
    service's network (the container's first network when the service names none). Its
    topology is in its Meta and in the tag ``topology-<name>``, so that Consul's own DNS
    can filter by it on the host (``topology-shop.api.service.consul``)."""
    result = []
    for cname, container in topology.containers.items():
        for svc in container.services:
            network = svc.network or container.default_network
            address = str(allocation[cname, network])
            result.append(Instance(
                id=naming.service_id(topology.name, cname, svc.name),
                name=svc.name,
                address=address,
                port=svc.port,
                tags=(*svc.tags, TOPOLOGY_TAG.format(topology.name)),
                meta=tuple(topology_meta(topology.name, cname).items()),
                check=check_spec(svc.check, address, svc.port) if svc.check else None,
            ))
    return result


def consul_meta(instance: Instance) -> dict[str, str]:
    """The Meta registered in Consul: the instance's meta and its check definition."""
    meta = instance.meta_dict
    if instance.check is not None:
        meta[CHECK_KEY] = instance.check.encode()
    return meta


def is_ours(entry: Mapping[str, Any]) -> bool:
    """Whether an agent service entry was registered by Switchboard."""
    return (entry.get("Meta") or {}).get(OWNER_KEY) == OWNER_VALUE


def instance_from_agent(entry: Mapping[str, Any]) -> Instance:
    """An entry of ``/v1/agent/services`` back as an Instance (check from our Meta)."""
    meta: dict[str, str] = dict(entry.get("Meta") or {})
    check = CheckSpec.decode(meta.pop(CHECK_KEY, None))
    return Instance(
        id=entry["ID"],
        name=entry["Service"],
        address=entry.get("Address") or "",
        port=int(entry.get("Port") or 0),
        tags=tuple(entry.get("Tags") or ()),
        meta=tuple(meta.items()),
        check=check,
    )


def by_id(instances: Iterable[Instance]) -> dict[str, Instance]:
    """Instances keyed by ID (the first of duplicates wins)."""
    out: dict[str, Instance] = {}
    for inst in instances:
        out.setdefault(inst.id, inst)
    return out
