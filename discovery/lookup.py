"""Resolve a service through Consul DNS the way a container does: SRV, then A for targets."""

from __future__ import annotations

from ipaddress import ip_address

from discovery import dns

__all__ = ["consul_name", "resolve"]


def consul_name(name: str) -> str:
    """A service name (``web``) as ``web.service.consul``; a name under ``.consul`` as is."""
    name = name.rstrip(".")
    return name if name.endswith(".consul") else f"{name}.service.consul"


def resolve(name: str, server: tuple[str, int], timeout: float = 2.0) -> list[tuple[str, int]]:
    """(address, port) of each instance Consul DNS returns for ``name`` (passing and warning
    ones, as Consul DNS does), in answer order. SRV over UDP, over TCP when truncated; an
    SRV target without an A record in the answer is looked up. Raises dns.DNSError when the
    server does not answer."""
    msg = dns.query(consul_name(name), dns.SRV, server, timeout)
    result = []
    for target, port in dns.srv_endpoints(msg):
        result.extend((address, port) for address in _addresses(target, server, timeout))
    return result


def _addresses(host: str, server: tuple[str, int], timeout: float) -> list[str]:
    try:
        ip_address(host)
        return [host]
    except ValueError:
        pass
    if host.rstrip(".").endswith(".consul"):
        msg = dns.query(host, dns.A, server, timeout)
        found = [r.data for r in msg.answers if r.type == dns.A and isinstance(r.data, str)]
        if found:
            return found
    return [host]
