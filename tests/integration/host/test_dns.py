"""DNS inside containers: Consul's names through the daemon's forwarder, the rest as on the host.

Real clients (``getent``, ``dig``) run inside the containers' namespaces through
``ip netns exec``, the way a user's shell would; service names are ``sbtdns-*`` so that they
never meet another topology's services in the shared Consul agent.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import consul
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest

from discovery.dnsproxy import DnsProxy
from discovery.lookup import DNSError, query
from tests import upstream_dns as upstream_zone
from tests.harness import Switchboard, in_ns, pings, sh, wait_until

pytestmark = pytest.mark.integration

TOPOLOGY = "sbt-dns"
NS = "sb-sbt-dns-"
LAN, EDGE = "10.236.1", "10.236.2"
HOST_ON_LAN, HOST_ON_EDGE = f"{LAN}.254", f"{EDGE}.254"

DNS_LAB = f"""
name: {TOPOLOGY}
networks:
  lan: {{subnet: {LAN}.0/24}}
  edge: {{subnet: {EDGE}.0/24}}
containers:
  api-1:
    networks: {{lan: {{ip: {LAN}.11}}}}
    command: python3 -m http.server 8080
    services:
      - {{name: sbtdns-api, port: 8080, tags: [v1], check: {{tcp: 8080, interval: 1s}}}}
  api-2:
    networks: {{lan: {{ip: {LAN}.12}}}}
    command: python3 -m http.server 8080
    services:
      - {{name: sbtdns-api, port: 8080, tags: [v2], check: {{tcp: 8080, interval: 1s}}}}
  client:
    networks: {{edge: {{ip: {EDGE}.10}}, lan: {{ip: {LAN}.10}}}}
  looker:
    networks: [lan]
    command: sh -c 'while :; do getent hosts sbtdns-api.service.consul; sleep 0.3; done'
