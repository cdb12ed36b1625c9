"""Policies: allow rules between endpoints, and the port specs they list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictStr

from sbcore.model.base import _Model
from sbcore.model.scalars import SERVICE_PREFIX


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
