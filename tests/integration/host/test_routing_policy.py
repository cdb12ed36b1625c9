"""Routers and stateful policies on real OVS, with real TCP and UDP clients and servers."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator

import pytest

from sbcore.model.naming import gateway_mac
from tests.harness import Switchboard, in_ns, pings, sh, wait_until

pytestmark = pytest.mark.integration

ROUTED = """
name: sbt-route
networks:
  front: {subnet: 10.231.32.0/24}
  back: {subnet: 10.231.33.0/24}
  lone: {subnet: 10.231.34.0/24}
routers:
  core: {networks: [front, back]}
containers:
  web: {networks: {front: {ip: 10.231.32.10}}}
  api: {networks: {back: {ip: 10.231.33.10}}}
  solo: {networks: {lone: {ip: 10.231.34.10}}}
"""

# front -> back on tcp/8080 and udp/5353 only; admin (a container) -> the db service only.
POLICY = """
name: sbt-policy
networks:
  front: {subnet: 10.231.40.0/24}
  back: {subnet: 10.231.41.0/24}
  data: {subnet: 10.231.42.0/24}
routers:
  core: {networks: [front, back, data]}
policies:
  - {from: front, to: back, ports: [tcp/8080, udp/5353]}
  - {from: admin, to: "service:db"}
containers:
  web: {networks: {front: {ip: 10.231.40.10}}}
  admin: {networks: {front: {ip: 10.231.40.20}}}
  api: {networks: {back: {ip: 10.231.41.10}}}
  db:
    networks: {data: {ip: 10.231.42.10}}
    services: [{name: sbt-db, port: 5432}]
"""
# Service names are global in Consul: keep ours distinct from other tests'.
POLICY = POLICY.replace('"service:db"', '"service:sbt-db"')

WEB, ADMIN, API, DB = "10.231.40.10", "10.231.40.20", "10.231.41.10", "10.231.42.10"

# Serves every "tcp/PORT" (answers "ok PORT" and closes) and "udp/PORT" (echo) it is given.
SERVER = r"""
import socket, sys, threading
def tcp(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"ok %d\n" % port); c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", port))
    while True:
        data, peer = s.recvfrom(2048); s.sendto(b"echo " + data, peer)
for spec in sys.argv[1:]:
    proto, port = spec.split("/")
    threading.Thread(target={"tcp": tcp, "udp": udp}[proto], args=(int(port),)).start()
"""

# Connects (tcp) or sends a datagram (udp) and prints the answer; exit 1 without one.
CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind); s.settimeout(float(sys.argv[4]))
try:
    if proto == "tcp":
        s.connect((host, port)); print(s.recv(64).decode().strip())
    else:
        s.sendto(b"hi", (host, port)); print(s.recvfrom(64)[0].decode())
except OSError as err:
    print(err); sys.exit(1)
"""


def answer(
    netns: str | None, proto: str, host: str, port: int, timeout: float = 1.5
) -> str | None:
    """What a server at host:port answers a client in ``netns`` (None: the host); None when
    nothing answers."""
    where = ["ip", "netns", "exec", netns] if netns else []
    result = subprocess.run(
        [*where, "python3", "-c", CLIENT, proto, host, str(port), str(timeout)],
        capture_output=True, text=True, timeout=timeout + 10)
    return result.stdout.strip() if result.returncode == 0 else None


def ttl_of_ping(netns: str, address: str) -> int | None:
    out = in_ns(netns, f"ping -c 1 -W 1 {address}").stdout
    match = re.search(r"ttl=(\d+)", out)
    return int(match.group(1)) if match else None


