"""The DNS server containers use: service names answered per topology, the rest forwarded.

The daemon listens (UDP and TCP, port 53) on the host's own address on each network, the
address every container's resolv.conf names (see :mod:`plumbing.resolvconf`). The address a
query arrives on says which topology asks (a :class:`discovery.scope.Scope`):

- ``NAME.vip.consul`` is answered here with the topology's VIP (:mod:`discovery.scope`);
- ``NAME.service.consul`` (and Consul's other forms of it), when another topology declares
  a service NAME too, is answered here from Consul's health API asked at that moment
  (:mod:`discovery.healthapi`; not asked when Consul's catalog holds no service NAME at all,
  :mod:`discovery.catalognames`): the asking topology's instances and those of no topology,
  never another topology's. When no other topology declares NAME, Consul holds only such
  instances of it, and the query goes to Consul's DNS like any other ``.consul`` name,
  unless this host is registering instances of NAME that it has seen answering
  (:mod:`discovery.fresh`): then the answer is built here, with them;
- other names under ``.consul`` go to Consul's DNS interface, everything else to the host's
  resolvers (``/etc/resolv.conf``, read again when it changes); their answers come back
  as they are.

Nothing is cached, so an instance Consul stops returning is gone at once.

Messages are read and built with dnspython; deciding where a query goes is pure,
:class:`DnsProxy` is the I/O.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import dns.flags
import dns.message
import dns.query

from discovery import scope as scoping
from discovery.catalognames import CatalogNames
from discovery.dnsmsg import is_consul_name, parse_query, servfail, udp_limit
from discovery.fresh import FreshInstances, with_fresh
from discovery.healthapi import HealthLookup, consul_health
from discovery.priority import ListenerPriority
from discovery.ratelimit import SourceLimiter
from discovery.scope import Scope
from discovery.upstream import (
    Server,
    address_family,
    forward_tcp,
    forward_udp,
    host_resolvers,
    parse_server,
    system_resolvers,
)

__all__ = [
    "DnsProxy",
    "Server",
    "consul_health",
    "host_resolvers",
    "is_consul_name",
    "parse_query",
    "parse_server",
    "servfail",
]

LOG = logging.getLogger("switchboard.dnsproxy")

IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux; absent from Python's constants
RECEIVE_BUFFER = 4 << 20  # bytes queued per listener: a flood's burst does not crowd others out
_UDP_BATCH = 64  # datagrams read per wake-up of the listener (then the other sockets' turn)
_MAX_TCP_CLIENTS = 64
_NEEDS_READ = object()  # an answer that needs the health API read (see DnsProxy._build)


# --------------------------------------------------------------------------- the server


class DnsProxy:
    """UDP and TCP listeners on a set of addresses, served by one selector thread.

    ``consul``: Consul's DNS address; ``health``: reads a service's instances (Consul's
    health API); ``upstreams``: returns the resolvers for other names. An answer built from
    what the daemon holds (a VIP name; a name Consul's catalog does not hold) is made by the
    listener at once; the others by worker threads (Consul's and the host's in separate
    pools, so a slow upstream never delays ``.consul`` names). The selector thread runs at
    real-time priority except during a flood (:mod:`discovery.priority`).
    """

    def __init__(
        self,
        consul: Server = ("127.0.0.1", 8600),
        upstreams: Callable[[], list[Server]] | None = None,
        port: int = 53,
        domain: str = "consul",
        timeout: float = 2.0,
        health: HealthLookup | None = None,
    ) -> None:
        self.consul = consul
        self.upstreams = upstreams or system_resolvers()
        self.health = health or consul_health(timeout=timeout)
        self.port = port
        self.domain = domain
        self.timeout = timeout
        self._listeners: dict[str, tuple[socket.socket, socket.socket]] = {}
        self._scopes: dict[str, Scope | None] = {}
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._consul_pool = ThreadPoolExecutor(8, thread_name_prefix="dns-consul")
        self._host_pool = ThreadPoolExecutor(16, thread_name_prefix="dns-host")
        self._tcp_slots = threading.BoundedSemaphore(_MAX_TCP_CLIENTS)
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_answer: Callable[[bytes], None] | None = None  # each response sent (metrics)
        self.fresh: FreshInstances | None = None  # seen answering, not in Consul yet
        self.catalog: CatalogNames | None = None  # names Consul holds: absent ones go unread
        self.limiter = SourceLimiter()  # per container: a flood never starves the others
        self.priority = ListenerPriority()  # the listener's CPU policy (see discovery.priority)

    @property
    def addresses(self) -> set[str]:
        with self._lock:
            return set(self._listeners)

    def listen(self, scopes: Mapping[str, Scope | None] | Iterable[str]) -> dict[str, str]:
        """Listen on exactly these addresses, each with the scope of who asks there (None:
        nobody's; service names are then passed to Consul as they are); address -> why it
        failed, for those that did (tried again on the next call). Binding uses IP_FREEBIND:
        the address need not be configured yet."""
        wanted = dict(scopes) if isinstance(scopes, Mapping) else dict.fromkeys(scopes)
        errors = {}
        with self._lock:
            self._scopes = wanted
            for address in sorted(set(self._listeners) - set(wanted)):
                for sock in self._listeners.pop(address):
                    self._selector.unregister(sock)
                    sock.close()
                LOG.info("DNS: stopped listening on %s:%d", address, self.port)
            for address in sorted(set(wanted) - set(self._listeners)):
                try:
                    pair = self._bind(address)
                except OSError as exc:
                    errors[address] = f"cannot listen on {address}:{self.port}: {exc.strerror}"
                    continue
                self._listeners[address] = pair
                self._selector.register(pair[0], selectors.EVENT_READ, ("udp", address))
                self._selector.register(pair[1], selectors.EVENT_READ, ("tcp", address))
                LOG.info("DNS: listening on %s:%d", address, self.port)
            if self._listeners and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="dns-proxy", daemon=True)
                self._thread.start()
        return errors

    def close(self) -> None:
        """Stop listening everywhere and stop the workers."""
        self.listen(())
        self._closed.set()
        if self.catalog is not None:
            self.catalog.stop()
        self._consul_pool.shutdown(wait=False, cancel_futures=True)
        self._host_pool.shutdown(wait=False, cancel_futures=True)

    def _bind(self, address: str) -> tuple[socket.socket, socket.socket]:
        family = address_family(address)
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            for sock in (udp, tcp):
                sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                sock.setblocking(False)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            udp.bind((address, self.port))
            tcp.bind((address, self.port))
            tcp.listen(64)
        except OSError:
            udp.close()
            tcp.close()
            raise
        return udp, tcp

    # -- answering -----------------------------------------------------------------------

    def answer(self, query: dns.message.Message, address: str, tcp: bool = False) -> bytes | None:
        """The answer to a query that arrived on ``address`` when it is a VIP question, or a
        question about a service that another topology declares too (built from the health
        API, instance by instance); None when Consul's own answer is the right one (no other
        topology has instances of that name) and the query is to be forwarded."""
        built = self._build(query, address, tcp, may_read=True)
        assert built is not _NEEDS_READ
        return built

    def answer_at_once(self, query: dns.message.Message, address: str) -> bytes | None:
        """:meth:`answer` (over UDP) when it is built without asking Consul or any server
        (a VIP name; a name Consul's catalog does not hold); otherwise None."""
        built = self._build(query, address, False, may_read=False)
        return built if isinstance(built, bytes) else None

    def _build(
        self, query: dns.message.Message, address: str, tcp: bool, may_read: bool
    ) -> bytes | None | object:
        """:meth:`answer`; ``_NEEDS_READ`` instead of reading the health API unless
        ``may_read``."""
        scope = self._scopes.get(address)
        question = query.question[0]
        if scope is None:
            return None
        asked = scoping.parse_question(question.name.to_text(), question.rdtype, self.domain)
        if asked is None:
            return None
        limit = 65535 if tcp else udp_limit(query)
        if isinstance(asked, scoping.VipQuestion):
            return scoping.to_wire(scoping.vip_answer(query, scope.vips.get(asked.service),
                                                      self.domain), limit)
        fresh = self.fresh.of(scope.topology, asked.service) \
            if self.fresh is not None and asked.datacenter is None else []
        if asked.service not in scope.shared and not fresh:
            return None
        absent = self._not_in_consul(asked)
        if not may_read and not absent:
            return _NEEDS_READ
        try:
            entries = [] if absent else self.health(asked.service, asked.datacenter)
        except Exception as exc:  # noqa: BLE001 - Consul down or refusing: SERVFAIL
            LOG.debug("DNS: cannot read %s from Consul: %s", asked.service, exc)
            return servfail(query)
        found = scoping.endpoints(with_fresh(entries, fresh), scope.topology, asked.tag)
        response, fewer = scoping.service_answer(query, found, self.domain)
        return scoping.to_wire(response, limit, fewer, len(found))

    def _not_in_consul(self, asked: scoping.ServiceQuestion) -> bool:
        """Whether this datacenter's Consul surely holds no instance of the asked service."""
        return (asked.datacenter is None and self.catalog is not None
                and self.catalog.lacks(asked.service))

    def _servers_for(self, query: dns.message.Message) -> list[Server]:
        """Where a query that is not answered here goes: Consul's DNS or the host's."""
        if is_consul_name(query.question[0].name.to_text(), self.domain):
            return [self.consul]
        return self.upstreams()

    def _respond(
        self, query: dns.message.Message, address: str, source: str,
        forward: Callable[[list[Server]], bytes | None], tcp: bool = False,
    ) -> bytes:
        """The response to an admitted query from ``source``: built here, or what
        ``forward`` gets from the servers it goes to, or SERVFAIL. Gives the source's slot
        back (see :mod:`discovery.ratelimit`) and counts the response."""
        try:
            answer = self.answer(query, address, tcp)
            if answer is None:
                answer = forward(self._servers_for(query)) or servfail(query)
        finally:
            self.limiter.done(source)
        if self.on_answer is not None:
            self.on_answer(answer)
        return answer

    def _respond_at_once(self, query: dns.message.Message, address: str, source: str
                         ) -> bytes | None:
        """:meth:`_respond` when the answer needs nothing read or forwarded; else None (and
        the source's slot is kept for the worker that will answer)."""
        try:
            answer = self.answer_at_once(query, address)
        except Exception:  # noqa: BLE001 - a bug must not stop the listener: SERVFAIL
            LOG.exception("DNS: cannot answer %s", query.question[0].name)
            answer = servfail(query)
        if answer is not None:
            self.limiter.done(source)
            if self.on_answer is not None:
                self.on_answer(answer)
        return answer

    # -- serving -------------------------------------------------------------------------

    def _loop(self) -> None:
        self.priority.start()
        while not self._closed.is_set():
            try:
                events = self._selector.select(timeout=0.5)
            except OSError:  # a socket closed under us: pick up the new set
                continue
            for key, _ in events:
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                kind, address = key.data
                try:
                    if kind == "udp":
                        self.priority.woke(self._read_batch(sock, address) == _UDP_BATCH)
                    else:
                        conn, _ = sock.accept()
                        self._start_tcp(conn, address)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:  # closed by listen() meanwhile
                    LOG.debug("DNS listener: %s", exc)

    def _read_batch(self, sock: socket.socket, address: str) -> int:
        """All the datagrams that wait, up to a batch, for one wake-up; how many."""
        for count in range(_UDP_BATCH):
            try:
                packet, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return count
            self._submit_udp(sock, address, packet, peer)
        return _UDP_BATCH

    def _submit_udp(self, sock: socket.socket, address: str, packet: bytes, peer: tuple) -> None:
        if not self._admit(peer[0]):  # before parsing: a flood costs a lookup per packet
            return
        query = parse_query(packet)
        if query is None:
            self.limiter.done(peer[0])
            return
        consul_name = is_consul_name(query.question[0].name.to_text(), self.domain)
        if consul_name:  # built from what is in memory: at once, without a worker's turn
            answer = self._respond_at_once(query, address, peer[0])
            if answer is not None:
                self._send_udp(sock, answer, peer)
                return
        pool = self._consul_pool if consul_name else self._host_pool
        try:
            pool.submit(self._answer_udp, sock, address, query, packet, peer)
        except RuntimeError:  # shutting down
            self.limiter.done(peer[0])

    def _admit(self, source: str) -> bool:
        """Whether a query from ``source`` is answered (see :mod:`discovery.ratelimit`); the
        first refusal of a source is logged."""
        if self.limiter.admit(source):
            return True
        if self.limiter.dropped[source] == 1:
            LOG.warning("DNS: %s sends more queries than its share; dropping the excess",
                        source)
        return False

    def _answer_udp(
        self, sock: socket.socket, address: str, query: dns.message.Message, packet: bytes,
        peer: tuple,
    ) -> None:
        answer = self._respond(query, address, peer[0],
                               lambda servers: forward_udp(packet, servers, self.timeout))
        self._send_udp(sock, answer, peer)

    @staticmethod
    def _send_udp(sock: socket.socket, answer: bytes, peer: tuple) -> None:
        try:
            sock.sendto(answer, peer)
        except OSError as exc:
            LOG.debug("DNS: cannot answer %s: %s", peer, exc)

    def _start_tcp(self, conn: socket.socket, address: str) -> None:
        if not self._tcp_slots.acquire(blocking=False):
            conn.close()
            return
        threading.Thread(target=self._serve_tcp, args=(conn, address), daemon=True,
                         name="dns-tcp").start()

    def _serve_tcp(self, conn: socket.socket, address: str) -> None:
        """Answer the queries of one TCP connection until it closes or idles for 10 s."""
        try:
            conn.setblocking(True)
            source = conn.getpeername()[0]
            while not self._closed.is_set():
                query, _ = dns.query.receive_tcp(conn, time.time() + 10.0)
                if query.flags & dns.flags.QR or len(query.question) != 1:
                    return
                if not self._admit(source):
                    continue
                answer = self._respond(
                    query, address, source,
                    lambda servers, q=query: forward_tcp(q, servers, self.timeout), tcp=True)
                dns.query.send_tcp(conn, answer, time.time() + 10.0)
        except Exception:  # noqa: BLE001 - any bytes from a container: drop the connection
            pass
        finally:
            conn.close()
            self._tcp_slots.release()
