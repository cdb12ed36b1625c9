"""The programmatic API: register services by hand and discover every service in Consul.

::

    registry = Registry("my-registry")                 # backed by the local Consul agent
    discoverer = Discoverer("my-discoverer", registry)
    registry.register("my-service", "10.0.0.5", 8080)  # address: an IP or a host name
    services = discoverer.discover()                   # {"my-service": [ServiceEndpoint]}
    discoverer.resolve("my-service")                   # [("10.0.0.5", 8080)] via Consul DNS

A Consul agent (or its DNS interface) that does not answer raises
:class:`sbcore.state.reach.Unreachable`, with one sentence saying where and how to start it.

The port must be a number (an int, or a str of digits): ``"my-port"`` in the examples this
API grew from is a placeholder and raises ValueError. Registry instances carry Meta
``switchboard`` = 1 and ``switchboard-registry`` = the registry name; no topology sync ever
deregisters them, only :meth:`Registry.deregister`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import consul as consul_api

from discovery import lookup
from discovery.catalog import ServiceEndpoint, endpoint_from_health
from discovery.instances import (
    OWNER_KEY,
    OWNER_VALUE,
    REGISTRY_KEY,
    CheckSpec,
    Instance,
    check_spec,
    instance_from_agent,
)
from discovery.plan import differs
from discovery.sync import ServiceSync
from sbcore.model import Check
from sbcore.state import reach
from sbcore.state.store import DEFAULT_CONSUL

__all__ = [
    "DEFAULT_CONSUL",
    "DEFAULT_DNS",
    "Discoverer",
    "Registry",
    "ServiceEndpoint",
    "parse_port",
    "registry_instance",
    "registry_service_id",
]

DEFAULT_DNS = ("127.0.0.1", 8600)
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")

CheckLike = Check | CheckSpec | Mapping[str, Any]


# --------------------------------------------------------------------------- pure helpers


def parse_port(port: str | int) -> int:
    """A port given as int or digits, 1..65535; ValueError naming the value otherwise."""
    if isinstance(port, bool) or not isinstance(port, int | str):
        raise ValueError(f"port {port!r} is not a port number; give an int from 1 to 65535")
    if isinstance(port, str) and not (port.strip().isascii() and port.strip().isdigit()):
        raise ValueError(
            f"port {port!r} is not a port number; give an int or a string of digits "
            "from 1 to 65535 (a value like 'my-port' is only a placeholder)"
        )
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(f"port {port!r} is out of range; ports go from 1 to 65535")
    return number


def _text(what: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} must be a non-empty string without spaces")
    return value


def registry_service_id(registry: str, service: str, address: str, port: int) -> str:
    """``sb-reg-<registry>-<service>-<address>-<port>`` with unsafe characters as ``-``."""
    return _UNSAFE_ID_CHARS.sub("-", f"sb-reg-{registry}-{service}-{address}-{port}")


def _check(check: CheckLike | None, address: str, port: int) -> CheckSpec | None:
    if check is None or isinstance(check, CheckSpec):
        return check
    if isinstance(check, Mapping):
        check = Check.model_validate(dict(check))
    if not isinstance(check, Check):
        raise ValueError(
            f"check {check!r} must be like {{'http': '/health', 'interval': '5s'}} or "
            "{'tcp': 8080}, a sbcore.model.Check or a CheckSpec"
        )
    return check_spec(check, address, port)


def registry_instance(
    registry: str,
    name: str,
    address: str,
    port: str | int,
    tags: Iterable[str] = (),
    check: CheckLike | None = None,
) -> Instance:
    """The instance :meth:`Registry.register` writes; ValueError on a bad argument.

    ``check``: ``{"http": "/path"}`` (on the service port) or ``{"tcp": PORT}``, with
    optional ``interval`` and ``timeout``, run by Consul against ``address``.
    """
    name, address = _text("service name", name), _text("address", address)
    number = parse_port(port)
    tag_tuple = tuple(tags) if not isinstance(tags, str) else (tags,)
    for tag in tag_tuple:
        if not isinstance(tag, str):
            raise ValueError(f"tag {tag!r} must be a string")
    return Instance(
        id=registry_service_id(registry, name, address, number),
        name=name,
        address=address,
        port=number,
        tags=tag_tuple,
        meta=((OWNER_KEY, OWNER_VALUE), (REGISTRY_KEY, registry)),
        check=_check(check, address, number),
    )


# --------------------------------------------------------------------------- I/O


def _client(consul: str | consul_api.Consul, token: str | None = None) -> consul_api.Consul:
    return reach.consul_client(consul, token) if isinstance(consul, str) else consul


class Registry:
    """Service instances registered by hand in the local Consul agent, under one name."""

    def __init__(self, name: str, consul: str | consul_api.Consul = DEFAULT_CONSUL,
                 token: str | None = None) -> None:
        """``token``: the Consul ACL token (default: as sbcore.state.token finds it)."""
        self.name = _text("registry name", name)
        self.client = _client(consul, token)
        self.sync = ServiceSync(self.client)

    def __repr__(self) -> str:
        return f"Registry({self.name!r})"

    def register(
        self,
        name: str,
        address: str,
        port: str | int,
        tags: Iterable[str] = (),
        check: CheckLike | None = None,
    ) -> Instance:
        """Register (or update) one instance; registering it again changes nothing."""
        inst = registry_instance(self.name, name, address, port, tags, check)
        if differs(inst, self.sync.registered().get(inst.id)):
            self.sync.register(inst)
        return inst

    def _entries(self) -> dict[str, dict[str, Any]]:
        return {
            sid: entry
            for sid, entry in self.sync.registered().items()
            if (entry.get("Meta") or {}).get(OWNER_KEY) == OWNER_VALUE
            and (entry.get("Meta") or {}).get(REGISTRY_KEY) == self.name
        }

    def services(self) -> list[Instance]:
        """This registry's instances in the local agent, by ID."""
        return [instance_from_agent(e) for _, e in sorted(self._entries().items())]

    def deregister(self, name: str | None = None) -> list[str]:
        """Remove this registry's instances (only those of service ``name`` when given);
        the IDs removed."""
        removed = []
        for sid, entry in sorted(self._entries().items()):
            if name is None or entry.get("Service") == name:
                self.sync.deregister(sid)
                removed.append(sid)
        return removed


