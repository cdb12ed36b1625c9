"""Networks (an L2 segment with one IPv4 subnet) and the routers that join them."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address
from typing import Annotated

from pydantic import Field, StrictInt, ValidationInfo, model_validator

from sbcore.model.base import Path, _Model, _raise_unless_deferred
from sbcore.model.scalars import DEFAULT_MTU, Flag, IPv4, Name, Subnet


class Network(_Model):
    """An L2 network with one IPv4 subnet. ``gateway`` is always set after validation."""

    subnet: Subnet
    gateway: IPv4 | None = None
    mtu: Annotated[StrictInt, Field(ge=576, le=9000)] | None = None
    # containers reach addresses outside every topology through their host, source-NATed
    # to the host's address (docs/topology-format.md)
    egress: Flag = True

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
