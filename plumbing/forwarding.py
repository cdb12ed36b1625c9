"""Whether the data path forwards for a container: an ICMP echo request from the host to the
container's address crosses the host leg, the switch and the container's port, and the
reply comes back the same way (the host reaches every container; what the host opens is let
back in by the pipeline).

One raw ICMP socket in the daemon's namespace, requests paced (``window`` every ``every``
seconds, cycling over those not answered): a burst of a thousand requests at once would
swamp the userspace datapath's upcalls.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterable

ECHO_REQUEST, ECHO_REPLY = 8, 0
PAYLOAD = b"switchboard"


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071). Pure."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    """An ICMP echo request. Pure."""
    head = struct.pack("!BBHHH", ECHO_REQUEST, 0, 0, ident, seq)
    return struct.pack("!BBHHH", ECHO_REQUEST, 0, checksum(head + PAYLOAD), ident,
                       seq) + PAYLOAD


def reply_ident(packet: bytes) -> int | None:
    """The identifier of an ICMP echo reply in an IPv4 packet (None: not one). Pure."""
    if len(packet) < 20:
        return None
    icmp = packet[(packet[0] & 0x0F) * 4:]
    if len(icmp) < 8 or icmp[0] != ECHO_REPLY:
        return None
    return int(struct.unpack("!H", icmp[4:6])[0])


def answered(addresses: Iterable[str], timeout: float, window: int = 32,
             every: float = 0.01) -> set[str]:
    """The addresses that answered an echo request from the host within ``timeout``."""
    pending = set(addresses)
    done: set[str] = set()
    if not pending:
        return done
    ident = random.randrange(1, 0xFFFF)
    lock = threading.Lock()
    finished = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.settimeout(0.05)

        def receive() -> None:
            while not finished.is_set():
                try:
                    data, (address, _) = sock.recvfrom(2048)
                except OSError:
                    continue
                if reply_ident(data) == ident:
                    with lock:
                        if address in pending:
                            pending.discard(address)
                            done.add(address)

        listener = threading.Thread(target=receive, name="forwarding-replies", daemon=True)
        listener.start()
        deadline = time.monotonic() + timeout
        queue: list[str] = []
        seq = 0
        try:
            while time.monotonic() < deadline:
                with lock:
                    if not pending:
                        break
                    if not queue:
                        queue = sorted(pending)
                    batch, queue = queue[:window], queue[window:]
                    batch = [a for a in batch if a in pending]
                seq = (seq + 1) & 0xFFFF
                packet = echo_request(ident, seq)
                for address in batch:
                    with contextlib.suppress(OSError):  # no route (yet), a full buffer
                        sock.sendto(packet, socket.MSG_DONTWAIT, (address, 0))
                time.sleep(every)
            time.sleep(0.05 if pending else 0)  # replies to the last requests
        finally:
            finished.set()
            listener.join()
    return done
