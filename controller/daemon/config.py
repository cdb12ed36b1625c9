"""What ``switchboard controller`` is told: its options and environment, in one place."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ovsdb.bridge import DEFAULT_DB
from sbcore.state.store import DEFAULT_CONSUL


@dataclass
class DaemonConfig:
    """Where the daemon finds its parts: command-line options of ``switchboard controller``,
    and environment variables (``SWITCHBOARD_RESYNC_SECONDS``, ``SWITCHBOARD_CONSUL_DNS``,
    ``SWITCHBOARD_UPSTREAM_DNS``)."""

    consul: str = DEFAULT_CONSUL
    prefix: str = "switchboard"
    bridge: str = "sb-int"
    of_host: str = "127.0.0.1"
    of_port: int = 6653
    ovsdb: str = field(  # ovsdb-server's address (``unix:PATH`` or ``tcp:HOST:PORT``)
        default_factory=lambda: os.environ.get("SWITCHBOARD_OVSDB", DEFAULT_DB)
    )
    state_dir: Path = Path("/var/lib/switchboard")
    host_id: str = field(default_factory=socket.gethostname)
    resync_seconds: float = field(
        default_factory=lambda: float(os.environ.get("SWITCHBOARD_RESYNC_SECONDS", "10"))
    )
    consul_dns: str = field(  # Consul's DNS interface, where .consul names are forwarded
        default_factory=lambda: os.environ.get("SWITCHBOARD_CONSUL_DNS", "127.0.0.1:8600")
    )
    dns_port: int = 53  # where containers' DNS queries arrive, on the host's address
    upstream_dns: str | None = field(  # HOST[:PORT],... for names outside Consul (None: the
        default_factory=lambda: os.environ.get("SWITCHBOARD_UPSTREAM_DNS") or None
    )  # host's own resolvers, from /etc/resolv.conf)
    consul_timeout: float = 5.0  # seconds any Consul call may take (blocking ones: + wait)
    retry_seconds: float = 1.0  # next pass after a Consul call failed
    tunnel_ip: str | None = None  # this host's underlay address for the overlay
    underlay_mtu: int | None = None  # MTU of the interface holding tunnel_ip
    netns_prefix: str = "sb-"  # container namespaces this daemon owns start with it
    reschedule_after: float = field(  # seconds a host stays down before its containers move
        default_factory=lambda: float(os.environ.get("SWITCHBOARD_RESCHEDULE_AFTER", "30"))
    )
    metrics: str | None = None  # HOST:PORT of /metrics and /healthz (None: not served)
    runtime: str = field(  # what runs image containers (plumbing.images.RUNTIMES)
        default_factory=lambda: os.environ.get("SWITCHBOARD_RUNTIME", "podman"))
