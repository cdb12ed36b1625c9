"""The DNS forwarder under hostile input: any bytes from a container (UDP or TCP), and a
container flooding it, never keep it from answering the others. A real forwarder on
127.0.0.1 in front of the real Consul agent's DNS; the "containers" are sockets bound to
127.0.0.2 and 127.0.0.3."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discovery.dnsproxy import DnsProxy
from tests.harness import wait_until

pytestmark = pytest.mark.integration

NAME = "consul.service.consul"  # Consul's own servers: always answers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def started_proxy() -> Iterator[DnsProxy]:
    server = DnsProxy(("127.0.0.1", 8600), port=free_port())
    assert server.listen({"127.0.0.1": None}) == {}
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def proxy() -> Iterator[DnsProxy]:
    yield from started_proxy()


@pytest.fixture
def own_proxy() -> Iterator[DnsProxy]:
    """A forwarder of the test's own: no earlier test's flood left it at normal priority."""
    yield from started_proxy()


def ask(proxy: DnsProxy, source: str = "127.0.0.3", timeout: float = 2.0) -> float:
    """Seconds until the forwarder answers an A query for NAME sent from ``source``."""
    query = dns.message.make_query(NAME, "A")
    started = time.monotonic()
    answer = dns.query.udp(query, "127.0.0.1", timeout, proxy.port, source=source)
    assert answer.answer, answer
    return time.monotonic() - started


def test_the_forwarder_answers(proxy: DnsProxy) -> None:
    assert ask(proxy) < 2


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=600))
def test_any_bytes_over_udp_leave_it_answering_others(proxy: DnsProxy, junk: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        sock.sendto(junk, ("127.0.0.1", proxy.port))
    ask(proxy)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=600), framed=st.booleans())
def test_any_bytes_over_tcp_leave_it_answering_others(proxy: DnsProxy, junk: bytes,
                                                      framed: bool) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=2,
                                  source_address=("127.0.0.2", 0)) as sock:
        if framed:  # a length prefix, as DNS over TCP has, then the junk
            junk = len(junk).to_bytes(2, "big") + junk
        sock.sendall(junk)
    ask(proxy)


FLOODER = str(Path(__file__).resolve().parents[3] / "bench" / "dns_flooder.py")


def ask_as_a_resolver_does(proxy: DnsProxy) -> float:
    """``ask`` with one retry after 1 s, as a stub resolver does (glibc: attempts:2)."""
    try:
        return ask(proxy, timeout=1.0)
    except dns.exception.Timeout:
        return 1.0 + ask(proxy, timeout=1.0)


def test_a_flooding_container_does_not_starve_the_others(proxy: DnsProxy) -> None:
    """A flood of 20000 queries/s (100 times the limit); faster floods outrun the
    listener itself (see bench/dns_flood.py)."""
    flooder = subprocess.Popen([sys.executable, FLOODER, str(proxy.port), NAME, "20000"])
    try:
        assert wait_until(lambda: proxy.limiter.dropped["127.0.0.2"] > 1000, 30)  # at its limit
        delays = [ask_as_a_resolver_does(proxy) for _ in range(30)]  # each one is answered
        assert flooder.poll() is None  # the flood went on meanwhile
    finally:
        flooder.kill()
        flooder.wait()
    assert proxy.limiter.dropped["127.0.0.3"] == 0
    # most are answered at the first try, as a resolver sees it (the time goes to
    # bench/dns_flood.py, which measures it against no flood)
    assert sum(d < 1.0 for d in delays) > len(delays) // 2, delays


def listener_policy(proxy: DnsProxy) -> int:
    assert proxy._thread is not None and proxy._thread.native_id is not None
    return os.sched_getscheduler(proxy._thread.native_id) & ~os.SCHED_RESET_ON_FORK


def test_threads_the_listener_starts_have_the_normal_policy(proxy: DnsProxy) -> None:
    """The workers (started by the listener on demand) and TCP connections' threads do not
    inherit its real-time policy."""
    ask(proxy)  # forwarded to Consul's DNS: by a worker of a pool (they stay)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5,
                                  source_address=("127.0.0.3", 0)) as conn:
        dns.query.send_tcp(conn, dns.message.make_query(NAME, "A"))
        dns.query.receive_tcp(conn, time.time() + 5)  # its thread serves until it closes
        workers = [t for t in threading.enumerate()
                   if t.name.startswith(("dns-consul", "dns-tcp")) and t.is_alive()]
        assert {t.name.split("_")[0] for t in workers} == {"dns-consul", "dns-tcp"}, workers
        for thread in workers:
            assert thread.native_id is not None
            assert os.sched_getscheduler(thread.native_id) == os.SCHED_OTHER, thread.name


def test_the_listener_is_real_time_until_a_flood_and_again_after_it(own_proxy: DnsProxy) -> None:
    """Real time for its questions; a flood as fast as one process sends puts it back to
    the normal policy, so the flood's CPU is shared with everyone else's."""
    proxy = own_proxy
    ask(proxy)
    assert listener_policy(proxy) == os.SCHED_RR
    flooder = subprocess.Popen([sys.executable, FLOODER, str(proxy.port), NAME, "0"])
    try:
        assert wait_until(lambda: listener_policy(proxy) == os.SCHED_OTHER, 30, 0.05)
    finally:
        flooder.kill()
        flooder.wait()

    def quiet_question_restores_it() -> bool:
        ask(proxy)  # a quiet wake-up; after the cool-down it restores the policy
        return listener_policy(proxy) == os.SCHED_RR
    assert wait_until(quiet_question_restores_it, 30, 0.2)
