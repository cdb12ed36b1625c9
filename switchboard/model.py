"""The topology model: the YAML schema of /work/shared/topology-format.md, version 1.

Pure: parses the text it is given, validates it and returns frozen pydantic objects.
Every problem a user can make raises :class:`TopologyError`, whose message names the
key path and, where the YAML parser knows it, the line.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_network
from os import PathLike
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "Attach",
    "Attachment",
    "Check",
    "Container",
    "Network",
    "Policy",
    "PortSpec",
    "Router",
    "ServiceInstance",
    "ServiceSettings",
    "Topology",
    "TopologyError",
    "load_topology",
    "load_topology_file",
    "parse_duration",
    "parse_port_spec",
]

DEFAULT_MTU = 1500
DEFAULT_CHECK_INTERVAL = "10s"
SERVICE_PREFIX = "service:"

Path = tuple[str | int, ...]


# --------------------------------------------------------------------------- errors


class TopologyError(ValueError):
    """Any problem in a topology a user can make; ``problems`` lists every one found."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


class _Problems(ValueError):
    """Raised inside validators: problems as (path relative to the validated object, text)."""

    def __init__(self, problems: list[tuple[Path, str]]) -> None:
        self.items = problems
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(f"{_dotted(p)}: {m}" if p else m for p, m in self.items)


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


# --------------------------------------------------------------------------- scalar types

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
_TOPOLOGY_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,19}")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def _check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value) or len(value) > 30:
        raise ValueError(
            f"invalid name {value!r}: use lowercase letters, digits and '-', "
            "starting with a letter or digit, at most 30 characters"
        )
    return value


_HOST_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def _check_host_name(value: str) -> str:
    if not _HOST_NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid host name {value!r}: use letters, digits, '.', '_' and '-', starting "
            "with a letter or digit, at most 63 characters (see `switchboard hosts`)"
        )
    return value


def _check_topology_name(value: str) -> str:
    if not _TOPOLOGY_NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid topology name {value!r}: use lowercase letters, digits and '-', "
            "starting with a letter or digit, at most 20 characters"
        )
    return value


def _parse_ipv4(value: Any) -> IPv4Address:
    if isinstance(value, IPv4Address):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an IPv4 address like 10.0.0.5, got {value!r}")
    try:
        return IPv4Address(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address (like 10.0.0.5)") from None


def _parse_subnet(value: Any) -> IPv4Network:
    if isinstance(value, IPv4Network):
        net = value
    elif not isinstance(value, str) or "/" not in value:
        raise ValueError(f"expected an IPv4 subnet in CIDR form like 10.0.0.0/24, got {value!r}")
    else:
        text = value.strip()
        try:
            parsed = ip_network(text, strict=True)
        except ValueError:
            try:
                loose = ip_network(text, strict=False)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IPv4 subnet in CIDR form (like 10.0.0.0/24)"
                ) from None
            raise ValueError(f"{value!r} has host bits set; write {loose} instead") from None
        if not isinstance(parsed, IPv4Network):
            raise ValueError(f"{value!r} is not an IPv4 subnet; only IPv4 is supported")
        net = parsed
    if not 8 <= net.prefixlen <= 29:
        raise ValueError(f"subnet {net} has prefix /{net.prefixlen}; use a prefix from /8 to /29")
    return net


def parse_duration(value: str) -> float:
    """Parse a Go-style duration (``500ms``, ``2s``, ``1m30s``) into seconds."""
    text = value.strip()
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"{value!r} is not a duration; write a number with a unit, like 500ms, 2s or 1m"
        )
    return total


def _check_duration(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"duration {value!r} needs a unit; write {value}s for seconds")
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like 500ms, 2s or 1m, got {value!r}")
    if parse_duration(value) <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return value


Name = Annotated[StrictStr, AfterValidator(_check_name)]
HostName = Annotated[StrictStr, AfterValidator(_check_host_name)]
IPv4 = Annotated[IPv4Address, BeforeValidator(_parse_ipv4)]
Subnet = Annotated[IPv4Network, BeforeValidator(_parse_subnet)]
Port = Annotated[StrictInt, Field(ge=1, le=65535)]
Duration = Annotated[str, BeforeValidator(_check_duration)]


