"""Published ports: ``HOSTPORT:PORT/PROTO`` entries of a container's ``publish``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

_PUBLISH_RE = re.compile(r"(\d{1,5}):(\d{1,5})(?:/(tcp|udp))?")


@dataclass(frozen=True, slots=True)
class Publish:
    """The host's ``host_port`` (every host address) reaches the container's ``port``."""

    host_port: int
    port: int
    proto: Literal["tcp", "udp"] = "tcp"

    def __str__(self) -> str:
        return f"{self.host_port}:{self.port}/{self.proto}"


def parse_publish(text: str) -> Publish:
    """Parse ``8080:80/tcp``, ``5353:53/udp`` or ``8080:80`` (tcp); ports 1..65535."""
    m = _PUBLISH_RE.fullmatch(text.strip().lower())
    if not m:
        raise ValueError(f"bad publish entry {text!r}: write HOSTPORT:PORT/tcp or "
                         "HOSTPORT:PORT/udp, like 8080:80/tcp")
    host_port, port = int(m.group(1)), int(m.group(2))
    if not (1 <= host_port <= 65535 and 1 <= port <= 65535):
        raise ValueError(f"bad publish entry {text!r}: ports go from 1 to 65535")
    return Publish(host_port, port, m.group(3) or "tcp")  # type: ignore[arg-type]


def check_publish(value: str) -> str:
    parse_publish(value)
    return value


_SERVICE_PUBLISH_RE = re.compile(r"(\d{1,5})(?:/(tcp|udp))?")


@dataclass(frozen=True, slots=True)
class ServicePublish:
    """A service's ``publish``: ``host_port`` on every host reaches the service's VIP."""

    host_port: int
    proto: Literal["tcp", "udp"] = "tcp"

    def __str__(self) -> str:
        return f"{self.host_port}/{self.proto}"


def parse_service_publish(value: object) -> ServicePublish:
    """Parse a service's ``publish``: ``8080`` (tcp), ``"8080/tcp"`` or ``"5353/udp"``."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a host port, like 8080 or 5353/udp, got {value!r}")
    m = _SERVICE_PUBLISH_RE.fullmatch(str(value).strip().lower())
    if not m:
        raise ValueError(f"bad publish {value!r}: write a host port, like 8080, or "
                         "PORT/tcp or PORT/udp, like 5353/udp")
    port = int(m.group(1))
    if not 1 <= port <= 65535:
        raise ValueError(f"bad publish {value!r}: ports go from 1 to 65535")
    return ServicePublish(port, m.group(2) or "tcp")  # type: ignore[arg-type]


def check_service_publish(value: object) -> object:
    if value is not None:
        parse_service_publish(value)
    return value
