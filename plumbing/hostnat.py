"""The host's part of egress and published ports: an nftables table of the daemon's own,
IPv4 forwarding on the interfaces that carry them, and ``route_localnet`` on the legs that
publish. Everything it changes it records, and puts back.

What the host kernel needs for egress (measured on Debian 12's kernel, docs/operations.md):

- ``net.ipv4.conf.<leg>.forwarding=1`` on each host leg of a network with egress (the leg
  goes with its network);
- ``net.ipv4.conf.<uplink>.forwarding=1`` on the host's other interfaces with an IPv4
  address: Linux checks forwarding on the interface a packet comes in by, so the replies,
  un-NATed back to a container's address, are forwarded only if their interface allows it.
  ``net.ipv4.ip_forward`` and ``conf.all`` are left alone;
- the table ``ip switchboard`` (``switchboard_<bridge>`` for a daemon on another bridge):
  masquerade for packets from egress subnets leaving by a non-leg interface; in ``forward``,
  nothing between legs (topologies stay apart), no new connection into a topology subnet
  from elsewhere unless destination-NATed to a published port, and on an uplink whose
  forwarding the daemon turned on, only replies, related packets and connections
  destination-NATed to a host leg: published ports, also another daemon's (what it
  forwarded before: nothing);
  in ``input``, a new connection arriving on a leg for any host address but the leg's own
  is dropped (egress never reaches the host's own listeners). Published ports: destination
  NAT of the host port on every host address to a container (the client's address kept) or
  to a VIP (masqueraded to the leg's address, so the switch balances it as the host's own
  connection and the reply comes back here), and masquerade of the host's own
  destination-NATed connections from ``127.0.0.0/8``;
- ``net.ipv4.conf.<leg>.route_localnet=1`` on the legs with a published port or VIP, where
  it was 0: a connection to ``127.0.0.1:PORT`` leaves by the leg with its loopback source
  (until masqueraded) and its reply comes back to a loopback address.

``close`` deletes the table and sets every flag it turned on back to 0. A record
in the state directory (``hostnat.json``) lets the next start do the same after a SIGKILL.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from plumbing.listeners import listening
from sbcore.plan.hostplan import TopologyPlan

LOG = logging.getLogger("switchboard.hostnat")
CONF = Path("/proc/sys/net/ipv4/conf")
LEG_PREFIX = "sbh"  # host legs of every Switchboard daemon (sbcore.model.naming)


@dataclass(frozen=True)
class Leg:
    """A host leg as the host's table needs it."""

    name: str
    ip: str
    subnet: str
    egress: bool
    publishes: bool = False  # a container on it has a published port


@dataclass(frozen=True)
class Dnat:
    """A published port: the host's ``host_port`` to ``ip:port`` (a container's address, or
    a VIP: ``masquerade``, so that the switch balances it as the host's own connection and
    the replies come back through the host). ``sources``: who may connect (None: anyone)."""

    proto: str
    host_port: int
    ip: str
    port: int
    sources: tuple[str, ...] | None = None
    masquerade: bool = False

    def rule(self) -> str:
        saddr = f"ip saddr {_set(self.sources)} " if self.sources else ""
        return (f"fib daddr type local {saddr}{self.proto} dport {self.host_port} "
                f"dnat to {self.ip}:{self.port}")


def table_name(bridge: str) -> str:
    """The daemon's nftables table: ``switchboard`` for the default bridge."""
    return "switchboard" if bridge == "sb-int" else "switchboard_" + bridge


def _set(items: Iterable[str], quote: bool = False) -> str:
    values = sorted(set(items))
    return "{ " + ", ".join(f'"{v}"' if quote else v for v in values) + " }"


