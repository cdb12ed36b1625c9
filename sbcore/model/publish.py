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