class Servers:
    """Server processes this test started inside namespaces; stopped by PID."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, netns: str, *specs: str) -> None:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, "python3", "-c", SERVER, *specs],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        self.procs.append(proc)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(5)


def _namespaces(prefix: str) -> list[str]:
    return [line.split()[0] for line in sh("ip netns list").stdout.splitlines()
            if line.startswith(prefix)]


@pytest.fixture(scope="module")
def routed(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    switchboard.up(tmp_path_factory.mktemp("routed"), ROUTED)
    yield
    switchboard.cli("down", "sbt-route", check=False)
    assert not _namespaces("sb-sbt-route-")


@pytest.fixture(scope="module")
def policy(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    servers = Servers()
    try:
        switchboard.up(tmp_path_factory.mktemp("policy"), POLICY)
        servers.start("sb-sbt-policy-api", "tcp/8080", "tcp/9090", "udp/5353", "udp/5454")
        servers.start("sb-sbt-policy-web", "tcp/8080", "udp/5353")
        servers.start("sb-sbt-policy-db", "tcp/5432", "tcp/8080")
        listening = [("sb-sbt-policy-api", "10.231.41.10", 9090),
                     ("sb-sbt-policy-web", "10.231.40.10", 8080),
                     ("sb-sbt-policy-db", "10.231.42.10", 8080)]
        for netns, ip, port in listening:  # each answers inside its own namespace
            assert wait_until(lambda n=netns, i=ip, p=port: answer(n, "tcp", i, p), 10)
        yield
    finally:
        servers.stop()
        switchboard.cli("down", "sbt-policy", check=False)
    assert not _namespaces("sb-sbt-policy-")


# --- routers ------------------------------------------------------------------------------

def test_networks_joined_by_a_router_reach_each_other_with_ttl_decremented(routed):
    assert pings("sb-sbt-route-web", "10.231.33.10", count=3)
    assert pings("sb-sbt-route-api", "10.231.32.10", count=3)
    assert ttl_of_ping("sb-sbt-route-web", "10.231.33.10") == 63


def test_gateway_answers_arp_from_the_switch(routed):
    in_ns("sb-sbt-route-web", "ping -c 1 -W 1 10.231.33.10")
    neigh = in_ns("sb-sbt-route-web", "ip neigh show 10.231.32.1").stdout
    assert f"lladdr {gateway_mac('sbt-route', 'front')}" in neigh, neigh


def test_networks_not_joined_by_a_router_never_reach_each_other(routed):
    assert not pings("sb-sbt-route-web", "10.231.34.10")
    assert not pings("sb-sbt-route-solo", "10.231.32.10")
    assert not pings("sb-sbt-route-solo", "10.231.33.10")


def test_same_network_traffic_is_not_routed(routed, switchboard, tmp_path):
    """Two containers on one network see each other's TTL unchanged (no router hop)."""
    text = ROUTED.replace("solo: {networks: {lone: {ip: 10.231.34.10}}}",
                          "solo: {networks: {lone: {ip: 10.231.34.10}}}\n"
                          "  peer: {networks: {front: {ip: 10.231.32.11}}}")
    switchboard.up(tmp_path, text)
    try:
        assert ttl_of_ping("sb-sbt-route-web", "10.231.32.11") == 64
    finally:
        switchboard.up(tmp_path, ROUTED)
    assert "sb-sbt-route-peer" not in _namespaces("sb-sbt-route-")


# --- policies -----------------------------------------------------------------------------

def test_policy_allowed_tcp_port_passes_and_the_reply_comes_back(policy):
    assert answer("sb-sbt-policy-web", "tcp", API, 8080) == "ok 8080"


def test_policy_refuses_another_tcp_port_on_the_same_target(policy):
    assert answer("sb-sbt-policy-web", "tcp", API, 9090) is None
    assert answer("sb-sbt-policy-api", "tcp", API, 9090) == "ok 9090"  # it does listen


def test_policy_allowed_udp_port_passes_and_the_reply_comes_back(policy):
    assert answer("sb-sbt-policy-web", "udp", API, 5353) == "echo hi"


def test_policy_refuses_another_udp_port(policy):
    assert answer("sb-sbt-policy-web", "udp", API, 5454) is None
    assert answer("sb-sbt-policy-api", "udp", API, 5454) == "echo hi"


