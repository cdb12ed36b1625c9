"""This host's view of the cluster: the host records in Consul KV, kept current by a watch,
and the :class:`~sbcore.plan.hostplan.Site` the data path is planned from."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import consul

from controller.switch.app import TunnelPeers
from sbcore.plan.hostplan import PeerHost, Site, overlay_mtu
from sbcore.state import hosts as host_inventory


def site_of(
    records: host_inventory.Hosts | None, host: str, netns_prefix: str, tunnelled_netdev: bool
) -> Site | None:
    """This host's place in the cluster; None until its own record is in KV (its slot, and so
    its addresses, are not known before). Pure.

    ``tunnelled_netdev``: this host sends through a tunnel on the userspace datapath, whose
    OVS 3.1 drops tunnelled packets that carry offload flags.
    """
    me = None if records is None else records.get(host)
    if records is None or me is None:
        return None
    first = min(records.values(), key=lambda r: r.slot)
    return Site(
        host=host, slot=me.slot, unplaced_host=first.name,
        peers={name: PeerHost(r.slot, r.tunnel_ip) for name, r in records.items()},
        netns_prefix=netns_prefix,
        max_mtu=overlay_mtu([r.underlay_mtu for r in records.values()]),
        tx_offload=not tunnelled_netdev,
    )


def tunnel_peers(site: Site, tunnel_port: int | None) -> TunnelPeers | None:
    """The tunnel port and every other host's underlay address, for the tunnel probes of a
    userspace-datapath OVS; None without a tunnel port or another host to reach. Pure."""
    addresses = tuple(sorted({peer.tunnel_ip for name, peer in site.peers.items()
                              if name != site.host and peer.tunnel_ip}))
    return TunnelPeers(tunnel_port, addresses) if tunnel_port and addresses else None


class HostsWatch:
    """A blocking-query watch on ``P/hosts/``: ``records`` is the latest read (None before the
    first), and ``changed`` is called whenever it changes."""

    def __init__(self, client: consul.Consul, prefix: str, changed: Callable[[], None],
                 stopping: threading.Event) -> None:
        self.client, self.prefix, self.changed, self.stopping = client, prefix, changed, stopping
        self.records: host_inventory.Hosts | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="hosts-watch", daemon=True).start()

    def _run(self) -> None:
        index = None
        base = host_inventory.hosts_prefix(self.prefix)
        while not self.stopping.is_set():
            try:
                new_index, entries = self.client.kv.get(base, recurse=True, index=index,
                                                        wait="30s")
            except Exception:  # noqa: BLE001 - the desired-state watch logs outages; retry
                time.sleep(0.5)
                continue
            records = host_inventory.parse_hosts(entries or [], [], self.prefix)
            if self.records is None or records != self.records:
                self.records = records
                self.changed()
            index = new_index
