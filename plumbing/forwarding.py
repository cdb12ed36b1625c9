"""Whether the data path forwards for a container: from inside its namespace, an ARP request
for its network's host address goes out of its interface, and the switch (its pipeline's ARP
responder) answers it. The answer has crossed the container's port both ways, through the
datapath and the container's flows; it does not depend on the container's own firewall.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from plumbing.netns import NETNS_DIR, NetnsError, enter_netns

ETH_P_ARP = 0x0806
_CHUNK = 256  # sockets open at once (a daemon's descriptor limit may be 1024)


@dataclass(frozen=True)
class Probe:
    """An interface to probe: ``ifname`` in ``netns``, with its MAC and address, asking for
    ``target`` (an address the switch answers ARP for)."""

    netns: str
    ifname: str
    mac: str
    ip: IPv4Address
    target: IPv4Address


def arp_request(probe: Probe) -> bytes:
    """The broadcast ARP request ``probe``'s interface sends for its target. Pure."""
    mac = bytes.fromhex(probe.mac.replace(":", ""))
    return (b"\xff" * 6 + mac + struct.pack("!HHHBBH", ETH_P_ARP, 1, 0x0800, 6, 4, 1)
            + mac + probe.ip.packed + bytes(6) + probe.target.packed)


def is_answer(frame: bytes, probe: Probe) -> bool:
    """Whether ``frame`` is the ARP reply to ``probe``'s request. Pure."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x06":
        return False
    op, spa, tpa = struct.unpack_from("!H", frame, 20)[0], frame[28:32], frame[38:42]
    return op == 2 and spa == probe.target.packed and tpa == probe.ip.packed


def _open(probes: Sequence[Probe]) -> dict[Probe, socket.socket]:
    """A packet socket bound to each probe's interface, made in its namespace (a socket keeps
    the namespace it was made in); a probe whose namespace or interface is gone has none."""
    found: dict[Probe, socket.socket] = {}

    def body() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            for probe in probes:
                try:
                    fd = os.open(NETNS_DIR / probe.netns, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    enter_netns(fd, probe.netns)
                except NetnsError:
                    continue
                finally:
                    os.close(fd)
                sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
                try:
                    sock.bind((probe.ifname, ETH_P_ARP))
                    sock.setblocking(False)
                except OSError:
                    sock.close()
                    continue
                found[probe] = sock
        finally:
            enter_netns(home, "the root namespace")
            os.close(home)

    worker = threading.Thread(target=body, name="switchboard-forwarding")
    worker.start()
    worker.join()
    return found


def answered(probes: Sequence[Probe], timeout: float, every: float = 0.1) -> set[Probe]:
    """The probes whose ARP request the switch answered within ``timeout`` seconds (each
    request is sent again every ``every`` seconds until it is answered)."""
    done: set[Probe] = set()
    deadline = time.monotonic() + timeout
    for start in range(0, len(probes), _CHUNK):
        done |= _answered(probes[start:start + _CHUNK], deadline, every)
    return done


def _answered(probes: Sequence[Probe], deadline: float, every: float) -> set[Probe]:
    socks = _open(probes)
    done: set[Probe] = set()
    try:
        with selectors.DefaultSelector() as sel:
            for probe, sock in socks.items():
                sel.register(sock, selectors.EVENT_READ, probe)
            next_send = 0.0
            while len(done) < len(socks):
                now = time.monotonic()
                if now >= next_send:
                    for probe, sock in socks.items():
                        if probe not in done:
                            with contextlib.suppress(OSError):
                                sock.send(arp_request(probe))
                    next_send = now + every
                if now > deadline:
                    break
                for key, _ in sel.select(max(0.0, min(next_send, deadline) - now)):
                    probe = key.data
                    with contextlib.suppress(OSError):
                        while True:
                            if is_answer(key.fileobj.recv(2048), probe):
                                done.add(probe)
                                sel.unregister(key.fileobj)
                                break
    finally:
        for sock in socks.values():
            sock.close()
    return done
