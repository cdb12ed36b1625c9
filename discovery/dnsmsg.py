"""Pure helpers on the DNS messages the containers' forwarder takes and gives
(:mod:`discovery.dnsproxy`): which names are Consul's, what is a query, SERVFAIL, UDP size."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode

__all__ = ["is_consul_name", "parse_query", "servfail", "udp_limit"]


def is_consul_name(qname: str, domain: str = "consul") -> bool:
    """Whether a queried name is Consul's (the domain itself or below it)."""
    name = qname.rstrip(".").lower()
    return name == domain or name.endswith("." + domain)


def parse_query(packet: bytes) -> dns.message.Message | None:
    """A query with exactly one question; None for anything else (answers, garbage)."""
    try:
        msg = dns.message.from_wire(packet)
    except Exception:  # noqa: BLE001 - any bytes from a container: not a query
        return None
    if msg.flags & dns.flags.QR or len(msg.question) != 1:
        return None
    return msg


def servfail(query: dns.message.Message) -> bytes:
    """A SERVFAIL answer to a query (its ID, RD bit and question echoed)."""
    response = dns.message.make_response(query, recursion_available=True)
    response.set_rcode(dns.rcode.SERVFAIL)
    return response.to_wire()


def udp_limit(query: dns.message.Message) -> int:
    """The largest UDP answer the asker takes: its EDNS payload size, else 512 bytes."""
    return max(512, query.payload) if query.edns >= 0 else 512
