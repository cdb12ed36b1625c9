"""What `switchboard up` would change: the stored desired state against the new one. Pure.

Both sides are a topology with its allocation (container, network -> address) and its
placement (container -> host): a stored topology (sbcore.model.desired.StoredTopology) and
admission's decision (switchboard.apply.Decision) both are. :func:`diff` lists the networks,
routers, policies, containers and services added, changed and removed, the addresses that
are allocated or released, and what happens to each changed container on its host:

- it **restarts** (its command is stopped and started again) when its command changes, its
  ``attach`` pid changes (its namespace is taken again), or it moves to another host;
- its interfaces are **re-plugged** (made again; the command keeps running) when what its
  ports record changes: an address, MAC, prefix length, MTU, the default gateway, the
  order of its networks, or which networks it is on (see plumbing.plan).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address
from typing import Any, Literal, Protocol

from sbcore.model import Topology, ipam, naming
from sbcore.model.desired import topology_objects

Action = Literal["add", "change", "remove"]
KIND_ORDER = ("network", "router", "policy", "container", "service")


class Desired(Protocol):
    """One side of the diff."""

    @property
    def topology(self) -> Topology: ...
    @property
    def allocation(self) -> ipam.Allocation: ...
    @property
    def placement(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Change:
    """One object added, changed or removed; ``details`` say what (for a change) or what
    it is (for an addition or removal)."""

    kind: str  # network, router, policy, container, service
    name: str
    action: Action
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class AddressChange:
    """An address an attachment gets (``new``) or gives back (``old`` only)."""

    container: str
    network: str
    old: str | None
    new: str | None
    fixed: bool  # from the file's ``ip``; else IPAM's


@dataclass(frozen=True)
class Effect:
    """What happens to a container that stays: ``restart`` or ``replug``, and why."""

    container: str
    effect: Literal["restart", "replug"]
    reasons: tuple[str, ...]


@dataclass
class ChangeSet:
    """Everything `up` would change for one topology."""

    topology: str
    new: bool  # the topology is not applied yet
    changes: list[Change] = field(default_factory=list)
    addresses: list[AddressChange] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.changes or self.addresses or self.effects)

    def counts(self) -> Counter[str]:
        return Counter(c.action for c in self.changes)

    def restarts(self) -> list[Effect]:
        return [e for e in self.effects if e.effect == "restart"]

    def to_json(self) -> dict[str, Any]:
        return {"topology": self.topology, "new": self.new, "changed": not self.is_empty(),
                "changes": [asdict(c) for c in self.changes],
                "addresses": [asdict(a) for a in self.addresses],
                "restart": [asdict(e) for e in self.effects if e.effect == "restart"],
                "replug": [asdict(e) for e in self.effects if e.effect == "replug"]}


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def field_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """``key.path: old -> new`` for every leaf that differs between two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(old.keys() | new.keys()):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub}: {_show(new[key])} (new)")
            elif key not in new:
                out.append(f"{sub}: {_show(old[key])} removed")
            else:
                out += field_changes(old[key], new[key], sub)
        return out
    return [] if old == new else [f"{path}: {_show(old)} -> {_show(new)}"]


def _objects(side: Desired | None, kind: str) -> dict[str, Any]:
    """The side's KV objects of one kind (``networks``, ``policies``...), by name."""
    if side is None:
        return {}
    prefix = f"{kind}/"
    return {path[len(prefix):]: value
            for path, value in topology_objects(side.topology, side.allocation).items()
            if path.startswith(prefix)}


def _keyed(kind: str, old: dict[str, Any], new: dict[str, Any],
           describe: Any = None, details: Any = field_changes) -> list[Change]:
    changes = []
    for name in sorted(old.keys() | new.keys()):
        if name not in old:
            changes.append(Change(kind, name, "add", describe(new[name]) if describe else ()))
        elif name not in new:
            changes.append(Change(kind, name, "remove"))
        elif old[name] != new[name]:
            changes.append(Change(kind, name, "change", tuple(details(old[name], new[name]))))
    return changes


def _network_summary(value: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f"{k} {value[k]}" for k in ("subnet", "gateway", "mtu") if k in value)


def _policy_text(policy: dict[str, Any]) -> str:
    ports = ", ".join(policy.get("ports") or []) or "all ports"
    return f"{policy['from']} -> {policy['to']} ({ports})"


def _policies(old: Desired | None, new: Desired) -> list[Change]:
    """Policies compared as rules (their order does not matter to the pipeline)."""
    before = Counter(_policy_text(p) for p in _objects(old, "policies").values())
    after = Counter(_policy_text(p) for p in _objects(new, "policies").values())
    return ([Change("policy", text, "add") for text in sorted((after - before).elements())]
            + [Change("policy", text, "remove") for text in sorted((before - after).elements())])


