"""How an observed interface differs from the planned one, field by field. Pure.

A difference is either repaired in place (MAC, MTU, link state, a missing address or default
route: the batched netlink path sets them again) or needs the veth pair made again (an end
or the pairing is gone, the host end is misconfigured, a host leg with an address that is
not ours).

An address a container's own processes add to its interface is theirs, and left alone: the
switch forwards only what comes from the address and MAC the topology gave the interface,
so it reaches nobody. (Remaking the veth for it cut the container off, and raced with a
user removing the address at the same moment.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plumbing.observe import LinkState, NamespaceState
    from sbcore.plan.hostplan import Endpoint, HostLeg


@dataclass(frozen=True)
class Drift:
    """What differs (short text for the status report) and whether the link must be remade."""

    what: str
    recreate: bool = False


def _config_differences(link: LinkState, mac: str, mtu: int, ip: str, prefixlen: int) -> list[str]:
    found = []
    if link.mac != mac.lower():
        found.append(f"MAC {link.mac} (want {mac.lower()})")
    if link.mtu != mtu:
        found.append(f"MTU {link.mtu} (want {mtu})")
    if not link.up:
        found.append("down")
    if (ip, prefixlen) not in link.addresses:
        found.append(f"no address {ip}/{prefixlen}")
    return found


def _extra_addresses(link: LinkState, ip: str, prefixlen: int) -> list[str]:
    return sorted(f"{a}/{p}" for a, p in link.addresses if (a, p) != (ip, prefixlen))


def endpoint_drift(
    ep: Endpoint, ns: NamespaceState | None, host_end: LinkState | None
) -> Drift | None:
    """Compare a container interface and its veth host end with the plan; None when equal."""
    if ns is None:
        return Drift(f"namespace {ep.netns} cannot be read", recreate=True)
    inner = ns.links.get(ep.ifname)
    if host_end is None:
        return Drift(f"veth host end {ep.port} missing", recreate=True)
    if inner is None:
        return Drift(f"{ep.ifname} missing", recreate=True)
    if (inner.kind, host_end.kind) != ("veth", "veth") or (
        inner.peer_index != host_end.index or host_end.peer_index != inner.index
    ):
        return Drift(f"{ep.ifname} is not the veth peer of {ep.port}", recreate=True)
    if not host_end.up or host_end.arp or host_end.mtu != ep.mtu:
        return Drift(f"veth host end {ep.port} misconfigured", recreate=True)
    found = _config_differences(inner, ep.mac, ep.mtu, str(ep.ip), ep.prefixlen)
    if ep.default_gateway is not None and (str(ep.default_gateway), ep.ifname) not in (
        ns.default_routes
    ):
        found.append(f"no default route via {ep.default_gateway}")
    lo = ns.links.get("lo")
    if lo is not None and not lo.up:
        found.append("lo down")
    return Drift(f"{ep.ifname}: {', '.join(found)}") if found else None


def host_leg_drift(leg: HostLeg, link: LinkState | None) -> Drift | None:
    """Compare a host leg (an OVS internal port in the root namespace) with the plan."""
    if link is None:
        return Drift(f"host interface {leg.port} missing", recreate=True)
    ip = str(leg.ip)
    extra = _extra_addresses(link, ip, leg.prefixlen)
    if extra:
        return Drift(f"{leg.port} has foreign address {', '.join(extra)}", recreate=True)
    found = _config_differences(link, leg.mac, leg.mtu, ip, leg.prefixlen)
    return Drift(f"{leg.port}: {', '.join(found)}") if found else None
