"""Containers and what they carry: network attachments, services and their checks."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictInt,
    StrictStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sbcore.model.base import Path, _Model, _Problems, _raise_unless_deferred
from sbcore.model.image import (
    check_env_name,
    check_image,
    check_user,
    check_volume,
    check_workdir,
    image_problems,
)
from sbcore.model.publish import Publish, check_publish, parse_publish
from sbcore.model.scalars import (
    DEFAULT_CHECK_INTERVAL,
    Duration,
    HostName,
    IPv4,
    Name,
    Port,
    parse_duration,
)

_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")

RestartPolicy = Literal["always", "on-failure", "never"]
DEFAULT_RESTART: RestartPolicy = "always"  # what every container got before the key existed


def _check_mac(value: str) -> str:
    mac = value.lower()
    if not _MAC_RE.fullmatch(mac):
        raise ValueError(f"bad MAC address {value!r}: write six hex bytes like 02:00:00:00:00:01")
    if int(mac[:2], 16) & 1:
        raise ValueError(f"MAC address {value!r} is a multicast address")
    return mac


class Attachment(_Model):
    """A container's leg on one network: a fixed ``ip`` (None: IPAM) and optional ``mac``."""

    ip: IPv4 | None = None
    mac: Annotated[StrictStr, AfterValidator(_check_mac)] | None = None


_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_RUNTIME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def _check_netns_path(value: str) -> str:
    if not value.startswith("/") or "\n" in value or "/../" in value + "/":
        raise ValueError(f"netns {value!r} must be an absolute path to a network namespace "
                         "(such as /run/netns/NAME or /proc/PID/ns/net)")
    return value


def _check_ifname(value: str) -> str:
    if not _IFNAME_RE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"bad interface name {value!r}: 1 to 15 of A-Z a-z 0-9 _ . -")
    return value


def _check_runtime_name(value: str) -> str:
    if not _RUNTIME_NAME_RE.fullmatch(value):
        raise ValueError(f"bad container name {value!r}: letters, digits, _ . and -, "
                         "starting with a letter or digit")
    return value


RuntimeName = Annotated[StrictStr, AfterValidator(_check_runtime_name)]
_KINDS = ("pid", "netns", "podman", "docker")


class Attach(_Model):
    """An existing network namespace: by the PID of a process inside it, by the path of a
    namespace file (``netns``, as CNI runtimes pass it), or as the namespace of a Podman or
    Docker container, by its name (followed when it restarts). ``ifname`` names the
    interface of the container's first network inside a ``netns`` (default ``eth0``)."""

    pid: Annotated[StrictInt, Field(ge=1)] | None = None
    netns: Annotated[StrictStr, AfterValidator(_check_netns_path)] | None = None
    ifname: Annotated[StrictStr, AfterValidator(_check_ifname)] | None = None
    podman: RuntimeName | None = None
    docker: RuntimeName | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Attach:
        given = [k for k in _KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("attach takes exactly one of pid (a process), netns (a path), "
                             f"podman or docker (a container's name); got "
                             f"{', '.join(given) or 'none'}")
        if self.ifname is not None and self.netns is None:
            raise ValueError("ifname goes with netns (the interface inside that namespace)")
        return self

    @property
    def source(self) -> int | str:
        """The PID, the namespace path, or the runtime container's name."""
        if self.pid is not None:
            return self.pid
        return str(self.netns or self.podman or self.docker)

    @property
    def by_name(self) -> tuple[str, str] | None:
        """(runtime, container name), or None for a PID or a path."""
        if self.podman is not None:
            return ("podman", self.podman)
        if self.docker is not None:
            return ("docker", self.docker)
        return None

    def describe(self) -> str:
        """``pid 42``, ``netns /run/netns/x``, ``podman container web``."""
        if self.by_name is not None:
            return f"{self.by_name[0]} container {self.by_name[1]}"
        return f"pid {self.pid}" if self.pid is not None else f"netns {self.netns}"


class Check(_Model):
    """A Consul check: exactly one of ``http`` (a path) or ``tcp`` (a port)."""

    http: StrictStr | None = None
    tcp: Port | None = None
    interval: Duration = DEFAULT_CHECK_INTERVAL
    timeout: Duration | None = None

    @field_validator("http")
    @classmethod
    def _http_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"http check path {value!r} must start with '/'")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Check:
        if (self.http is None) == (self.tcp is None):
            raise ValueError("a check needs exactly one of http (a path) or tcp (a port)")
        return self

    @property
    def interval_seconds(self) -> float:
        """The check interval in seconds."""
        return parse_duration(self.interval)

    @property
    def timeout_seconds(self) -> float | None:
        """The check timeout in seconds, or None for Consul's default."""
        return parse_duration(self.timeout) if self.timeout is not None else None


