"""Asking upstream DNS servers on behalf of a container: UDP and TCP, each server in turn,
and the host's own resolvers (``/etc/resolv.conf``, read again when it changes)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

import dns.exception
import dns.message
import dns.query

LOG = logging.getLogger("switchboard.dnsproxy")

Server = tuple[str, int]
RESOLV_CONF = Path("/etc/resolv.conf")


def parse_server(text: str, default_port: int = 53) -> Server:
    """``HOST``, ``HOST:PORT`` or ``[V6]:PORT`` as (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def upstream_servers(text: str | None) -> list[Server]:
    """``HOST[:PORT],...`` (``--upstream-dns``) as servers; empty when none is given."""
    return [parse_server(part) for part in (text or "").split(",") if part.strip()]


def host_resolvers(resolv_conf: str) -> list[Server]:
    """The ``nameserver`` entries of a resolv.conf (glibc's 127.0.0.1 when there is none)."""
    servers = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append((words[1].split("%")[0], 53))
    return servers or [("127.0.0.1", 53)]


def address_family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def forward_udp(packet: bytes, servers: Iterable[Server], timeout: float) -> bytes | None:
    """Ask each server in turn over UDP; the first answer with the query's ID, or None."""
    qid = packet[:2]
    for server in servers:
        try:
            with socket.socket(address_family(server[0]), socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.connect(server)
                sock.send(packet)
                while True:
                    answer = sock.recv(65535)
                    if answer[:2] == qid:
                        return answer
        except OSError as exc:
            LOG.debug("no UDP answer from %s:%d: %s", *server, exc)
    return None


def forward_tcp(
    query: dns.message.Message, servers: Iterable[Server], timeout: float
) -> bytes | None:
    """Ask each server in turn over TCP; the first answer, or None."""
    for host, port in servers:
        try:
            return dns.query.tcp(query, host, timeout, port).to_wire()
        except (OSError, dns.exception.DNSException) as exc:
            LOG.debug("no TCP answer from %s:%d: %s", host, port, exc)
    return None


def system_resolvers(path: Path = RESOLV_CONF) -> Callable[[], list[Server]]:
    """A function returning the host's resolvers, reading ``path`` again when it changes."""
    cache: dict[str, object] = {"stamp": None, "servers": [("127.0.0.1", 53)]}

    def servers() -> list[Server]:
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            if stamp != cache["stamp"]:
                cache["servers"] = host_resolvers(path.read_text())
                cache["stamp"] = stamp
        except OSError:
            pass
        return list(cache["servers"])  # type: ignore[call-overload]

    return servers


def describe_upstreams(configured: list[Server], path: Path = RESOLV_CONF) -> str:
    """Where names outside ``.consul`` go, in words (``switchboard resolve`` shows it)."""
    if configured:
        return ", ".join(f"{h}:{p}" for h, p in configured) + " (--upstream-dns)"
    servers = system_resolvers(path)()
    text = ", ".join(f"{h}:{p}" for h, p in servers) + f" (the host's resolvers, {path})"
    if all(h.startswith("127.") or h == "::1" for h, _ in servers):
        text += "; a loopback stub: set --upstream-dns to the servers it asks"
    return text