def render(table: str, legs: list[Leg], enabled_uplinks: list[str],
           published: Iterable[Dnat] = ()) -> str:
    """The nft script that replaces the table in one transaction. Pure."""
    names = [leg.name for leg in legs]
    dnats = sorted((d for d in published if d.sources != ()),  # (): nobody may connect
                   key=lambda d: (d.proto, d.host_port))
    vips = [d.ip for d in dnats if d.masquerade]
    subnets = [leg.subnet for leg in legs if leg.egress]
    lines = [f"table ip {table} {{}}", f"delete table ip {table}", f"table ip {table} {{"]
    lines += ["  chain postrouting {", "    type nat hook postrouting priority srcnat;"]
    if subnets and names:
        lines.append(f"    ip saddr {_set(subnets)} oifname != {_set(names, True)} masquerade")
    if dnats:  # the host's own connections through 127.0.0.1 (needs route_localnet)
        lines.append("    ip saddr 127.0.0.0/8 ct status dnat masquerade")
    if vips:
        lines.append(f"    ip daddr {_set(vips)} ct status dnat masquerade")
    lines += ["  }", "  chain prerouting {", "    type nat hook prerouting priority dstnat;"]
    not_legs = f"iifname != {_set(names, True)} " if names else ""
    lines += [f"    {not_legs}{d.rule()}" for d in dnats]
    lines += ["  }", "  chain output {", "    type nat hook output priority -100;"]
    lines += [f"    {d.rule()}" for d in dnats]
    lines += ["  }", "  chain forward {", "    type filter hook forward priority filter;"]
    if names:
        lines.append(f"    iifname {_set(names, True)} oifname {_set(names, True)} drop")
        # from anywhere but a leg, into a topology subnet: only published ports (DNATed),
        # also on a host that forwards everything (the switch cannot tell them apart)
        subnets_in = _set(leg.subnet for leg in legs)
        lines.append(f"    iifname != {_set(names, True)} ip daddr {subnets_in}"
                     " ct state new ct status & dnat != dnat drop")
    if enabled_uplinks:
        uplinks = _set(enabled_uplinks, True)
        lines.append(f"    iifname {uplinks} ct state established,related accept")
        # published ports, this daemon's or another's on this host (which did not record
        # the uplink: it found forwarding on), go to a host leg
        lines.append(f'    iifname {uplinks} oifname "{LEG_PREFIX}*" ct status dnat accept')
        lines.append(f"    iifname {uplinks} drop")
    lines += ["  }", "  chain input {", "    type filter hook input priority filter;"]
    for leg in sorted(legs, key=lambda leg: leg.name):
        lines.append(f'    iifname "{leg.name}" ip daddr != {leg.ip} ct state new drop')
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


def _conf(ifname: str, setting: str = "forwarding") -> str | None:
    """``net.ipv4.conf.<ifname>.<setting>`` (None: no such interface)."""
    try:
        return (CONF / ifname / setting).read_text().strip()
    except OSError:
        return None


def _set_conf(ifname: str, value: str, setting: str = "forwarding") -> None:
    try:
        (CONF / ifname / setting).write_text(value)
    except OSError as exc:  # the interface went away meanwhile
        LOG.debug("%s on %s: %s", setting, ifname, exc)


