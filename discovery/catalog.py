"""Service endpoints as Consul's health API reports them. Pure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ServiceEndpoint", "endpoint_from_health", "worst_status"]

_SEVERITY = {"passing": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class ServiceEndpoint:
    """One instance of a service: where to reach it and whether its checks pass.

    ``status`` is the worst status of the instance's checks and its node's checks
    (``passing`` with no checks), the way Consul decides what DNS and ``passing`` return.
    """

    service: str
    id: str
    node: str
    address: str
    port: int
    tags: tuple[str, ...]
    status: str
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def passing(self) -> bool:
        return self.status == "passing"


def worst_status(statuses: Iterable[str]) -> str:
    """The most severe of check statuses; ``passing`` when there are none."""
    return max(statuses, key=lambda s: _SEVERITY.get(s, 2), default="passing")


def endpoint_from_health(entry: Mapping[str, Any]) -> ServiceEndpoint:
    """An entry of ``/v1/health/service/<name>`` as an endpoint; an instance without its own
    address is reached at its node's address, as Consul DNS does."""
    node = entry.get("Node") or {}
    svc = entry.get("Service") or {}
    return ServiceEndpoint(
        service=svc.get("Service", ""),
        id=svc.get("ID", ""),
        node=node.get("Node", ""),
        address=svc.get("Address") or node.get("Address", ""),
        port=int(svc.get("Port") or 0),
        tags=tuple(svc.get("Tags") or ()),
        status=worst_status(c.get("Status", "critical") for c in entry.get("Checks") or ()),
        meta=tuple(sorted((svc.get("Meta") or {}).items())),
    )
