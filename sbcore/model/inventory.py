"""The host inventory's records (pure): a host as placement and ``switchboard hosts`` see it.

sbcore.state.hosts reads them from Consul (records in KV joined with the health of each host's
``switchboard-host`` registration); the placement planner and the CLI only use these types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

State = Literal["ready", "down"]


@dataclass(frozen=True)
class HostRecord:
    """A host as ``switchboard hosts`` shows it: its record joined with Consul's health."""

    name: str
    slot: int
    tunnel_ip: str | None = None
    datapath: str = "netdev"
    underlay_mtu: int | None = None
    bridge: str = ""
    version: str = ""
    state: State = "down"
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "ready"


class Hosts(dict[str, HostRecord]):
    """Host name -> record (sorted by name), and the keys under ``P/hosts/`` that are not
    host records: ``skipped`` (key -> why), reported, never raised."""

    def __init__(self, records: Iterable[HostRecord] = (), skipped: Mapping[str, str] | None
                 = None) -> None:
        super().__init__((r.name, r) for r in sorted(records, key=lambda r: r.name))
        self.skipped: dict[str, str] = dict(skipped or {})

    def ready(self) -> list[str]:
        """The names of the ready hosts, sorted."""
        return [name for name, record in self.items() if record.ready]
