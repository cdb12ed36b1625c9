"""Scalar types and defaults: names, addresses, subnets, ports and durations."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, StrictInt, StrictStr

DEFAULT_MTU = 1500
DEFAULT_CHECK_INTERVAL = "10s"
SERVICE_PREFIX = "service:"
CIDR_PREFIX = "cidr:"  # a policy's ``from``/``to: cidr:A.B.C.D/N``: any IPv4 address in it
HOST = "host"  # a policy's ``to: host``: the hosts' own addresses on the networks

def _yaml_bool(value: Any) -> Any:
    """true/false as written in a file (the loader keeps them as text), or a bool."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"write true or false (got {value!r})")


# a boolean key: true or false, nothing else (not yes/no/on/off, not 1/0)
Flag = Annotated[bool, BeforeValidator(_yaml_bool)]

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