# --------------------------------------------------------------------------- port specs


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One entry of a policy's ``ports``: ``tcp/80``, ``udp/53``, ``tcp/8000-8080`` or ``icmp``.

    ``lo``/``hi`` are inclusive; both are None for icmp.
    """

    proto: Literal["tcp", "udp", "icmp"]
    lo: int | None = None
    hi: int | None = None

    def __str__(self) -> str:
        if self.proto == "icmp":
            return "icmp"
        if self.lo == self.hi:
            return f"{self.proto}/{self.lo}"
        return f"{self.proto}/{self.lo}-{self.hi}"


_PORT_SPEC_RE = re.compile(r"(tcp|udp)/(\d{1,5})(?:-(\d{1,5}))?")


def parse_port_spec(text: str) -> PortSpec:
    """Parse ``tcp/N``, ``udp/N``, ``tcp/N-M``, ``udp/N-M`` or ``icmp`` (ports 1..65535)."""
    spec = text.strip().lower()
    if spec == "icmp":
        return PortSpec("icmp")
    m = _PORT_SPEC_RE.fullmatch(spec)
    if not m:
        raise ValueError(
            f"bad port spec {text!r}: write tcp/PORT, udp/PORT, tcp/FIRST-LAST or icmp"
        )
    lo = int(m.group(2))
    hi = int(m.group(3)) if m.group(3) else lo
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        raise ValueError(f"bad port spec {text!r}: ports go from 1 to 65535")
    if hi < lo:
        raise ValueError(f"bad port spec {text!r}: the range must go from low to high")
    return PortSpec(m.group(1), lo, hi)  # type: ignore[arg-type]


def _check_port_spec(value: str) -> str:
    parse_port_spec(value)
    return value


# --------------------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Network(_Model):
    """An L2 network with one IPv4 subnet. ``gateway`` is always set after validation."""

    subnet: Subnet
    gateway: IPv4 | None = None
    mtu: Annotated[StrictInt, Field(ge=576, le=9000)] | None = None

    @model_validator(mode="after")
    def _gateway(self, info: ValidationInfo) -> Network:
        if self.gateway is None:
            object.__setattr__(self, "gateway", self.subnet.network_address + 1)
        _raise_unless_deferred(info, _network_problems(self))
        return self

    @property
    def effective_gateway(self) -> IPv4Address:
        """The gateway address (the first host address unless the file sets one)."""
        assert self.gateway is not None
        return self.gateway

    @property
    def effective_mtu(self) -> int:
        """The MTU to use on one host: the file's value, or 1500."""
        return self.mtu if self.mtu is not None else DEFAULT_MTU


class Router(_Model):
    """Joins networks at L3: containers on them can reach each other."""

    networks: list[Name]

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> Router:
        _raise_unless_deferred(info, _router_problems(self))
        return self


class Policy(_Model):
    """Allows new connections from ``from`` to ``to`` on ``ports`` (empty: all ports)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True
    )

    from_: StrictStr = Field(alias="from")
    to: StrictStr
    ports: list[Annotated[StrictStr, AfterValidator(_check_port_spec)]] = []

    @property
    def port_specs(self) -> tuple[PortSpec, ...]:
        """Parsed ``ports``; empty means every protocol and port."""
        return tuple(parse_port_spec(p) for p in self.ports)

    @property
    def to_service(self) -> str | None:
        """The service name when ``to`` is ``service:<name>``, else None."""
        return self.to[len(SERVICE_PREFIX) :] if self.to.startswith(SERVICE_PREFIX) else None


_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


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


class Attach(_Model):
    """An existing network namespace, by the PID of a process inside it."""

    pid: Annotated[StrictInt, Field(ge=1)]


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
    route), either created by Switchboard (optionally running ``command``) or an existing
    one given by ``attach``."""

    networks: Annotated[dict[Name, Attachment], BeforeValidator(_normalize_networks)]
    command: StrictStr | None = None
    services: list[ServiceInstance] = []
    attach: Attach | None = None
    host: HostName | None = None  # the host that runs it; None: `up` places it

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


class ServiceSettings(_Model):
    """Per-service settings: a virtual IP and its port (None: each instance's own port)."""

    vip: IPv4 | None = None
    port: Port | None = None


