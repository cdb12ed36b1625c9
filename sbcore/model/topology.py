"""The Topology root and the cross-reference checks that need more than one object."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import suppress
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from sbcore.model.base import Path, _Model, _Problems
from sbcore.model.container import Container, ServiceInstance, _container_problems
from sbcore.model.network import Network, Router, _network_problems, _router_problems
from sbcore.model.policy import Policy
from sbcore.model.publish import (
    ServicePublish,
    check_service_publish,
    parse_publish,
    parse_service_publish,
)
from sbcore.model.scalars import (
    CIDR_PREFIX,
    HOST,
    SERVICE_PREFIX,
    IPv4,
    Name,
    Port,
    _check_topology_name,
)


class ServiceSettings(_Model):
    """Per-service settings: a virtual IP and its port (None: each instance's own port), and
    the host port that reaches the VIP on every host (None: not published)."""

    vip: IPv4 | None = None
    port: Port | None = None
    publish: Annotated[StrictInt | StrictStr, BeforeValidator(check_service_publish)] | None = None

    @property
    def published(self) -> ServicePublish | None:
        """Parsed ``publish``."""
        return None if self.publish is None else parse_service_publish(self.publish)


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

    def endpoint_kind(
        self, ref: str
    ) -> Literal["network", "container", "service", "host", "cidr"]:
        """What a policy's ``from``/``to`` names (validated, so always one of the five).
        ``host`` is the hosts' own addresses, unless a network or container has that name;
        ``cidr:A.B.C.D/N`` any address in that range, inside the topology or outside it."""
        if ref.startswith(SERVICE_PREFIX):
            return "service"
        if ref.startswith(CIDR_PREFIX):
            return "cidr"
        if ref == HOST and ref not in self.networks and ref not in self.containers:
            return "host"
        return "network" if ref in self.networks else "container"

    def host_ports(self) -> dict[tuple[str, int], str]:
        """(proto, host port) -> what publishes it (``container 'web'``, ``service 'api'``),
        first one kept; entries that do not parse are left out."""
        out: dict[tuple[str, int], str] = {}
        for cname, c in self.containers.items():
            for text in c.publish:
                with suppress(ValueError):
                    pub = parse_publish(text)
                    out.setdefault((pub.proto, pub.host_port), f"container {cname!r}")
        for sname, settings in self.services.items():
            with suppress(ValueError):
                if (spub := settings.published) is not None:
                    out.setdefault((spub.proto, spub.host_port), f"service {sname!r}")
        return out

    def vip_port(self, service: str) -> int | None:
        """The port a published VIP is reached on: the service's ``port``, else its
        instances' port when they all have one; None when they differ."""
        settings = self.services.get(service)
        if settings is not None and settings.port is not None:
            return settings.port
        ports = {inst.port for _, inst in self.declared_services().get(service, [])}
        return ports.pop() if len(ports) == 1 else None

    def vips(self) -> dict[str, IPv4Address]:
        """Service name -> VIP, for services that have one."""
        return {n: s.vip for n, s in self.services.items() if s.vip is not None}


def cidr_problem(text: str) -> str | None:
    """Why ``text`` is not an IPv4 CIDR a policy can name (None: it is one)."""
    if "/" not in text:
        return "write the prefix length too, like 192.0.2.7/32"
    try:
        IPv4Network(text, strict=True)
    except ValueError as exc:
        return f"not an IPv4 CIDR like 192.0.2.0/24 ({exc})"
    return None


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

    yield from _publish_problems(t)

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
            elif ref.startswith(CIDR_PREFIX):
                problem = cidr_problem(ref[len(CIDR_PREFIX):])
                if problem:
                    yield (path, f"{ref!r}: {problem}")
            elif t.endpoint_kind(ref) == "host":
                if key == "from":
                    yield (path, f"{ref!r}: a policy can only go to the host, not from it "
                                 "(the host reaches every container)")
            elif ref not in nets and ref not in t.containers:
                yield (
                    path,
                    f"unknown network or container {ref!r} (networks: {known_nets}; "
                    f"containers: {', '.join(t.containers) or 'none'}; or host)",
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


def _publish_problems(t: Topology) -> Iterator[tuple[Path, str]]:
    """A host port published twice in the file (by containers or services), and a service's
    ``publish`` without a VIP or a port to reach it on."""
    published: dict[tuple[str, int], str] = {}
    for cname, c in t.containers.items():
        for i, text in enumerate(c.publish):
            try:
                pub = parse_publish(text)
            except ValueError:
                continue  # reported where it is
            other = published.setdefault((pub.proto, pub.host_port), f"container {cname!r}")
            if other != f"container {cname!r}":
                yield (("containers", cname, "publish", i),
                       f"host port {pub.host_port}/{pub.proto} is already published by "
                       f"{other}; publish another host port")
    for sname, settings in t.services.items():
        try:
            spub = settings.published
        except ValueError:
            continue  # reported where it is
        if spub is None:
            continue
        path = ("services", sname, "publish")
        if settings.vip is None:
            yield (path, f"service {sname!r} has no vip: publish reaches a VIP; add vip "
                         "(and port), or publish a container's port instead")
        elif t.vip_port(sname) is None and sname in t.declared_services():
            yield (path, f"service {sname!r} has no port and its instances' ports differ: "
                         f"add port to say which VIP port host port {spub.host_port} reaches")
        other = published.setdefault((spub.proto, spub.host_port), f"service {sname!r}")
        if other != f"service {sname!r}":
            yield (path, f"host port {spub.host_port}/{spub.proto} is already published by "
                         f"{other}; publish another host port")