class Discoverer:
    """Finds every service known to Consul (not only its registry's), over HTTP or DNS."""

    def __init__(
        self, name: str, registry: Registry, dns_server: tuple[str, int] = DEFAULT_DNS
    ) -> None:
        self.name = _text("discoverer name", name)
        self.registry = registry
        self.dns_server = dns_server

    def __repr__(self) -> str:
        return f"Discoverer({self.name!r}, {self.registry!r})"

    def discover(
        self, service: str | None = None, passing_only: bool = False
    ) -> dict[str, list[ServiceEndpoint]]:
        """Service name -> its endpoints, from Consul's catalog and health API (every service,
        or only ``service``; only instances whose checks all pass with ``passing_only``)."""
        client = self.registry.client
        names = [service] if service is not None else sorted(client.catalog.services()[1])
        result = {}
        for name in names:
            _, entries = client.health.service(name, passing=passing_only)
            result[name] = [endpoint_from_health(e) for e in entries or ()]
        return result

    def resolve(self, name: str, timeout: float = 2.0) -> list[tuple[str, int]]:
        """(address, port) of a service's healthy instances via Consul DNS SRV records.

        ``name`` is a service (``web``) or a full Consul name (``v1.web.service.consul``).
        Over UDP Consul returns at most a few records; the answer is retried over TCP
        when it says it was truncated.
        """
        try:
            return lookup.resolve(name, self.dns_server, timeout)
        except lookup.DNSError as exc:
            unreachable = reach.dns_unreachable(self.dns_server, exc)
            if unreachable is not None:
                raise unreachable from None
            raise