class Topology(_Model):
    """A whole topology file."""

    name: Annotated[StrictStr, AfterValidator(_check_topology_name)]
    networks: dict[Name, Network]
    routers: dict[Name, Router] = {}
    policies: list[Policy] = []
    containers: dict[Name, Container] = {}
    services: dict[Name, ServiceSettings] = {}

    @field_validator("networks")
    @classmethod
    def _some_networks(cls, value: dict[str, Network]) -> dict[str, Network]:
        if not value:
            raise ValueError("a topology needs at least one network")
        return value

    @model_validator(mode="after")
    def _cross_check(self) -> Topology:
        problems = list(_cross_problems(self))
        if problems:
            raise _Problems(problems)
        return self

    def declared_services(self) -> dict[str, list[tuple[str, ServiceInstance]]]:
        """Service name -> its instances as (container name, instance), in file order."""
        out: dict[str, list[tuple[str, ServiceInstance]]] = {}
        for cname, container in self.containers.items():
            for svc in container.services:
                out.setdefault(svc.name, []).append((cname, svc))
        return out

    def endpoint_kind(self, ref: str) -> Literal["network", "container", "service"]:
        """What a policy's ``from``/``to`` names (validated, so always one of the three)."""
        if ref.startswith(SERVICE_PREFIX):
            return "service"
        return "network" if ref in self.networks else "container"

    def vips(self) -> dict[str, IPv4Address]:
        """Service name -> VIP, for services that have one."""
        return {n: s.vip for n, s in self.services.items() if s.vip is not None}


_DEFER = "switchboard.defer_checks"


def _raise_unless_deferred(info: ValidationInfo, problems: Iterable[tuple[Path, str]]) -> None:
    """Raise the problems now, unless the Topology validator will report them all at once."""
    if info.context and info.context.get(_DEFER):
        return
    found = list(problems)
    if found:
        raise _Problems(found)


def _network_problems(net: Network) -> Iterator[tuple[Path, str]]:
    gw, subnet = net.gateway, net.subnet
    if gw is None:
        return
    if gw not in subnet:
        yield (("gateway",), f"gateway {gw} is outside subnet {subnet}")
    elif gw == subnet.network_address:
        yield (("gateway",), f"gateway {gw} is the network address of subnet {subnet}")
    elif gw == subnet.broadcast_address:
        yield (("gateway",), f"gateway {gw} is the broadcast address of subnet {subnet}")


def _router_problems(router: Router) -> Iterator[tuple[Path, str]]:
    for i, name in enumerate(router.networks):
        if name in router.networks[:i]:
            yield (("networks", i), f"network {name!r} is listed twice")
    if len(set(router.networks)) < 2:
        yield (("networks",), "a router joins at least 2 different networks")


def _container_problems(c: Container) -> Iterator[tuple[Path, str]]:
    if not c.networks:
        yield (("networks",), "a container needs at least one network")
    if c.attach is not None and c.command is not None:
        yield (
            ("command",),
            "a container with attach runs in an existing namespace and cannot have "
            "a command; remove one of them",
        )
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


def _prefixed(prefix: Path, problems: Iterable[tuple[Path, str]]) -> Iterator[tuple[Path, str]]:
    for path, msg in problems:
        yield ((*prefix, *path), msg)


