"""Observers the discovery benchmark runs while containers come and go: a pinger that times
each address's first echo reply, and an SRV prober that times each name's answers.

Run as root: the pinger uses a raw ICMP socket, and ``socket_in_netns`` enters a namespace.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterable

import dns.exception
import dns.message
from labrun import in_namespace  # puts the repository first on sys.path

from discovery import lookup
from plumbing.forwarding import echo_request, reply_ident


class Pinger:
    """Pings every pending address every ``interval`` from the host; first reply times."""

    def __init__(self, addresses: list[str], interval: float = 0.02) -> None:
        self.pending = set(addresses)
        self.seen: dict[str, float] = {}
        self.interval = interval
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.sock.settimeout(0.01)
        self.ident = os.getpid() & 0xFFFF
        self.stop = threading.Event()

    def run(self) -> None:
        threading.Thread(target=self._receive, daemon=True).start()
        seq = 0
        while not self.stop.is_set() and self.pending:
            seq = (seq + 1) & 0xFFFF
            packet = echo_request(self.ident, seq)
            for address in list(self.pending):
                with contextlib.suppress(OSError):  # no route yet: the host leg is not up
                    self.sock.sendto(packet, (address, 0))
            time.sleep(self.interval)

    def _receive(self) -> None:
        while not self.stop.is_set() and self.pending:
            try:
                data, (address, _) = self.sock.recvfrom(2048)
            except OSError:
                continue
            if reply_ident(data) == self.ident and address in self.pending:
                self.seen[address] = time.monotonic()
                self.pending.discard(address)


def socket_in_netns(netns: str, timeout: float = 60) -> socket.socket:
    """A UDP socket that lives in a named network namespace (see labrun.in_namespace)."""
    return in_namespace(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
                        timeout)


class SrvProber:
    """Asks a nameserver for the SRV records of names, each name closed-loop: a name is
    asked again ``every`` seconds once its last question was answered, or when it went
    unanswered for ``retry`` seconds (lost, or the server is slow). So the answers are
    timed to within ``every``, and a slow server is measured, not flooded with questions it
    has not got to yet. ``sockets`` gives the socket each name is asked from (a name not in
    it: ``default``'s)."""

    def __init__(self, server: tuple[str, int], sockets: dict[str, socket.socket] | None = None,
                 default: socket.socket | None = None, every: float = 0.025,
                 retry: float = 0.25) -> None:
        self.sockets = dict(sockets or {})
        self.default = default
        self.server = server
        self.every = every
        self.retry = retry
        self.latencies: list[float] = []  # question -> its answer
        self.answered: dict[str, float] = {}  # name -> when its last answer arrived
        self.first_asked: dict[str, float] = {}  # name -> when it was first asked
        self._next_id = 0
        self._asked: dict[int, tuple[str, float]] = {}  # question ID -> (name, sent)
        self._last: dict[str, float] = {}  # name -> when its last answer arrived
        self._selector = selectors.DefaultSelector()
        for sock in {*self.sockets.values(), *([default] if default else [])}:
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ)

    def ask(self, names: Iterable[str], wait: float = 0.005) -> dict[str, set[str]]:
        """One step: ask the names that are due, then take the answers (to this step's
        questions or earlier ones) that arrive within ``wait`` seconds: name -> addresses
        its SRV answer includes; the moment each arrived is in ``answered``. Question IDs
        are never reused while out, so an answer is never taken for another name's."""
        now = time.monotonic()
        out = {name for name, sent in self._asked.values() if now - sent < self.retry}
        self._asked = {i: (n, t) for i, (n, t) in self._asked.items() if n in out}
        for name in sorted(set(names) - out):
            if now - self._last.get(name, 0.0) < self.every:
                continue
            self._next_id = self._next_id % 65535 + 1
            self._asked[self._next_id] = (name, time.monotonic())
            self.first_asked.setdefault(name, self._asked[self._next_id][1])
            sock = self.sockets.get(name, self.default)
            assert sock is not None, f"no socket to ask {name} from"
            with contextlib.suppress(OSError):  # the probe's interface is not up yet
                sock.sendto(dns.message.make_query(
                    f"{name}.service.consul", "SRV", id=self._next_id).to_wire(), self.server)
        found: dict[str, set[str]] = {}
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in self._selector.select(left):
                while True:
                    try:
                        msg = dns.message.from_wire(key.fileobj.recv(65535))  # type: ignore[union-attr]
                    except BlockingIOError:
                        break
                    except (OSError, dns.exception.DNSException):
                        continue
                    self._take(msg, found)
        return found

    def _take(self, msg: dns.message.Message, found: dict[str, set[str]]) -> None:
        name, sent = self._asked.pop(msg.id, (None, 0.0))
        if name is None:
            return
        arrived = time.monotonic()
        self.latencies.append(arrived - sent)
        self._last[name] = self.answered[name] = arrived
        found[name] = {a for a, _ in lookup.srv_endpoints(msg)}
