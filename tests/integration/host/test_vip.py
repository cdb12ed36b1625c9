"""Service VIPs on real OVS, Consul and namespaces: balance, failover, recovery, refusal.

Three instances of one service each run a small HTTP server that answers with its own name.
An instance "fails" when its server is killed (its TCP check then fails) and "recovers" when
the test starts the server again inside its namespace.

An instance connecting to its own VIP (hairpin) is tested in test_hairpin.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from sbcore.model.naming import group_id
from tests.harness import Switchboard, sh, wait_until

pytestmark = pytest.mark.integration

INTERVAL = 1.0  # the instances' check interval
BOUND = INTERVAL + 1.0  # a failed instance gets no new connection after this many seconds
SERVER_FILE = "sb_vip_server.py"

# Answers every GET with its name (argv[1]) on port argv[2]; HTTP/1.1, so connections stay open.
SERVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT = sys.argv[1].encode(), int(sys.argv[2])

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(NAME)))
        self.end_headers()
        self.wfile.write(NAME)

    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    request_queue_size = 128

Server(("0.0.0.0", PORT), Handler).serve_forever()
"""

# GET / over a new connection each time, until argv[3] requests or argv[4] seconds; prints
# [[monotonic start, monotonic end, answer or "error: ..."], ...] as JSON.
CLIENT = r"""
import http.client, json, sys, time
host, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
results, end = [], time.monotonic() + seconds
while len(results) < count and time.monotonic() < end:
    start = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", "/")
        answer = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException) as err:
        answer = "error: " + type(err).__name__
    finally:
        conn.close()
    results.append([start, time.monotonic(), answer])
print(json.dumps(results))
"""

# One connection held open: a GET on it for every line read from stdin, answer printed.
# auto_open = 0: http.client must not silently reconnect when the connection is gone.
HELD = r"""
import http.client, sys
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
conn.connect()
conn.auto_open = 0
for _ in sys.stdin:
    try:
        conn.request("GET", "/")
        print(conn.getresponse().read().decode(), flush=True)
    except (OSError, http.client.HTTPException) as err:
        print("error: " + type(err).__name__, flush=True)
"""

Result = tuple[float, float, str]  # start, end, answer