def _cross_problems(t: Topology) -> Iterator[tuple[Path, str]]:
    """Problems that need more than one object to see, with absolute key paths."""
    nets = t.networks
    known_nets = ", ".join(nets)
    for name, net in nets.items():
        yield from _prefixed(("networks", name), _network_problems(net))
    for rname, router in t.routers.items():
        yield from _prefixed(("routers", rname), _router_problems(router))
    for cname, container in t.containers.items():
        yield from _prefixed(("containers", cname), _container_problems(container))
    names = list(nets.items())
    for i, (a, na) in enumerate(names):
        for b, nb in names[i + 1 :]:
            if na.subnet.overlaps(nb.subnet):
                yield (
                    ("networks", b, "subnet"),
                    f"subnet {nb.subnet} overlaps subnet {na.subnet} of network {a!r}",
                )

    for rname, router in t.routers.items():
        for i, n in enumerate(router.networks):
            if n not in nets:
                yield (
                    ("routers", rname, "networks", i),
                    f"unknown network {n!r} (networks: {known_nets})",
                )

    gateways = {n.gateway: name for name, n in nets.items()}
    fixed: dict[tuple[str, IPv4Address], str] = {}
    for cname, c in t.containers.items():
        if cname in nets:
            yield (
                ("containers", cname),
                f"{cname!r} is both a network and a container name, which policies cannot "
                "tell apart; rename one of them",
            )
        for nname, att in c.networks.items():
            path: Path = ("containers", cname, "networks", nname)
            net = nets.get(nname)
            if net is None:
                yield (path, f"unknown network {nname!r} (networks: {known_nets})")
                continue
            ip, subnet = att.ip, net.subnet
            if ip is None:
                continue
            path = (*path, "ip")
            if ip not in subnet:
                yield (path, f"{ip} is outside subnet {subnet} of network {nname!r}")
            elif ip == subnet.network_address:
                yield (path, f"{ip} is the network address of subnet {subnet}")
            elif ip == subnet.broadcast_address:
                yield (path, f"{ip} is the broadcast address of subnet {subnet}")
            elif ip == net.gateway:
                yield (path, f"{ip} is the gateway of network {nname!r}")
            elif (nname, ip) in fixed:
                yield (
                    path,
                    f"{ip} is used by both containers {fixed[nname, ip]!r} and "
                    f"{cname!r} on network {nname!r}",
                )
            else:
                fixed[nname, ip] = cname

    declared = t.declared_services()
    known_svcs = ", ".join(declared) or "none"
    for i, pol in enumerate(t.policies):
        for key, ref in (("from", pol.from_), ("to", pol.to)):
            path = ("policies", i, key)
            if ref.startswith(SERVICE_PREFIX):
                svc = ref[len(SERVICE_PREFIX) :]
                if key == "from":
                    yield (path, f"{ref!r}: a policy can only go to a service, not from one")
                elif svc not in declared:
                    yield (
                        path,
                        f"unknown service {svc!r} (services declared by containers: {known_svcs})",
                    )
            elif ref not in nets and ref not in t.containers:
                yield (
                    path,
                    f"unknown network or container {ref!r} (networks: {known_nets}; "
                    f"containers: {', '.join(t.containers) or 'none'})",
                )

    fixed_owner = {ip: c for (_, ip), c in fixed.items()}
    vips: dict[IPv4Address, str] = {}
    for sname, settings in t.services.items():
        if sname not in declared:
            yield (
                ("services", sname),
                f"unknown service {sname!r}: no container declares it "
                f"(services declared by containers: {known_svcs})",
            )
        vip = settings.vip
        if vip is None:
            continue
        path = ("services", sname, "vip")
        home = next((n for n, net in nets.items() if vip in net.subnet), None)
        if home is None:
            yield (
                path,
                f"VIP {vip} is outside every subnet of the topology; pick an address "
                "in one of the networks",
            )
        elif vip in (nets[home].subnet.network_address, nets[home].subnet.broadcast_address):
            yield (path, f"VIP {vip} is the network or broadcast address of network {home!r}")
        elif vip in gateways:
            yield (path, f"VIP {vip} is the gateway of network {gateways[vip]!r}")
        elif vip in fixed_owner:
            yield (path, f"VIP {vip} is the fixed address of container {fixed_owner[vip]!r}")
        elif vip in vips:
            yield (path, f"VIP {vip} is also the VIP of service {vips[vip]!r}")
        else:
            vips[vip] = sname


