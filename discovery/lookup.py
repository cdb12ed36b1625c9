"""Resolve a service through DNS the way a container does: SRV, then A for targets (dnspython).

:func:`srv_endpoints` is pure; :func:`query` and :func:`resolve` ask a server (UDP, then TCP
when the answer is truncated).
"""

from __future__ import annotations

import socket
from ipaddress import ip_address

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

__all__ = ["DNSError", "consul_name", "query", "resolve", "srv_endpoints"]


EDNS_PAYLOAD = 1232  # bytes of UDP answer taken (DNS Flag Day 2020); TCP beyond, on TC


class DNSError(Exception):
    """No answer, or an answer with an error other than NXDOMAIN."""


def consul_name(name: str) -> str:
    """A service name (``web``) as ``web.service.consul``; a name under ``.consul`` as is."""
    name = name.rstrip(".")
    return name if name.endswith(".consul") else f"{name}.service.consul"


def query(
    name: str, rdtype: str | int, server: tuple[str, int], timeout: float = 2.0
) -> dns.message.Message:
    """Ask ``server`` once over UDP with EDNS (over TCP when the answer is truncated).

    Returns the answer, NXDOMAIN included; raises DNSError on other errors or no answer,
    ValueError for a name that is not a DNS name."""
    try:  # EDNS: without it Consul answers at most 3 records over UDP (udp_answer_limit)
        request = dns.message.make_query(name, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
    except dns.exception.DNSException as exc:
        raise ValueError(f"{name!r} is not a DNS name: {exc}") from None
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    try:  # a connected UDP socket hears "connection refused" rather than waiting it out
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(server)
            answer, _ = dns.query.udp_with_fallback(request, server[0], timeout, server[1],
                                                    udp_sock=sock)
    except OSError as exc:
        raise DNSError(f"no DNS answer from {server[0]}:{server[1]} for {name}: {exc}") \
            from exc
    except dns.exception.Timeout as exc:  # no server answers there
        raise DNSError(f"no DNS answer from {server[0]}:{server[1]} for {name} in "
                       f"{timeout:g} s") from TimeoutError(str(exc))
    except dns.exception.DNSException as exc:
        raise DNSError(f"a bad DNS answer from {server[0]}:{server[1]} for {name}: "
                       f"{exc or type(exc).__name__}") from None
    if answer.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DNSError(f"DNS server {server[0]}:{server[1]} answered "
                       f"{dns.rcode.to_text(answer.rcode())} for {name}")
    return answer


def addresses(msg: dns.message.Message, name: str | None = None) -> list[str]:
    """The A and AAAA addresses in a message's answer and additional sections (only those
    of ``name`` when given), in order."""
    found = []
    for rrset in (*msg.answer, *msg.additional):
        if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            continue
        if name is None or rrset.name.to_text().rstrip(".").lower() == name.lower():
            found.extend(rdata.address for rdata in rrset)
    return found


def srv_endpoints(msg: dns.message.Message) -> list[tuple[str, int]]:
    """(address, port) of each SRV answer, in answer order. The address is the target's A
    or AAAA record from the message when there is one, else the target name itself."""
    out = []
    for rrset in msg.answer:
        if rrset.rdtype != dns.rdatatype.SRV:
            continue
        for srv in rrset:
            target = srv.target.to_text().rstrip(".")
            out.extend((address, srv.port) for address in addresses(msg, target) or [target])
    return out


def resolve(name: str, server: tuple[str, int], timeout: float = 2.0) -> list[tuple[str, int]]:
    """(address, port) of each instance the server returns for ``name`` (Consul DNS: passing
    and warning ones), in answer order. An SRV target without an address in the answer is
    looked up. Raises DNSError when the server does not answer."""
    result = []
    for target, port in srv_endpoints(query(consul_name(name), dns.rdatatype.SRV, server,
                                            timeout)):
        result.extend((address, port) for address in _addresses(target, server, timeout))
    return result


def _addresses(host: str, server: tuple[str, int], timeout: float) -> list[str]:
    try:
        ip_address(host)
        return [host]
    except ValueError:
        pass
    if host.rstrip(".").endswith(".consul"):
        found = addresses(query(host, dns.rdatatype.A, server, timeout))
        if found:
            return found
    return [host]