def test_policy_refuses_the_reverse_direction(policy):
    assert answer("sb-sbt-policy-api", "tcp", WEB, 8080) is None
    assert answer("sb-sbt-policy-api", "udp", WEB, 5353) is None
    assert not pings("sb-sbt-policy-api", WEB)


def test_policy_refuses_icmp_that_no_rule_allows(policy):
    assert not pings("sb-sbt-policy-web", API)


def test_policy_from_a_container_to_a_service_allows_only_that_container(policy):
    assert answer("sb-sbt-policy-admin", "tcp", DB, 5432) == "ok 5432"
    assert answer("sb-sbt-policy-web", "tcp", DB, 5432) is None


def test_policy_to_a_service_opens_only_the_service_port(policy):
    assert answer("sb-sbt-policy-admin", "tcp", DB, 8080) is None


def test_policies_leave_same_network_traffic_open(policy):
    assert answer("sb-sbt-policy-admin", "tcp", WEB, 8080) == "ok 8080"
    assert pings("sb-sbt-policy-admin", WEB)


def test_the_host_reaches_every_container_despite_policies(policy):
    for ip, port in ((WEB, 8080), (API, 9090), (DB, 8080)):
        assert sh(f"ping -c 1 -W 1 {ip}").returncode == 0, ip
        assert answer(None, "tcp", ip, port) == f"ok {port}", ip


def test_down_leaves_no_namespace_port_or_flow_behind(switchboard, tmp_path):
    switchboard.up(tmp_path, ROUTED.replace("sbt-route", "sbt-route2")
                   .replace("10.231.3", "10.231.5"))
    ports = {r["port"] for r in switchboard.status("sbt-route2")["containers"]}
    switchboard.cli("down", "sbt-route2")
    assert not _namespaces("sb-sbt-route2-")
    listed = sh(f"ovs-vsctl list-ports {switchboard.bridge}").stdout
    assert not ports & set(listed.split())
    flows = sh(f"ovs-ofctl -O OpenFlow13 --no-stats dump-flows {switchboard.bridge}").stdout
    gone = re.compile(r"10\.231\.5[234]\.")
    assert "cookie=" in flows and not gone.search(flows)
    assert not gone.search(sh("ip -4 -o addr show").stdout)


# --- switchboard trace --------------------------------------------------------------------

def _trace(sb: Switchboard, *args: str) -> dict:
    return json.loads(sb.cli("trace", *args, "--json").stdout)


def _stages(result: dict) -> list[str]:
    return [s["stage"] for s in result["stages"] if "stage" in s]


def test_trace_of_an_allowed_connection_names_each_stage_and_the_receiver(switchboard, policy):
    result = _trace(switchboard, "web", "api", "--tcp", "8080", "--topology", "sbt-policy")
    assert _stages(result) == ["classifier", "conntrack", "service_lb", "l3_router",
                               "l3_neighbor", "policy", "l2_forward"]
    assert result["verdict"]["delivered"] and result["verdict"]["delivered"][0].startswith(
        f"api ({API}, port ")


def test_trace_of_a_refused_connection_is_dropped_in_the_policy_stage(switchboard, policy):
    result = _trace(switchboard, "web", "api", "--tcp", "9090", "--topology", "sbt-policy")
    assert _stages(result)[-1] == "policy"
    assert result["verdict"]["dropped_in"] == "policy"
    assert result["verdict"]["delivered"] == []
    text = switchboard.cli("trace", "web", API, "--udp", "5454", "-t", "sbt-policy").stdout
    assert text.splitlines()[-1] == (
        "verdict: dropped in stage policy: no policy allows this new connection")


def test_trace_between_unjoined_networks_says_no_router(switchboard, routed):
    result = _trace(switchboard, "web", "10.231.34.10", "--icmp", "--topology", "sbt-route")
    assert result["verdict"]["dropped_in"] == "l2_forward"
    assert "no router" in result["verdict"]["reason"]
    same = _trace(switchboard, "web", "api", "--topology", "sbt-route")  # joined: delivered, routed
    assert "l3_router" in _stages(same) and same["verdict"]["delivered"]