# --------------------------------------------------------------------------- YAML loading


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item by key path,
    and reports duplicate keys. Only true/false are booleans (not yes/no/on/off)."""

    yaml_implicit_resolvers = {
        first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.lines: dict[Path, int] = {}
        self.problems: list[tuple[Path, str, int | None]] = []

    def load_with_lines(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        return self._build(node, (), set())

    def _build(self, node: yaml.Node, path: Path, active: set[int]) -> Any:
        if id(node) in active:
            raise yaml.constructor.ConstructorError(None, None, "recursive alias", node.start_mark)
        if isinstance(node, yaml.MappingNode):
            return self._build_mapping(node, path, active | {id(node)})
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                line = item.start_mark.line + 1
                self.lines.setdefault((*path, i), line)
                value = self._build(item, (*path, i), active | {id(node)})
                if isinstance(value, str):
                    self.lines.setdefault((*path, value), line)
                items.append(value)
            return items
        return self.construct_object(node, deep=True)

    def _build_mapping(self, node: yaml.MappingNode, path: Path, active: set[int]) -> dict:
        explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
        self.flatten_mapping(node)
        n_merged = len(node.value) - explicit
        result: dict[Any, Any] = {}
        seen: dict[Any, int] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                hash(key)
            except TypeError:
                self.problems.append((path, "a mapping key must be a plain name", line))
                continue
            if index >= n_merged:
                if key in seen:
                    self.problems.append(
                        (
                            (*path, key),
                            f"duplicate key {key!r} (lines {seen[key]} and {line}); "
                            "each name may appear once",
                            line,
                        )
                    )
                    continue
                seen[key] = line
                self.lines[(*path, key)] = line
            else:
                self.lines.setdefault((*path, key), line)
            result[key] = self._build(value_node, (*path, key), active)
        return result


def _line_of(lines: Mapping[Path, int], path: Path) -> int | None:
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _format(source: str, line: int | None, path: Path, message: str) -> str:
    where = f"{source} line {line}" if line is not None else source
    return f"{where}: {_dotted(path)}: {message}" if path else f"{where}: {message}"


def _model_at(path: Path) -> type[BaseModel] | None:
    """The model class validating the object at ``path`` (for 'known keys' hints)."""
    tp: Any = Topology
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = next((f for n, f in tp.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _pydantic_problems(err: ValidationError) -> Iterator[tuple[Path, str]]:
    for e in err.errors(include_url=False):
        loc: Path = tuple(p for p in e["loc"] if p != "[key]")
        kind, ctx = e["type"], e.get("ctx") or {}
        original = ctx.get("error")
        if isinstance(original, _Problems):
            for rel, msg in original.items:
                yield ((*loc, *rel), msg)
        elif kind == "extra_forbidden":
            key = loc[-1] if loc else "?"
            model = _model_at(loc[:-1])
            hint = ""
            if model is not None:
                known = _keys_of(model)
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                hint += f"; known keys here: {', '.join(known)}"
            yield (loc, f"unknown key {key!r}{hint}")
        elif kind == "missing":
            yield (loc, f"required key {loc[-1]!r} is missing")
        elif kind in _TYPE_WORDS:
            what = _TYPE_WORDS[kind]
            model = _model_at(loc) if kind.startswith("model") else None
            if model is not None:
                what += f" with keys {', '.join(_keys_of(model))}"
            yield (loc, f"expected {what}, got {_describe(e['input'])}")
        elif kind == "value_error" and original is not None:
            yield (loc, str(original))
        else:
            msg = e["msg"]
            yield (loc, f"{msg[:1].lower()}{msg[1:]} (got {_describe(e['input'])})")


def load_topology(text: str, source: str = "<topology>") -> Topology:
    """Parse and validate a topology file's text; raise TopologyError listing every problem."""
    loader = _LineLoader(text)
    try:
        data = loader.load_with_lines()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = exc.problem or "cannot parse"
        if exc.context:
            what += f" ({exc.context})"
        message = f"YAML syntax error: {what}; check the indentation and quoting of this line"
        raise TopologyError(_format(source, line, (), message)) from None
    except yaml.YAMLError as exc:
        raise TopologyError(_format(source, None, (), f"YAML syntax error: {exc}")) from None
    finally:
        loader.dispose()

    found: list[tuple[int | None, str]] = [
        (line, _format(source, line, path, msg)) for path, msg, line in loader.problems
    ]
    if data is None:
        found.append(
            (
                None,
                _format(
                    source,
                    None,
                    (),
                    "the file is empty; a topology needs at least 'name' and 'networks'",
                ),
            )
        )
    elif not isinstance(data, dict):
        found.append(
            (
                1,
                _format(
                    source,
                    1,
                    (),
                    f"a topology must be a mapping with keys {', '.join(_keys_of(Topology))}",
                ),
            )
        )
    else:
        try:
            topology = Topology.model_validate(data, by_name=False, context={_DEFER: True})
        except ValidationError as err:
            for path, msg in _pydantic_problems(err):
                line = _line_of(loader.lines, path)
                found.append((line, _format(source, line, path, msg)))
        else:
            if not found:
                return topology
    found.sort(key=lambda item: item[0] if item[0] is not None else 0)
    raise TopologyError([msg for _, msg in found])


def load_topology_file(path: str | PathLike[str]) -> Topology:
    """Read and validate a topology file (the only function here that reads a file)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise TopologyError(f"{path}: cannot read the topology file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TopologyError(f"{path}: the topology file is not UTF-8 text") from None
    return load_topology(text, str(path))
