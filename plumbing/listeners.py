"""The host's own listeners, from its socket tables (``/proc/net/{tcp,udp}{,6}``): which
ports a published port would take from something already on the host."""

from __future__ import annotations

from pathlib import Path

PROC_NET = Path("/proc/net")
TCP_LISTEN = "0A"  # st of a listening TCP socket
UDP_UNCONNECTED = "07"  # st of a bound, unconnected UDP socket (a server's)


def parse_table(text: str, state: str) -> set[int]:
    """Local ports of the sockets in ``state`` in one ``/proc/net`` table's text. Pure."""
    ports = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == state:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def listening(root: Path = PROC_NET) -> set[tuple[str, int]]:
    """(proto, port) of every TCP listener and bound UDP server socket of the current
    network namespace, IPv4 and IPv6, on any address (a DNAT of the port would take
    connections to it on every address, loopback too)."""
    found: set[tuple[str, int]] = set()
    for proto, state in (("tcp", TCP_LISTEN), ("udp", UDP_UNCONNECTED)):
        for table in (proto, proto + "6"):
            try:
                text = (root / table).read_text()
            except OSError:  # no IPv6
                continue
            found |= {(proto, port) for port in parse_table(text, state)}
    return found
