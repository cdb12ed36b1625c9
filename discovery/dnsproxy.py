"""The DNS server containers use: names under ``.consul`` go to Consul, the rest to the host.

The daemon listens (UDP and TCP, port 53) on the host's own address on each network, the
address every container's resolv.conf names (see :mod:`plumbing.resolvconf`). A query is passed
on byte for byte and the answer comes back byte for byte: to Consul's DNS interface for names
under its domain, to the host's resolvers (``/etc/resolv.conf``, read again when it changes)
for everything else. Nothing is cached, so an instance Consul stops returning is gone at once.

Deciding where a query goes and building error answers is pure; :class:`DnsProxy` is the I/O.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from discovery import dns

__all__ = [
    "DnsProxy",
    "Server",
    "host_resolvers",
    "is_consul_name",
    "parse_server",
    "question_name",
    "servfail",
]

LOG = logging.getLogger("switchboard.dnsproxy")

Server = tuple[str, int]
RESOLV_CONF = Path("/etc/resolv.conf")
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; absent from Python's constants
RCODE_SERVFAIL = 2
FLAG_RA = 0x0080
_MAX_TCP_CLIENTS = 64


# --------------------------------------------------------------------------- pure


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


def host_resolvers(resolv_conf: str) -> list[Server]:
    """The ``nameserver`` entries of a resolv.conf (glibc's 127.0.0.1 when there is none)."""
    servers = []
    for line in resolv_conf.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            servers.append((words[1].split("%")[0], 53))
    return servers or [("127.0.0.1", 53)]


def is_consul_name(qname: str, domain: str = "consul") -> bool:
    """Whether a queried name is Consul's (the domain itself or below it)."""
    name = qname.rstrip(".").lower()
    return name == domain or name.endswith("." + domain)


def question_name(packet: bytes) -> str | None:
    """The name a query asks about; None unless it is a query with exactly one question."""
    try:
        msg = dns.decode_message(packet)
    except dns.DNSError:
        return None
    if msg.flags & dns.FLAG_QR or len(msg.questions) != 1:
        return None
    return msg.questions[0].name


def servfail(packet: bytes) -> bytes | None:
    """A SERVFAIL answer to a query (its ID, RD bit and question echoed); None if unreadable."""
    try:
        msg = dns.decode_message(packet)
    except dns.DNSError:
        return None
    flags = dns.FLAG_QR | FLAG_RA | (msg.flags & dns.FLAG_RD) | RCODE_SERVFAIL
    return dns.encode_message(dns.Message(msg.id, flags, msg.questions))


# --------------------------------------------------------------------------- forwarding


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def forward_udp(packet: bytes, servers: Iterable[Server], timeout: float) -> bytes | None:
    """Ask each server in turn over UDP; the first answer with the query's ID, or None."""
    qid = packet[:2]
    for server in servers:
        try:
            with socket.socket(_family(server[0]), socket.SOCK_DGRAM) as sock:
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


def forward_tcp(packet: bytes, servers: Iterable[Server], timeout: float) -> bytes | None:
    """Ask each server in turn over TCP; the first answer, or None."""
    for server in servers:
        try:
            with socket.create_connection(server, timeout=timeout) as sock:
                sock.sendall(struct.pack("!H", len(packet)) + packet)
                return _read_message(sock)
        except (OSError, dns.DNSError) as exc:
            LOG.debug("no TCP answer from %s:%d: %s", *server, exc)
    return None


def _read_message(sock: socket.socket) -> bytes:
    (length,) = struct.unpack("!H", _recv_exact(sock, 2))
    return _recv_exact(sock, length)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise dns.DNSError("connection closed")
        buf += chunk
    return buf


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


# --------------------------------------------------------------------------- the server


class DnsProxy:
    """UDP and TCP listeners on a set of addresses, served by one selector thread.

    ``consul``: Consul's DNS address; ``upstreams``: returns the resolvers for other names.
    Queries are answered by worker threads (Consul's and the host's in separate pools, so a
    slow upstream never delays ``.consul`` names).
    """

    def __init__(
        self,
        consul: Server = ("127.0.0.1", 8600),
        upstreams: Callable[[], list[Server]] | None = None,
        port: int = 53,
        domain: str = "consul",
        timeout: float = 2.0,
    ) -> None:
        self.consul = consul
        self.upstreams = upstreams or system_resolvers()
        self.port = port
        self.domain = domain
        self.timeout = timeout
        self._listeners: dict[str, tuple[socket.socket, socket.socket]] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._consul_pool = ThreadPoolExecutor(8, thread_name_prefix="dns-consul")
        self._host_pool = ThreadPoolExecutor(16, thread_name_prefix="dns-host")
        self._tcp_slots = threading.BoundedSemaphore(_MAX_TCP_CLIENTS)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def addresses(self) -> set[str]:
        with self._lock:
            return set(self._listeners)

    def listen(self, addresses: Iterable[str]) -> dict[str, str]:
        """Listen on exactly these addresses; address -> why it failed, for those that did
        (tried again on the next call). Binding uses IP_FREEBIND: the address need not be
        configured yet."""
        wanted = set(addresses)
        errors = {}
        with self._lock:
            for address in sorted(set(self._listeners) - wanted):
                for sock in self._listeners.pop(address):
                    self._selector.unregister(sock)
                    sock.close()
                LOG.info("DNS: stopped listening on %s:%d", address, self.port)
            for address in sorted(wanted - set(self._listeners)):
                try:
                    pair = self._bind(address)
                except OSError as exc:
                    errors[address] = f"cannot listen on {address}:{self.port}: {exc.strerror}"
                    continue
                self._listeners[address] = pair
                self._selector.register(pair[0], selectors.EVENT_READ, "udp")
                self._selector.register(pair[1], selectors.EVENT_READ, "tcp")
                LOG.info("DNS: listening on %s:%d", address, self.port)
            if self._listeners and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="dns-proxy", daemon=True)
                self._thread.start()
        return errors

    def close(self) -> None:
        """Stop listening everywhere and stop the workers."""
        self.listen(())
        self._closed.set()
        self._consul_pool.shutdown(wait=False, cancel_futures=True)
        self._host_pool.shutdown(wait=False, cancel_futures=True)

    def _bind(self, address: str) -> tuple[socket.socket, socket.socket]:
        family = _family(address)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for sock in (udp, tcp):
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                sock.setblocking(False)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.bind((address, self.port))
            tcp.bind((address, self.port))
            tcp.listen(64)
        except OSError:
            udp.close()
            tcp.close()
            raise
        return udp, tcp

    # -- serving -------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                events = self._selector.select(timeout=0.5)
            except OSError:  # a socket closed under us: pick up the new set
                continue
            for key, _ in events:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    if key.data == "udp":
                        packet, peer = sock.recvfrom(65535)
                        self._submit_udp(sock, packet, peer)
                    else:
                        conn, _ = sock.accept()
                        self._start_tcp(conn)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:  # closed by listen() meanwhile
                    LOG.debug("DNS listener: %s", exc)

    def _servers_for(self, packet: bytes) -> tuple[list[Server], bool] | None:
        """(servers, whether they are Consul's) for a query; None for a malformed one."""
        name = question_name(packet)
        if name is None:
            return None
        if is_consul_name(name, self.domain):
            return [self.consul], True
        return self.upstreams(), False

    def _submit_udp(self, sock: socket.socket, packet: bytes, peer: tuple) -> None:
        route = self._servers_for(packet)
        if route is None:
            return
        servers, consul = route
        pool = self._consul_pool if consul else self._host_pool
        with contextlib.suppress(RuntimeError):  # shutting down
            pool.submit(self._answer_udp, sock, packet, peer, servers)

    def _answer_udp(
        self, sock: socket.socket, packet: bytes, peer: tuple, servers: list[Server]
    ) -> None:
        answer = forward_udp(packet, servers, self.timeout) or servfail(packet)
        if answer is None:
            return
        try:
            sock.sendto(answer, peer)
        except OSError as exc:
            LOG.debug("DNS: cannot answer %s: %s", peer, exc)

    def _start_tcp(self, conn: socket.socket) -> None:
        if not self._tcp_slots.acquire(blocking=False):
            conn.close()
            return
        threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True,
                         name="dns-tcp").start()

    def _serve_tcp(self, conn: socket.socket) -> None:
        """Answer the queries of one TCP connection until it closes or idles for 10 s."""
        try:
            conn.setblocking(True)
            conn.settimeout(10.0)
            while not self._closed.is_set():
                packet = _read_message(conn)
                route = self._servers_for(packet)
                if route is None:
                    return
                answer = forward_tcp(packet, route[0], self.timeout) or servfail(packet)
                if answer is None:
                    return
                conn.sendall(struct.pack("!H", len(answer)) + answer)
        except (OSError, dns.DNSError):
            pass
        finally:
            conn.close()
            self._tcp_slots.release()