class ServiceInstance(_Model):
    """A service a container offers; ``network`` is filled in by its container."""

    name: Name
    port: Port
    tags: list[StrictStr] = []
    check: Check | None = None
    network: Name | None = None


def _normalize_networks(value: Any) -> Any:
    """A list of names becomes ``{name: {}}``; a null attachment becomes ``{}``."""
    if isinstance(value, list):
        problems: list[tuple[Path, str]] = []
        result: dict[Any, Any] = {}
        for i, name in enumerate(value):
            if not isinstance(name, str):
                problems.append(((i,), f"expected a network name, got {name!r}"))
            elif name in result:
                problems.append(((name,), f"network {name!r} is listed twice"))
            else:
                result[name] = {}
        if problems:
            raise _Problems(problems)
        return result
    if isinstance(value, Mapping):
        return {k: ({} if v is None else v) for k, v in value.items()}
    raise ValueError(
        "expected a list of network names, or a mapping of network name to {ip: ADDRESS}"
        f", got {value!r}"
    )


class Container(_Model):
    """A network namespace with legs on ``networks`` (file order; the first is the default
    route), either created by Switchboard (optionally running ``command``, or an OCI
    ``image`` with ``command`` as its arguments) or an existing one given by ``attach``."""

    networks: Annotated[dict[Name, Attachment], BeforeValidator(_normalize_networks)]
    command: StrictStr | None = None
    services: list[ServiceInstance] = []
    attach: Attach | None = None
    host: HostName | None = None  # the host that runs it; None: `up` places it
    restart: RestartPolicy | None = None  # when its command runs again (None: the default)
    # host ports that reach it from outside the host and from the host itself
    publish: list[Annotated[StrictStr, AfterValidator(check_publish)]] = []

    image: Annotated[StrictStr, AfterValidator(check_image)] | None = None
    env: dict[Annotated[StrictStr, AfterValidator(check_env_name)], StrictStr] = {}
    volumes: list[Annotated[StrictStr, AfterValidator(check_volume)]] = []
    workdir: Annotated[StrictStr, AfterValidator(check_workdir)] | None = None
    user: Annotated[StrictStr, AfterValidator(check_user)] | None = None

    @property
    def published(self) -> tuple[Publish, ...]:
        """Parsed ``publish``."""
        return tuple(parse_publish(p) for p in self.publish)

    @property
    def restart_policy(self) -> RestartPolicy:
        """When the daemon starts the command again after it exits (default ``always``)."""
        return self.restart or DEFAULT_RESTART

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Container:
        first = next(iter(self.networks), None)
        if first is not None and any(svc.network is None for svc in self.services):
            services = [
                svc if svc.network is not None else svc.model_copy(update={"network": first})
                for svc in self.services
            ]
            object.__setattr__(self, "services", services)
        _raise_unless_deferred(info, _container_problems(self))
        return self

    @property
    def default_network(self) -> str:
        """The network of the default route (the first one listed)."""
        return next(iter(self.networks))


def _container_problems(c: Container) -> Iterator[tuple[Path, str]]:
    if not c.networks:
        yield (("networks",), "a container needs at least one network")
    if c.attach is not None and c.command is not None:
        yield (
            ("command",),
            "a container with attach runs in an existing namespace and cannot have "
            "a command; remove one of them",
        )
    if c.restart is not None and c.command is None and c.image is None:
        yield (
            ("restart",),
            "restart says when a command or image runs again, and this container has "
            "neither; add a command or an image, or remove restart",
        )
    ports: dict[tuple[str, int], int] = {}
    for i, text in enumerate(c.publish):
        try:
            pub = parse_publish(text)
        except ValueError:
            continue  # reported where it is
        if (pub.proto, pub.host_port) in ports:
            yield (("publish", i), f"host port {pub.host_port}/{pub.proto} is published twice "
                                   f"(also publish.{ports[pub.proto, pub.host_port]})")
        ports.setdefault((pub.proto, pub.host_port), i)
    yield from image_problems(c)
    seen: dict[str, int] = {}
    for i, svc in enumerate(c.services):
        if svc.name in seen:
            yield (
                ("services", i, "name"),
                f"service {svc.name!r} is declared twice in this container "
                f"(also services.{seen[svc.name]})",
            )
        seen.setdefault(svc.name, i)
        if svc.network is not None and svc.network not in c.networks:
            yield (
                ("services", i, "network"),
                f"network {svc.network!r} is not one of this container's networks "
                f"({', '.join(c.networks) or 'none'})",
            )