"""


def api_ips() -> set[str]:
    return {f"{LAN}.11", f"{LAN}.12"}


def lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}


def dig(netns: str, args: str) -> set[str]:
    return lines(in_ns(netns, f"dig +short +time=2 +tries=1 {args}").stdout)


@pytest.fixture(scope="module")
def host_resolv_conf() -> bytes:
    return Path("/etc/resolv.conf").read_bytes()


@pytest.fixture(scope="module")
def lab(
    switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory, host_resolv_conf: bytes
) -> Iterator[Switchboard]:
    switchboard.up(tmp_path_factory.mktemp("dns"), DNS_LAB)
    passing = consul.Consul().health.service
    assert wait_until(
        lambda: len(passing("sbtdns-api", passing=True)[1]) == 2, 15
    ), "the api instances never passed their checks"
    yield switchboard
    switchboard.cli("down", TOPOLOGY, check=False)


def test_getent_in_a_container_resolves_service_names_through_consul(lab):
    out = in_ns(f"{NS}client", "getent hosts sbtdns-api.service.consul").stdout
    assert {line.split()[0] for line in lines(out)} == api_ips()
    assert all(line.split()[1] == "sbtdns-api.service.consul" for line in lines(out))


def test_dig_in_a_container_answers_a_and_srv_like_consul_http(lab):
    client = f"{NS}client"
    assert dig(client, "sbtdns-api.service.consul") == api_ips()
    assert dig(client, "v2.sbtdns-api.service.consul") == {f"{LAN}.12"}
    srv = [line.split() for line in dig(client, "SRV sbtdns-api.service.consul")]
    assert sorted(port for _, _, port, _ in srv) == ["8080", "8080"]
    targets = {target for *_, target in srv}
    addresses = {ip for target in targets for ip in dig(client, target)}
    assert addresses == api_ips()
    assert lines(in_ns(client, "dig +tcp +short sbtdns-api.service.consul").stdout) == api_ips()
    _, entries = consul.Consul().health.service("sbtdns-api", passing=True)
    assert {(e["Service"]["Address"], e["Service"]["Port"]) for e in entries} == {
        (ip, 8080) for ip in api_ips()}


def test_short_names_find_services_through_the_search_domain(lab):
    out = in_ns(f"{NS}client", "getent ahosts sbtdns-api").stdout
    assert {line.split()[0] for line in lines(out)} == api_ips()


def test_unknown_consul_name_is_nxdomain(lab):
    out = in_ns(f"{NS}client", "dig +time=2 +tries=1 sbtdns-nothing.service.consul").stdout
    assert "status: NXDOMAIN" in out


def test_a_containers_own_command_resolves_service_names(lab):
    log = Path(lab.state_dir) / "logs" / TOPOLOGY / "looker.log"

    def seen() -> set[str]:
        found = [line.split() for line in lines(log.read_text())]
        return {words[0] for words in found if words[1:] == ["sbtdns-api.service.consul"]}

    assert wait_until(lambda: seen() == api_ips(), 10), log.read_text()[-2000:]


def test_resolv_conf_names_the_host_address_on_the_first_network(lab, host_resolv_conf):
    client = in_ns(f"{NS}client", "cat /etc/resolv.conf").stdout
    assert f"nameserver {HOST_ON_EDGE}" in client.splitlines()
    assert "service.consul" in next(x for x in client.splitlines() if x.startswith("search"))
    api = in_ns(f"{NS}api-1", "cat /etc/resolv.conf").stdout
    assert f"nameserver {HOST_ON_LAN}" in api.splitlines()
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv_conf


def test_other_names_resolve_through_the_upstream_server(lab, upstream_dns):
    """Names outside Consul go to the upstream servers (here the tests' own, in a namespace;
    by default the host's resolvers), for dig and for the C library alike."""
    name = f"www.{upstream_zone.ZONE}"
    before = len(upstream_dns.asked)
    assert dig(f"{NS}client", f"{name} A") == {upstream_zone.ANSWER}
    out = in_ns(f"{NS}api-1", f"getent ahostsv4 {name}").stdout
    assert {line.split()[0] for line in lines(out)} == {upstream_zone.ANSWER}
    assert name in upstream_dns.asked[before:]  # it was asked, not answered from elsewhere
    nowhere = in_ns(f"{NS}client", f"dig +time=2 +tries=1 nothing.{upstream_zone.ZONE}.x A")
    assert "status: NXDOMAIN" in nowhere.stdout  # its answers come back as they are


POLICY_LAB = """
name: sbt-dnspol
networks:
  front: {subnet: 10.236.3.0/24}
  back: {subnet: 10.236.4.0/24}
routers:
  core: {networks: [front, back]}
policies:
  - {from: front, to: back, ports: [tcp/8080]}
containers:
  web: {networks: {front: {ip: 10.236.3.10}}}
  api:
    networks: {back: {ip: 10.236.4.10}}
    command: python3 -m http.server 8080
    services:
      - {name: sbtdns-polapi, port: 8080, check: {tcp: 8080, interval: 1s}}
"""


def test_dns_works_in_a_topology_with_policies(switchboard, tmp_path):
    try:
        switchboard.up(tmp_path, POLICY_LAB)
        assert not pings("sb-sbt-dnspol-api", "10.236.3.10")  # the policies are in force
        for ns in ("sb-sbt-dnspol-web", "sb-sbt-dnspol-api"):
            assert wait_until(lambda ns=ns: dig(ns, "sbtdns-polapi.service.consul")
                              == {"10.236.4.10"}, 10), ns
        assert in_ns("sb-sbt-dnspol-web",
                     "curl -sf -m 3 -o /dev/null http://sbtdns-polapi.service.consul:8080/"
                     ).returncode == 0
    finally:
        switchboard.cli("down", "sbt-dnspol", check=False)


def test_attached_containers_resolver_is_left_alone(switchboard, tmp_path):
    proc = subprocess.Popen(["unshare", "-n", "sleep", "300"])
    try:
        switchboard.up(tmp_path, f"""
            name: sbt-dnsatt
            networks:
              lan: {{subnet: 10.236.5.0/24}}
            containers:
              own: {{networks: [lan]}}
              legacy:
                attach: {{pid: {proc.pid}}}
                networks: [lan]
            """)
        assert Path("/etc/netns/sb-sbt-dnsatt-own/resolv.conf").exists()
        assert not Path("/etc/netns/sb-sbt-dnsatt-legacy").exists()
    finally:
        proc.kill()
        proc.wait()
        switchboard.cli("down", "sbt-dnsatt", check=False)


def test_down_removes_resolver_files_and_listeners(switchboard, tmp_path, host_resolv_conf):
    switchboard.up(tmp_path, """
        name: sbt-dnsdown
        networks:
          lan: {subnet: 10.236.6.0/24}
        containers:
          a: {networks: [lan]}
        """)
    assert dig("sb-sbt-dnsdown-a", "consul.service.consul")
    assert sh("ss -Hlnu src 10.236.6.254:53").stdout.strip()
    switchboard.cli("down", "sbt-dnsdown")
    assert not Path("/etc/netns/sb-sbt-dnsdown-a").exists()
    assert not sh("ss -Hlnu src 10.236.6.254:53").stdout.strip()
    assert not sh("ss -Hlnt src 10.236.6.254:53").stdout.strip()
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv_conf


# --------------------------------------------------------------------------- the forwarder


def bind_udp_and_tcp() -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on one free port of 127.0.0.1.

    The kernel picks a free UDP port; the same number may be taken for TCP (by another
    test's connection, say), so another port is tried then.
    """
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        try:
            return udp, socket.create_server(("127.0.0.1", udp.getsockname()[1]))
        except OSError:
            udp.close()
    raise RuntimeError("no port of 127.0.0.1 free for both UDP and TCP")


class FakeUpstream:
    """A DNS server on 127.0.0.1 answering every A query with 192.0.2.7 (UDP and TCP)."""

    def __init__(self) -> None:
        self.udp, self.tcp = bind_udp_and_tcp()
        self.address = self.udp.getsockname()
        self.asked: list[str] = []
        for target in (self._serve_udp, self._serve_tcp):
            threading.Thread(target=target, daemon=True).start()

    def answer(self, packet: bytes) -> bytes:
        asked = dns.message.from_wire(packet)
        name = asked.question[0].name
        self.asked.append(name.to_text().rstrip("."))
        response = dns.message.make_response(asked)
        response.answer.append(dns.rrset.from_text(name, 5, "IN", "A", "192.0.2.7"))
        return response.to_wire()

    def _serve_udp(self) -> None:
        while True:
            try:
                packet, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            with contextlib.suppress(OSError):  # closed meanwhile
                self.udp.sendto(self.answer(packet), peer)

    def _serve_tcp(self) -> None:
        while True:
            try:
                conn, _ = self.tcp.accept()
            except OSError:
                return
            with conn:
                (length,) = struct.unpack("!H", conn.recv(2))
                reply = self.answer(conn.recv(length))
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def forwarder() -> Iterator[tuple[DnsProxy, FakeUpstream, tuple[str, int]]]:
    upstream = FakeUpstream()
    udp, tcp = bind_udp_and_tcp()  # a port free for both, given to the proxy
    port = udp.getsockname()[1]
    udp.close()
    tcp.close()
    proxy = DnsProxy(("127.0.0.1", 8600), upstreams=lambda: [upstream.address], port=port)
    assert proxy.listen(["127.0.0.1"]) == {}
    yield proxy, upstream, ("127.0.0.1", port)
    proxy.close()
    upstream.close()


def addresses(msg: dns.message.Message) -> list[str]:
    return [r.address for rrset in msg.answer for r in rrset]


def test_forwarder_sends_consul_names_to_consul_and_the_rest_upstream(forwarder):
    proxy, upstream, address = forwarder
    assert addresses(query("consul.service.consul", "A", address)) == ["127.0.0.1"]
    assert addresses(query("www.sbtdns.example", "A", address)) == ["192.0.2.7"]
    assert upstream.asked == ["www.sbtdns.example"]
    with socket.create_connection(address, timeout=3) as conn:  # TCP, two queries
        for name in ("consul.service.consul", "tcp.sbtdns.example"):
            dns.query.send_tcp(conn, dns.message.make_query(name, "A", id=77))
            msg, _ = dns.query.receive_tcp(conn)
            assert msg.id == 77 and msg.answer, name
    assert upstream.asked == ["www.sbtdns.example", "tcp.sbtdns.example"]


def test_forwarder_answers_servfail_when_upstream_is_unreachable(forwarder):
    proxy, upstream, address = forwarder
    upstream.close()
    proxy.timeout = 0.3
    with pytest.raises(DNSError, match="SERVFAIL"):
        query("www.sbtdns.example", "A", address, timeout=3)
    assert query("consul.service.consul", "A", address).answer


def test_forwarder_stops_listening_where_told(forwarder):
    proxy, _, address = forwarder
    proxy.listen([])
    assert proxy.addresses == set()
    with pytest.raises(DNSError):
        query("consul.service.consul", "A", address, timeout=0.5)