def _where(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def http_gets(netns: str | None, host: str, port: int, count: int,
              seconds: float = 30) -> list[Result]:
    """``count`` GETs (or as many as fit in ``seconds``), each on a new connection, from
    ``netns`` (None: the host)."""
    out = subprocess.run([*_where(netns), "python3", "-c", CLIENT, host, str(port), str(count),
                          str(seconds)], capture_output=True, text=True, timeout=seconds + 30,
                         check=True)
    return [tuple(r) for r in json.loads(out.stdout)]


def start_gets(netns: str | None, host: str, port: int, seconds: float
               ) -> subprocess.Popen[str]:
    """Like ``http_gets`` in the background, for ``seconds``; read with ``gets_of``."""
    return subprocess.Popen([*_where(netns), "python3", "-c", CLIENT, host, str(port),
                             "1000000", str(seconds)], stdout=subprocess.PIPE, text=True)


def gets_of(proc: subprocess.Popen[str]) -> list[Result]:
    out, _ = proc.communicate(timeout=120)
    return [tuple(r) for r in json.loads(out)]


def answers(results: list[Result]) -> Counter[str]:
    return Counter(answer for _, _, answer in results)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def server_pids(netns: str) -> list[int]:
    """PIDs of the HTTP servers running inside ``netns``."""
    pids = [int(p) for p in sh(f"ip netns pids {netns}").stdout.split()]
    return [p for p in pids if SERVER_FILE in _cmdline(p)]


class ServiceLab:
    """A topology whose instances' servers the test kills and starts again, by PID."""

    def __init__(self, sb: Switchboard, topology: str, service: str, vip: str,
                 instances: tuple[str, ...], server: Path) -> None:
        self.sb, self.topology, self.service, self.vip = sb, topology, service, vip
        self.instances, self.server = instances, server
        self.started: dict[str, subprocess.Popen[bytes]] = {}  # servers this test started

    def netns(self, container: str) -> str:
        return f"sb-{self.topology}-{container}"

    def kill(self, instance: str) -> None:
        """Kill the instance's server; its check fails from now on."""
        pids = server_pids(self.netns(instance))
        assert pids, f"no server runs in {instance}"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        proc = self.started.pop(instance, None)
        if proc is not None:
            proc.wait(5)

    def revive(self, instance: str) -> None:
        """Start the instance's server again inside its namespace."""
        self.started[instance] = subprocess.Popen(
            [*_where(self.netns(instance)), "python3", str(self.server), instance, "8080"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def passing(self) -> set[str]:
        _, entries = consul.Consul().health.service(self.service, passing=True)
        return {e["Service"]["Meta"].get("switchboard-container") for e in entries}

    def has_group(self) -> bool:
        out = sh(f"ovs-ofctl -O OpenFlow13 dump-groups {self.sb.bridge}").stdout
        return f"group_id={group_id(self.topology, self.service)}," in out

    def all_serving(self, client: str) -> None:
        """Revive every stopped instance; wait until all of them answer on the VIP."""
        for instance in self.instances:
            if not server_pids(self.netns(instance)):
                self.revive(instance)

        def all_answer() -> bool:
            seen = answers(http_gets(self.netns(client), self.vip, 80, 30))
            return set(seen) == set(self.instances)
        assert wait_until(all_answer, 30, interval=0.5), (
            f"not every instance answers on {self.vip}; passing: {self.passing()}\n"
            + self.sb.log_tail())

    def stop(self) -> None:
        for proc in self.started.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
        self.started.clear()


def instance_yaml(name: str, ip: str, service: str, server: Path) -> str:
    """A container running ``server`` as one instance of ``service`` (checked every 1s)."""
    # The server runs as a child of the container's command so that killing it fails the check
    # without the daemon (which restarts a command whose process exits) bringing it back.
    return f"""
  {name}:
    networks: {{back: {{ip: {ip}}}}}
    command: "python3 {server} {name} 8080 & exec sleep infinity"
    services: [{{name: {service}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]"""


INSTANCES = ("web-1", "web-2", "web-3")


def vip_topology(name: str, service: str, front: str, back: str, server: Path) -> str:
    """Networks ``front`` and ``back`` (``10.x.y`` prefixes of /24s) joined by a router; a
    client on front, a container "near" on back and three instances with VIP back.100:80."""
    instances = "".join(instance_yaml(inst, f"{back}.1{i}", service, server)
                        for i, inst in enumerate(INSTANCES, start=1))
    return f"""
name: {name}
networks:
  front: {{subnet: {front}.0/24}}
  back: {{subnet: {back}.0/24}}
routers:
  core: {{networks: [front, back]}}
containers:
  client: {{networks: {{front: {{ip: {front}.10}}}}}}
  near: {{networks: {{back: {{ip: {back}.20}}}}}}{instances}
services:
  {service}: {{vip: {back}.100, port: 80}}
"""


# --- balancing, failover, recovery, refusal -----------------------------------------------

TOPO, SERVICE, VIP = "sbt-vip", "sbt-vipweb", "10.231.65.100"
CLIENT_NS, NEAR_NS = f"sb-{TOPO}-client", f"sb-{TOPO}-near"


@pytest.fixture(scope="module")
def lab(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[ServiceLab]:
    tmp = tmp_path_factory.mktemp("vip")
    server = tmp / SERVER_FILE
    server.write_text(SERVER)
    service_lab = ServiceLab(switchboard, TOPO, SERVICE, VIP, INSTANCES, server)
    try:
        switchboard.up(tmp, vip_topology(TOPO, SERVICE, "10.231.64", "10.231.65", server))
        yield service_lab
    finally:
        service_lab.stop()
        switchboard.cli("down", TOPO, check=False)


@pytest.fixture
def serving(lab: ServiceLab) -> ServiceLab:
    lab.all_serving("client")
    return lab


def test_vip_spreads_200_connections_from_a_routed_network_over_all_instances(serving):
    results = http_gets(CLIENT_NS, VIP, 80, 200)
    seen = answers(results)
    assert sum(seen[name] for name in INSTANCES) == 200, seen
    for name in INSTANCES:
        assert 0.20 * 200 <= seen[name] <= 0.47 * 200, seen


def test_vip_serves_its_own_network_and_the_host(serving):
    for netns in (NEAR_NS, None):
        seen = answers(http_gets(netns, VIP, 80, 30))
        assert set(seen) == set(INSTANCES) and sum(seen.values()) == 30, (netns, seen)


def test_failed_instance_loses_new_connections_in_time_while_an_open_one_survives(serving):
    held = subprocess.Popen([*_where(CLIENT_NS), "python3", "-c", HELD, VIP, "80"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        held.stdin.write("\n")
        held.stdin.flush()
        keeper = held.stdout.readline().strip()
        assert keeper in INSTANCES
        victim = next(name for name in INSTANCES if name != keeper)

        gets = start_gets(CLIENT_NS, VIP, 80, seconds=BOUND + 4)
        time.sleep(1)
        killed_at = time.monotonic()
        serving.kill(victim)
        results = gets_of(gets)

        bad = [end for start, end, answer in results
               if start >= killed_at and (answer == victim or answer not in INSTANCES)]
        failover = max(bad, default=killed_at) - killed_at
        assert failover <= BOUND, f"{victim} still got new connections {failover:.2f}s after"
        after = answers([r for r in results if r[0] > killed_at + BOUND])
        assert sum(after.values()) >= 20 and set(after) == set(INSTANCES) - {victim}, after

        held.stdin.write("\n")
        held.stdin.flush()
        assert held.stdout.readline().strip() == keeper  # same connection, same instance
    finally:
        held.stdin.close()
        held.wait(10)


def test_recovered_instance_gets_new_connections_again(serving):
    victim = INSTANCES[1]
    serving.kill(victim)
    assert wait_until(lambda: victim not in serving.passing(), 10)
    assert wait_until(
        lambda: victim not in answers(http_gets(CLIENT_NS, VIP, 80, 30)), BOUND + 1)
    serving.revive(victim)
    revived_at = time.monotonic()
    results = http_gets(CLIENT_NS, VIP, 80, 1000000, seconds=BOUND + 3)
    back = [start for start, _, answer in results if answer == victim]
    assert back, f"{victim} got no new connection in {BOUND + 3}s after it recovered"
    assert all(answer in INSTANCES for _, _, answer in results), answers(results)
    assert back[0] - revived_at <= BOUND + 1


def _refusal(netns: str | None) -> tuple[int, float]:
    """curl's exit code and the seconds its one connection to the VIP took, by curl's own
    clock (the process's start is not in it)."""
    done = subprocess.run([*_where(netns), "curl", "-s", "-o", "/dev/null", "-m", "3",
                           "-w", "%{time_total}", f"http://{VIP}/"], timeout=30,
                          capture_output=True, text=True)
    return done.returncode, float(done.stdout or "nan")


def test_vip_with_no_passing_instance_refuses_connections_at_once(serving):
    for name in INSTANCES:
        serving.kill(name)
    assert wait_until(lambda: not serving.passing(), 10)
    assert wait_until(lambda: not serving.has_group(), BOUND)
    # So that a refusal can only come from the switch, not from a dead instance's kernel,
    # the instances no longer answer the clients (or the host) at all.
    blackholes = ("10.231.64.0/24", "10.231.65.20", "10.231.65.254")
    try:
        for name in INSTANCES:
            for dst in blackholes:
                sh(f"ip netns exec {serving.netns(name)} ip route add blackhole {dst}",
                   check=True)
        for netns in (CLIENT_NS, NEAR_NS, None):
            # refused (7), not left to time out (28); answered to the first SYN, not to one
            # sent again after 1 s
            rc, took = _refusal(netns)
            assert rc == 7 and took < 0.9, f"from {netns or 'the host'}: curl {rc} in {took:.2f}s"
    finally:
        for name in INSTANCES:
            for dst in blackholes:
                sh(f"ip netns exec {serving.netns(name)} ip route del blackhole {dst}")


# --- policies -----------------------------------------------------------------------------

PTOPO, PSERVICE, PVIP = "sbt-vipp", "sbt-vippweb", "10.231.72.100"
PINSTANCES = ("pw-1", "pw-2")


def policy_topology(server: Path) -> str:
    instances = "".join(instance_yaml(name, f"10.231.72.1{i}", PSERVICE, server)
                        for i, name in enumerate(PINSTANCES, start=1))
    return f"""
name: {PTOPO}
networks:
  front: {{subnet: 10.231.70.0/24}}
  side: {{subnet: 10.231.71.0/24}}
  back: {{subnet: 10.231.72.0/24}}
routers:
  core: {{networks: [front, side, back]}}
policies:
  - {{from: front, to: "service:{PSERVICE}"}}
  - {{from: side, to: front}}
containers:
  allowed: {{networks: {{front: {{ip: 10.231.70.10}}}}}}
  denied: {{networks: {{side: {{ip: 10.231.71.10}}}}}}{instances}
services:
  {PSERVICE}: {{vip: {PVIP}, port: 80}}
"""


@pytest.fixture(scope="module")
def policy_lab(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[ServiceLab]:
    tmp = tmp_path_factory.mktemp("vip-policy")
    server = tmp / SERVER_FILE
    server.write_text(SERVER)
    service_lab = ServiceLab(switchboard, PTOPO, PSERVICE, PVIP, PINSTANCES, server)
    try:
        switchboard.up(tmp, policy_topology(server))
        service_lab.all_serving("allowed")
        yield service_lab
    finally:
        service_lab.stop()
        switchboard.cli("down", PTOPO, check=False)


def test_policy_to_the_service_lets_its_vip_through(policy_lab):
    seen = answers(http_gets("sb-sbt-vipp-allowed", PVIP, 80, 20))
    assert set(seen) == set(PINSTANCES) and sum(seen.values()) == 20, seen


def test_vip_is_blocked_from_a_network_no_policy_allows(policy_lab):
    seen = answers(http_gets("sb-sbt-vipp-denied", PVIP, 80, 3))
    assert not set(seen) & set(PINSTANCES), seen
    # the network itself is routed: its policy to front works
    assert sh("ip netns exec sb-sbt-vipp-denied ping -c 1 -W 1 10.231.70.10").returncode == 0
