"""The flow representation the compiler returns: plain, hashable data with owner cookies."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from controller.pipeline.tables import STAGE_IDS, TABLES

MatchValue = int | str | tuple[str, str]  # exact value, or (value, mask) for masked fields


@dataclass(frozen=True)
class Output:
    """Send the packet out of an OpenFlow port (``"in_port"`` sends it back)."""

    port: int | str


@dataclass(frozen=True)
class SetField:
    """Overwrite one header field (with ``mask``: only the bits the mask has set)."""

    name: str
    value: int | str
    mask: int | None = None


@dataclass(frozen=True)
class Move:
    """Copy one field into another (Nicira reg_move)."""

    src: str
    dst: str
    n_bits: int


@dataclass(frozen=True)
class DecTtl:
    """Decrement the IPv4 TTL; drop when it reaches zero."""


@dataclass(frozen=True)
class Ct:
    """Send the packet through conntrack in ``zone``.

    ``commit`` records the connection (with ``mark`` set, if given); ``nat`` is None for no
    NAT, ``""`` to apply a connection's existing NAT, ``"IP:PORT"`` for destination NAT, or
    ``"src=IP"`` for source NAT.
    ``table`` recirculates the packet there afterwards; None continues in this flow.
    """

    zone: int
    table: str | None = None
    commit: bool = False
    nat: str | None = None
    mark: int | None = None


@dataclass(frozen=True)
class Group:
    """Hand the packet to an OpenFlow group (a service VIP's select group)."""

    group_id: int


@dataclass(frozen=True)
class Resubmit:
    """Continue in another table (used inside group buckets, which have no goto)."""

    table: str


Action = Output | SetField | Move | DecTtl | Ct | Group | Resubmit


@dataclass(frozen=True)
class SelectGroup:
    """A select group: each new connection takes one bucket (hash of its 5-tuple)."""

    group_id: int
    buckets: tuple[tuple[Action, ...], ...]
    owner: str = ""


@dataclass(frozen=True)
class Flow:
    """One OpenFlow flow: where it lives, what it matches and what it does."""

    table: str
    priority: int
    match: tuple[tuple[str, MatchValue], ...] = ()
    actions: tuple[Action, ...] = ()
    goto: str | None = None
    write_metadata: int | None = None
    owner: str = field(default="", compare=True)

    @property
    def table_id(self) -> int:
        return TABLES[self.table]

    @property
    def cookie(self) -> int:
        """Stage (8 bits) | owner hash (24 bits) | content hash (32 bits).

        The stage and owner say who a flow belongs to; the content hash makes the cookie
        identify the flow itself, so a reconcile can diff switch and wanted state by cookie.
        """
        owner = int.from_bytes(hashlib.sha1(self.owner.encode()).digest()[:3], "big")
        content = repr((self.table, self.priority, self.match, self.actions, self.goto,
                        self.write_metadata)).encode()
        digest = int.from_bytes(hashlib.sha1(content).digest()[:4], "big")
        return (STAGE_IDS[self.table] << 56) | (owner << 32) | digest

    def matches(self) -> dict[str, Any]:
        return dict(self.match)


def flow(
    table: str,
    priority: int,
    match: dict[str, MatchValue] | None = None,
    actions: list[Action] | tuple[Action, ...] = (),
    *,
    goto: str | None = None,
    write_metadata: int | None = None,
    owner: str = "",
) -> Flow:
    """Build a Flow with a canonical (sorted) match."""
    return Flow(
        table=table,
        priority=priority,
        match=tuple(sorted((match or {}).items())),
        actions=tuple(actions),
        goto=goto,
        write_metadata=write_metadata,
        owner=owner,
    )


def cookie_stage(cookie: int) -> str | None:
    """Name of the stage a cookie belongs to, if it is one of ours."""
    stage_id = cookie >> 56
    for name, sid in STAGE_IDS.items():
        if sid == stage_id:
            return name
    return None