def uplinks() -> list[str]:
    """The root namespace's interfaces with an IPv4 address that are not host legs."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True,
                         check=True).stdout
    found = set()
    for line in out.splitlines():
        name = line.split()[1].split("@")[0]
        if name != "lo" and not name.startswith(LEG_PREFIX):
            found.add(name)
    return sorted(found)


class HostNat:
    """Keeps the daemon's nftables table and forwarding flags as its egress networks need."""

    def __init__(self, bridge: str, state_dir: Path) -> None:
        self.table = table_name(bridge)
        self.record = state_dir / "hostnat.json"
        self.enabled: list[str] = []  # uplinks whose forwarding this daemon turned on
        self.localnet: list[str] = []  # legs whose route_localnet this daemon turned on
        self.claimed: set[tuple[str, int]] = set()  # (proto, host port) published now
        self.active = False
        self.ok = True  # False: the last apply failed, egress flows are left out
        self.lock = threading.Lock()
        self.final = False  # shut down for good: nothing is made again

    def sync(self, plans: list[TopologyPlan], ports: Mapping[str, int],
             errors: dict[str, str]) -> list[TopologyPlan]:
        """Set up the host's part of egress and published ports for the plugged-in legs;
        where that fails, the plans without egress (its flows must not come without the
        host's table), and an error on each topology that wants egress. A host port that
        something on this host listens on is not published (an error on its topology)."""
        legs, dnats = [], []
        for plan in plans:
            wanted = _dnats(plan, ports)
            for net in plan.networks:
                if net.host_leg.port in ports:
                    legs.append(Leg(net.host_leg.port, str(net.host_leg.ip), str(net.subnet),
                                    net.egress, any(leg == net.name for leg, _, _ in wanted)))
            dnats += self._unclaimed(plan.name, [(what, d) for _, what, d in wanted], errors)
        try:
            self.apply(legs, dnats)
            self.ok = True
        except Exception as exc:  # noqa: BLE001 - reported on the topologies that want it
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) \
                else str(exc)
            LOG.warning("egress: the host's part failed: %s", detail)
            self.ok = False
            for plan in plans:
                if plan.published or plan.published_vips \
                        or any(net.egress for net in plan.networks):
                    errors.setdefault(plan.name, f"egress and published ports: {detail}")
        return self.usable(plans)

    def _unclaimed(self, topology: str, wanted: list[tuple[str, Dnat]],
                   errors: dict[str, str]) -> list[Dnat]:
        """``wanted`` without the host ports newly published that something on this host
        listens on (each an error on ``topology``)."""
        new = [d for _, d in wanted if (d.proto, d.host_port) not in self.claimed]
        taken = listening() if new else set()
        kept = []
        for what, dnat in wanted:
            key = (dnat.proto, dnat.host_port)
            if key in taken and key not in self.claimed:
                errors.setdefault(topology, f"{what}: host port {dnat.host_port}/{dnat.proto} "
                                  "is already taken on this host (something listens on it), "
                                  "so it is not published here; publish another host port "
                                  "or stop what listens on it")
            else:
                kept.append(dnat)
        return kept

    def usable(self, plans: list[TopologyPlan]) -> list[TopologyPlan]:
        """``plans``, without egress while the host's part is not in place."""
        if self.ok:
            return plans
        return [replace(plan, published=(), published_vips=(),
                        networks=tuple(replace(net, egress=False) for net in plan.networks))
                for plan in plans]

    def available(self) -> bool:
        return shutil.which("nft") is not None

    def start(self) -> None:
        """Undo what an earlier daemon on this bridge left (after a SIGKILL)."""
        try:
            left = json.loads(self.record.read_text())
        except (OSError, ValueError):
            left = None
        if left is not None:
            LOG.info("removing host egress settings an earlier daemon left: table %s, "
                     "forwarding on %s", self.table, ", ".join(left.get("forwarding", [])) or "-")
            self.enabled = list(left.get("forwarding", []))
            self.localnet = list(left.get("route_localnet", []))
        self.active = True  # a table without a record (none, or one of an older daemon) too
        self.close()

    def apply(self, legs: list[Leg], published: list[Dnat] | None = None) -> None:
        """Make the table and forwarding flags fit ``legs`` and ``published``; with neither
        an egress leg nor a published port, remove all."""
        with self.lock:
            if self.final:
                return
            self._apply(legs, published)

    def shutdown(self) -> None:
        """The daemon stops for good: remove everything, make nothing again."""
        with self.lock:
            self.final = True
            self.close()

    def _apply(self, legs: list[Leg], published: list[Dnat] | None) -> None:
        if not any(leg.egress or leg.publishes for leg in legs):
            self.close()
            return
        if not self.available():
            raise RuntimeError("egress needs nftables (the nft command): "
                               "apt-get install nftables, or set egress: false")
        for leg in legs:
            if (leg.egress or leg.publishes) and _conf(leg.name) == "0":
                _set_conf(leg.name, "1")
        self._route_localnet({leg.name for leg in legs if leg.publishes})
        for name in uplinks():
            if name not in self.enabled and _conf(name) == "0":
                self.enabled.append(name)
        self.enabled = [n for n in self.enabled if _conf(n) is not None]
        self._save()  # before the change: a crash in between still leaves a record
        self.active = True
        script = render(self.table, legs, self.enabled, published or [])
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True,
                       capture_output=True)
        self.claimed = {(d.proto, d.host_port) for d in published or []}
        for name in self.enabled:
            if _conf(name) == "0":
                _set_conf(name, "1")

    def close(self) -> None:
        """Delete the table and turn off the forwarding this daemon turned on."""
        if not self.active:
            return
        if self.available():
            subprocess.run(["nft", "delete", "table", "ip", self.table], capture_output=True)
        for name in self.enabled:
            _set_conf(name, "0")
        for name in self.localnet:
            _set_conf(name, "0", "route_localnet")
        self.enabled, self.localnet, self.claimed = [], [], set()
        self.record.unlink(missing_ok=True)
        self.active = False

    def _save(self) -> None:
        self.record.parent.mkdir(parents=True, exist_ok=True)
        self.record.write_text(json.dumps({"table": self.table, "forwarding": self.enabled,
                                           "route_localnet": self.localnet}))

    def _route_localnet(self, legs: set[str]) -> None:
        """``route_localnet=1`` on the legs with published ports (the host reaches them
        through 127.0.0.1), where it was 0; back to 0 on a leg that publishes no more."""
        for name in sorted(legs):
            if name not in self.localnet and _conf(name, "route_localnet") == "0":
                self.localnet.append(name)
        for name in [n for n in self.localnet if n not in legs]:
            _set_conf(name, "0", "route_localnet")
            self.localnet.remove(name)
        self._save()  # before the change: a crash in between still leaves a record
        for name in self.localnet:
            _set_conf(name, "1", "route_localnet")


def _dnats(plan: TopologyPlan, ports: Mapping[str, int]) -> list[tuple[str, str, Dnat]]:
    """(network, what in the file, DNAT) of each published port and VIP of ``plan`` whose
    host leg is plugged in. Pure."""
    legs = {net.name for net in plan.networks if net.host_leg.port in ports}
    found = [(p.network, f"containers.{p.container}.publish",
              Dnat(p.publish.proto, p.publish.host_port, str(p.ip), p.publish.port))
             for p in plan.published if p.network in legs]
    found += [(v.network, f"services.{v.service}.publish",
               Dnat(v.proto, v.host_port, str(v.vip), v.port, v.sources, masquerade=True))
              for v in plan.published_vips if v.network in legs]
    return found
