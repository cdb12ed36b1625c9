"""What a container's DNS question about a service gets: its own topology's instances. Pure.

A container asks the daemon's forwarder on the host's address on one of its topology's
networks, so the address a query arrives on says which topology asks (:class:`Scope`).
Two kinds of names are answered by the forwarder rather than by Consul's DNS interface:

- ``NAME.service.consul`` in Consul's forms (``TAG.NAME.service.consul``,
  ``_NAME._TAG.service.consul``, ``….service.DC.consul``), when another topology declares
  a service NAME too: the instances of NAME that are not critical (as Consul's DNS answers)
  and are the asking topology's own or belong to no topology (registered by
  :class:`discovery.registry.Registry`, by Consul itself or by another tool). Another
  topology's instances are never in the answer. When no other topology declares NAME,
  Consul holds no other topology's instance of it, and Consul's own answer is the same;
- ``NAME.vip.consul``: the VIP of the asking topology's service NAME (A, and SRV with the
  VIP's port), whether or not an instance passes, as Kubernetes answers for a ClusterIP.

Answers are built with dnspython the way Consul builds them: TTL 0, SRV targets
``<hex address>.addr.<dc>.consul`` with the address in the additional section, NXDOMAIN
when no instance is left, records shuffled. A UDP answer that does not fit keeps the
instances that fit and sets TC, so the client asks again over TCP and gets them all.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.SRV import SRV

from discovery.catalog import worst_status
from discovery.instances import TOPOLOGY_KEY

if TYPE_CHECKING:
    from sbcore.model import Topology
    from sbcore.plan.hostplan import TopologyPlan

__all__ = [
    "Endpoint",
    "Scope",
    "ServiceQuestion",
    "VipQuestion",
    "endpoints",
    "parse_question",
    "scopes_of",
    "service_answer",
    "to_wire",
    "vip_answer",
]

# Labels Consul's DNS interface reads as the kind of a name (agent/dns.go); the rightmost wins.
_CONSUL_KINDS = frozenset({"service", "connect", "ingress", "node", "query", "addr", "virtual"})
_SOA_TEXT = "ns.{domain}. hostmaster.{domain}. 1 3600 600 86400 0"
IN = dns.rdataclass.IN


@dataclass(frozen=True)
class Scope:
    """The topology whose containers ask on one listener address, its VIPs (service ->
    (VIP, port; None when the VIP keeps each instance's port)), and the services that
    other topologies declare as well: only their answers need building here."""

    topology: str
    vips: Mapping[str, tuple[str, int | None]] = field(default_factory=dict)
    shared: frozenset[str] = frozenset()  # services another topology declares too


@dataclass(frozen=True)
class ServiceQuestion:
    """``[TAG.]NAME.service[.DC].consul``: instances of ``service`` (with ``tag``)."""

    service: str
    tag: str | None = None
    datacenter: str | None = None


@dataclass(frozen=True)
class VipQuestion:
    """``NAME.vip.consul``: the VIP of the asking topology's service ``service``."""

    service: str


@dataclass(frozen=True)
class Endpoint:
    """One instance in an answer: its address (an IP or a host name), port and datacenter."""

    address: str
    port: int
    datacenter: str


def scopes_of(plans: Iterable[TopologyPlan], topologies: Iterable[Topology]) -> dict[str, Scope]:
    """The host's address on every network -> the scope of the topology the network is in.
    ``topologies``: every topology in the desired state, for the services each declares."""
    declared = {t.name: set(t.declared_services()) for t in topologies}
    scopes = {}
    for plan in plans:
        shared = frozenset().union(*(names for name, names in declared.items()
                                     if name != plan.name))
        scope = Scope(plan.name, {s.name: (str(s.vip), s.port) for s in plan.services}, shared)
        for network in plan.networks:
            scopes[str(network.host_leg.ip)] = scope
    return scopes


def parse_question(
    qname: str, qtype: int, domain: str = "consul"
) -> ServiceQuestion | VipQuestion | None:
    """The service or VIP a name asks about, read the way Consul reads its names; None for
    every other name (nodes, addresses, prepared queries, other domains)."""
    labels = qname.lower().rstrip(".").split(".")
    suffix = domain.lower().strip(".").split(".")
    if len(labels) <= len(suffix) or labels[-len(suffix):] != suffix:
        return None
    labels = labels[:-len(suffix)]
    if labels[-1] == "vip":
        return VipQuestion(labels[0]) if len(labels) == 2 else None
    for i in range(len(labels) - 1, -1, -1):
        if labels[i] in _CONSUL_KINDS:
            kind, parts, rest = labels[i], labels[:i], labels[i + 1:]
            break
        if qtype == dns.rdatatype.SRV and labels[i].startswith("_"):  # "service" optional
            kind, parts, rest = "service", labels[:i + 1], labels[i + 1:]
            break
    else:
        return None
    if kind != "service" or not parts or len(rest) > 1:
        return None
    datacenter = rest[0] if rest else None
    if len(parts) == 2 and parts[0].startswith("_") and parts[1].startswith("_"):
        tag = parts[1][1:]  # RFC 2782: _NAME._TAG, where _tcp means any tag
        return ServiceQuestion(parts[0][1:], None if tag == "tcp" else tag, datacenter)
    return ServiceQuestion(parts[-1], ".".join(parts[:-1]) or None, datacenter)


def endpoints(
    entries: Iterable[Mapping[str, Any]], topology: str, tag: str | None = None
) -> list[Endpoint]:
    """The instances of a ``/v1/health/service/NAME`` answer a container of ``topology`` may
    see: its own topology's or no topology's, not critical, with ``tag`` (any case)."""
    found = []
    for entry in entries:
        svc, node = entry.get("Service") or {}, entry.get("Node") or {}
        owner = (svc.get("Meta") or {}).get(TOPOLOGY_KEY)
        if owner is not None and owner != topology:
            continue
        if worst_status(c.get("Status", "critical") for c in entry.get("Checks") or ()) \
                == "critical":
            continue
        if tag is not None and tag not in {t.lower() for t in svc.get("Tags") or ()}:
            continue
        address = svc.get("Address") or node.get("Address") or ""
        if address:
            found.append(Endpoint(address, int(svc.get("Port") or 0),
                                  node.get("Datacenter") or "dc1"))
    return found


# --------------------------------------------------------------------------- answers


def _is_ip(text: str) -> int:
    """4 or 6 for an IP address, 0 for a host name."""
    try:
        return ip_address(text).version
    except ValueError:
        return 0


def _rrset(name: dns.name.Name, rdatas: Sequence[dns.rdata.Rdata]) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, 0, list(rdatas))


def _address(text: str) -> dns.rdata.Rdata:
    """An A or AAAA record's data (built directly: parsing text costs ten times more)."""
    if _is_ip(text) == 4:
        return A(IN, dns.rdatatype.A, text)
    return AAAA(IN, dns.rdatatype.AAAA, text)


def _address_rrsets(name: dns.name.Name, qtype: int, addresses: Sequence[str]) -> list:
    """A/AAAA for ``addresses`` of the asked type (both for ANY); a host name as CNAME."""
    want = {dns.rdatatype.A: (4,), dns.rdatatype.AAAA: (6,), dns.rdatatype.ANY: (4, 6)}
    versions = want.get(qtype, ())
    out = []
    for version in (4, 6):
        found = [_address(a) for a in addresses if _is_ip(a) == version]
        if version in versions and found:
            out.append(_rrset(name, found))
    names = [a for a in addresses if not _is_ip(a)]
    if versions and names:
        target = dns.name.from_text(names[0].rstrip(".") + ".")
        out.append(_rrset(name, [CNAME(IN, dns.rdatatype.CNAME, target)]))
    return out


def _srv(port: int, target: str) -> dns.rdata.Rdata:
    return SRV(IN, dns.rdatatype.SRV, 1, 1, port, dns.name.from_text(target))


def _target(ep: Endpoint, domain: str) -> str:
    """An SRV target: Consul's ``<hex>.addr.<dc>.<domain>.`` for an IP, else the host name."""
    if not _is_ip(ep.address):
        return ep.address.rstrip(".") + "."
    return f"{ip_address(ep.address).packed.hex()}.addr.{ep.datacenter}.{domain}."


def _response(query: dns.message.Message, rcode: int = dns.rcode.NOERROR) -> dns.message.Message:
    response = dns.message.make_response(query, recursion_available=True)
    response.flags |= dns.flags.AA
    response.set_rcode(rcode)
    return response


def _negative(query: dns.message.Message, rcode: int, domain: str) -> dns.message.Message:
    """NXDOMAIN or no data, with the domain's SOA (negative TTL 0: nothing caches it)."""
    response = _response(query, rcode)
    response.authority.append(_soa(domain))
    return response


@functools.cache
def _soa(domain: str) -> dns.rrset.RRset:
    """The domain's SOA record, parsed once (rendering does not change it)."""
    return dns.rrset.from_text(dns.name.from_text(domain), 0, IN, dns.rdatatype.SOA,
                               _SOA_TEXT.format(domain=domain.strip(".")))


def service_answer(
    query: dns.message.Message,
    found: Sequence[Endpoint],
    domain: str = "consul",
    shuffle: Callable[[list[Endpoint]], None] = random.shuffle,
) -> tuple[dns.message.Message, Callable[[int], dns.message.Message]]:
    """The answer to a service question about ``found`` instances, and a function giving
    the answer with only the first N of them (for :func:`to_wire`)."""
    question = query.question[0]
    order = list(found)
    shuffle(order)

    def build(count: int) -> dns.message.Message:
        chosen = order[:count]
        if not order:
            return _negative(query, dns.rcode.NXDOMAIN, domain)
        response = _response(query)
        if question.rdtype == dns.rdatatype.SRV:
            targets = [_target(ep, domain) for ep in chosen]
            if chosen:
                response.answer.append(_rrset(question.name, [
                    _srv(ep.port, target) for ep, target in zip(chosen, targets, strict=True)]))
            for ep, target in zip(chosen, targets, strict=True):
                if _is_ip(ep.address):
                    response.additional.append(
                        _rrset(dns.name.from_text(target), [_address(ep.address)]))
        else:
            response.answer.extend(
                _address_rrsets(question.name, question.rdtype, [ep.address for ep in chosen]))
        if not response.answer and count == len(order):
            return _negative(query, dns.rcode.NOERROR, domain)  # no record of that type
        return response

    return build(len(order)), build


def vip_answer(
    query: dns.message.Message, vip: tuple[str, int | None] | None, domain: str = "consul"
) -> dns.message.Message:
    """The answer to ``NAME.vip.consul``: the VIP (A; SRV with the VIP's port, when it has
    one), NXDOMAIN when the topology has no such VIP."""
    if vip is None:
        return _negative(query, dns.rcode.NXDOMAIN, domain)
    question = query.question[0]
    address, port = vip
    response = _response(query)
    if question.rdtype == dns.rdatatype.SRV and port:
        target = f"{ip_address(address).packed.hex()}.addr.{domain}."
        response.answer.append(_rrset(question.name, [_srv(port, target)]))
        response.additional.append(_rrset(dns.name.from_text(target), [_address(address)]))
    else:
        response.answer.extend(_address_rrsets(question.name, question.rdtype, [address]))
    return response if response.answer else _negative(query, dns.rcode.NOERROR, domain)


def to_wire(
    response: dns.message.Message,
    limit: int,
    fewer: Callable[[int], dns.message.Message] | None = None,
    count: int = 0,
) -> bytes:
    """``response`` in wire format within ``limit`` bytes. Too big: the answer for as many
    of the ``count`` instances as fit (``fewer(n)``), with TC set."""
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    low, high, best = 0, count - 1, None
    while fewer is not None and low <= high:  # the largest prefix that fits
        middle = (low + high) // 2
        candidate = fewer(middle)
        candidate.flags |= dns.flags.TC
        try:
            best = candidate.to_wire(max_size=limit)
            low = middle + 1
        except dns.exception.TooBig:
            high = middle - 1
    if best is None:
        response.flags |= dns.flags.TC
        return response.to_wire(max_size=limit, prefer_truncation=True)
    return best