def _services(side: Desired | None) -> dict[str, dict[str, Any]]:
    """Service -> its settings (VIP) and its instances (container -> what Consul gets)."""
    if side is None:
        return {}
    topo = side.topology
    out: dict[str, dict[str, Any]] = {}
    for name, settings in topo.services.items():
        out.setdefault(name, {})["settings"] = settings.model_dump(mode="json",
                                                                    exclude_none=True)
    for name, instances in topo.declared_services().items():
        out.setdefault(name, {})["instances"] = {
            container: {**inst.model_dump(mode="json", exclude_none=True, exclude={"name"}),
                        "address": str(side.allocation.get((container, inst.network or ""),
                                                           ""))}
            for container, inst in instances
        }
    return out


def _service_summary(value: dict[str, Any]) -> tuple[str, ...]:
    settings = value.get("settings", {})
    parts = [f"vip {settings['vip']}" + (f":{settings['port']}" if "port" in settings else "")
             ] if "vip" in settings else []
    if "publish" in settings:
        parts.append(f"published on host port {settings['publish']}")
    instances = value.get("instances", {})
    parts += [f"instance {c} {i['address']}:{i['port']}" for c, i in sorted(instances.items())]
    return tuple(parts)


def _service_details(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = field_changes(old.get("settings", {}), new.get("settings", {}))
    before, after = old.get("instances", {}), new.get("instances", {})
    for container in sorted(before.keys() | after.keys()):
        if container not in before:
            inst = after[container]
            out.append(f"instance {container} added ({inst['address']}:{inst['port']})")
        elif container not in after:
            out.append(f"instance {container} removed")
        else:
            out += [f"instance {container}: {line}"
                    for line in field_changes(before[container], after[container])]
    return out


def _container_summary(name: str, side: Desired) -> tuple[str, ...]:
    container = side.topology.containers[name]
    parts = [f"{net} {side.allocation[(name, net)]}" for net in container.networks]
    if host := side.placement.get(name):
        parts.append(f"on host {host}")
    if container.image:
        parts.append(f"image {container.image}")
    if container.command:
        parts.append(f"command {_show(container.command)}")
    if container.publish:
        parts.append(f"publishes {', '.join(container.publish)}")
    return tuple(parts)


def _ports(side: Desired, name: str) -> dict[str, dict[str, Any]]:
    """What each of a container's ports records (as plumbing.plan.endpoint_ids), by network;
    the MTU is the network's own (the host's default when it gives none)."""
    topo = side.topology
    container = topo.containers[name]
    ports = {}
    for index, (net, attachment) in enumerate(container.networks.items()):
        network = topo.networks[net]
        ports[net] = {
            "interface": naming.container_ifname(index),
            "ip": str(side.allocation.get((name, net))),
            "prefixlen": network.subnet.prefixlen,
            "mac": attachment.mac or naming.container_mac(topo.name, name, net),
            "mtu": network.mtu if network.mtu is not None else "default",
            "gateway": str(network.effective_gateway) if index == 0 else None,
        }
    return ports


def _effect(name: str, old: Desired, new: Desired) -> list[Effect]:
    before, after = old.topology.containers[name], new.topology.containers[name]
    restart = []
    if before.command != after.command:
        restart.append("its command changes" if after.command else "its command is removed")
    for key in ("image", "env", "volumes", "workdir", "user"):
        if getattr(before, key) != getattr(after, key):
            restart.append(f"its {key} changes (the runtime's container is made again)")
    if before.attach != after.attach:
        old = before.attach.describe() if before.attach else "nothing"
        new = after.attach.describe() if after.attach else "nothing"
        restart.append(f"it attaches to {new} instead of {old}")
    was, goes = old.placement.get(name), new.placement.get(name)
    if was and goes and was != goes:
        restart.append(f"it moves from host {was} to host {goes}")
    if restart:
        return [Effect(name, "restart", tuple(restart))]
    replug = []
    old_ports, new_ports = _ports(old, name), _ports(new, name)
    for net in sorted(old_ports.keys() - new_ports.keys()):
        replug.append(f"leaves network {net}")
    for net in sorted(new_ports.keys() - old_ports.keys()):
        replug.append(f"joins network {net}")
    for net in sorted(old_ports.keys() & new_ports.keys()):
        replug += [f"{net} {line}" for line in field_changes(old_ports[net], new_ports[net])]
    return [Effect(name, "replug", tuple(replug))] if replug else []


def _addresses(old: Desired | None, new: Desired) -> list[AddressChange]:
    before: ipam.Allocation = old.allocation if old is not None else {}
    fixed = {(c, n) for c, spec in new.topology.containers.items()
             for n, att in spec.networks.items() if att.ip is not None}
    out = [AddressChange(c, n, _str(before.get((c, n))), str(ip), (c, n) in fixed)
           for (c, n), ip in new.allocation.items() if before.get((c, n)) != ip]
    out += [AddressChange(c, n, str(ip), None, False)
            for (c, n), ip in before.items() if (c, n) not in new.allocation]
    return sorted(out, key=lambda a: (a.container, a.network))


def _str(ip: IPv4Address | None) -> str | None:
    return None if ip is None else str(ip)


def diff(old: Desired | None, new: Desired) -> ChangeSet:
    """What storing ``new`` in place of ``old`` (None: not applied) changes."""
    result = ChangeSet(new.topology.name, old is None)
    result.changes += _keyed("network", _objects(old, "networks"), _objects(new, "networks"),
                             _network_summary)
    result.changes += _keyed("router", _objects(old, "routers"), _objects(new, "routers"),
                             lambda v: (", ".join(v["networks"]),))
    result.changes += _policies(old, new)
    old_c, new_c = _objects(old, "containers"), _objects(new, "containers")
    for name in sorted(old_c.keys() | new_c.keys()):
        if name not in old_c:
            result.changes.append(Change("container", name, "add",
                                         _container_summary(name, new)))
            continue
        if name not in new_c:
            result.changes.append(Change("container", name, "remove",
                                         ("its command stops",) if old and
                                         old.topology.containers[name].command else ()))
            continue
        assert old is not None
        spec_old = {**old_c[name]["spec"], "network order": old_c[name]["network_order"]}
        spec_new = {**new_c[name]["spec"], "network order": new_c[name]["network_order"]}
        spec_old.pop("services", None)  # shown under services
        spec_new.pop("services", None)
        details = field_changes(spec_old, spec_new)
        details += [f"address on {net}: {a} -> {b}" for net, a, b in _moved(name, old, new)]
        was, goes = old.placement.get(name), new.placement.get(name)
        if was != goes:
            details.append(f"host: {was or 'not placed'} -> {goes or 'not placed'}")
        if details:
            result.changes.append(Change("container", name, "change", tuple(details)))
        result.effects += _effect(name, old, new)  # a network's change touches its ports too
    result.changes += _keyed("service", _services(old), _services(new), _service_summary,
                             _service_details)
    result.addresses = _addresses(old, new)
    return result


def _moved(name: str, old: Desired, new: Desired) -> list[tuple[str, str, str]]:
    """(network, old, new) for a kept attachment whose address changes."""
    return [(net, str(old.allocation[(name, net)]), str(ip))
            for (c, net), ip in new.allocation.items()
            if c == name and (c, net) in old.allocation and old.allocation[(c, net)] != ip]


def render(changes: ChangeSet, source_note: str = "") -> list[str]:
    """The plan as text lines, like Terraform's: ``+`` added, ``~`` changed, ``-`` removed."""
    name = changes.topology
    if changes.is_empty():
        return [f"topology {name}: no changes; `up` would leave it as it is"
                + (f" ({source_note})" if source_note else "")]
    head = (f"topology {name} is not applied yet; `up` would create it:" if changes.new
            else f"topology {name}: `up` would change:")
    lines = [head]
    sign = {"add": "+", "change": "~", "remove": "-"}
    for kind in KIND_ORDER:
        for change in (c for c in changes.changes if c.kind == kind):
            lines.append(f"  {sign[change.action]} {kind} {change.name}")
            lines += [f"      {d}" for d in change.details]
    allocated = [a for a in changes.addresses if a.new is not None]
    if allocated:
        lines.append("addresses:")
        for a in allocated:
            how = "fixed" if a.fixed else "IPAM"
            was = f" (was {a.old})" if a.old else ""
            lines.append(f"  {a.container} on {a.network}: {a.new} ({how}){was}")
    released = [a for a in changes.addresses if a.new is None]
    if released:
        lines.append("addresses released: " + ", ".join(
            f"{a.container} on {a.network} {a.old}" for a in released))
    for title, effect in (("containers that restart", "restart"),
                          ("interfaces made again (the command keeps running)", "replug")):
        found = [e for e in changes.effects if e.effect == effect]
        if found:
            lines.append(f"{title}:")
            lines += [f"  {e.container}: {'; '.join(e.reasons)}" for e in found]
    count = changes.counts()
    lines.append(f"{count['add']} to add, {count['change']} to change, "
                 f"{count['remove']} to remove")
    return lines
