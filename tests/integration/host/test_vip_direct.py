"""A client that uses instances both through the VIP and directly, on real OVS (TCP and UDP).

Linux gives a new connection to another destination the same source port as an earlier one,
so a direct connection to an instance can carry exactly the addresses and ports that a VIP
connection had after its destination NAT. The client here forces that case: for each of 20
source ports it connects through the VIP, learns which instance answered, then connects to
that instance directly from the same port. Every direct connection must open at once (0.5 s,
less than the 1 s SYN retransmit a mistaken reply would cost) and be answered by the
instance, which sees the client's own address and port; through the VIP it sees the client's
address and a port Linux does not give out.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

import consul
import pytest

from controller.pipeline.clientport import swapped
from tests.harness import Switchboard, in_ns, wait_until

pytestmark = pytest.mark.integration

TOPO, SERVICE, VIP = "sbt-vd", "sbt-vdapi", "10.246.2.100"
INSTANCES = {"vd-1": "10.246.2.11", "vd-2": "10.246.2.12"}
CLIENT_IP = "10.246.1.10"
# The client's ports, new in each run: conntrack keeps a closed connection for 30 s, and when
# a new one would have the same addresses and ports after NAT, OVS gives it another source
# port than the swapped one (a run right after another would see that, not the swap).
BASE = random.randrange(33000, 60000, 100)
SERVER_FILE = "sb_vd_server.py"

# HTTP/1.0 (the server closes first, so the client may bind its port again at once) and
# UDP on the same port: answers "NAME PEER_IP PEER_PORT".
SERVER = r"""
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT = sys.argv[1], int(sys.argv[2])

def udp():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", PORT))
    while True:
        _, peer = sock.recvfrom(512)
        sock.sendto(f"{NAME} {peer[0]} {peer[1]}".encode(), peer)

threading.Thread(target=udp, daemon=True).start()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{NAME} {self.client_address[0]} {self.client_address[1]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
"""

# For each source port: GET through the VIP, then (after argv[6] seconds) GET from the same
# port straight to the instance that answered. argv[5] "reset": the VIP connection is closed
# with a reset (as a client that stops reading does), "close": it is closed normally. Prints
# [[port, vip answer, direct answer], ...] as JSON.
CLIENT = r"""
import json, socket, struct, sys, time
vip, instances = sys.argv[1], json.loads(sys.argv[2])
ports = range(int(sys.argv[3]), int(sys.argv[4]))
reset, delay = sys.argv[5] == "reset", float(sys.argv[6])

def get(address, port, sport):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reset and port == 80:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.bind(("", sport))
    s.settimeout(0.5)
    try:
        s.connect((address, port))
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
        return data.split(b"\r\n\r\n", 1)[1].decode()
    except OSError as err:
        return "error: " + type(err).__name__
    finally:
        s.close()

results = []
for sport in ports:
    through_vip = get(vip, 80, sport)
    name = through_vip.split()[0]
    time.sleep(delay)
    direct = get(instances[name], 8080, sport) if name in instances else "no instance"
    results.append([sport, through_vip, direct])
print(json.dumps(results))
"""


# UDP from one socket (one source port) per port: a datagram to the VIP, then one to the
# instance that answered. Prints [[port, (VIP answer, from), (direct answer, from)], ...].
UDP_CLIENT = r"""
import json, socket, sys
vip, instances = sys.argv[1], json.loads(sys.argv[2])
results = []
for sport in range(int(sys.argv[3]), int(sys.argv[4])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", sport))
    s.settimeout(1)
    row = [sport]
    for target in [(vip, 80), None]:
        if target is None:
            name = row[1][0].split()[0]
            target = (instances[name], 8080)
        try:
            s.sendto(b"?", target)
            data, source = s.recvfrom(512)
            row.append([data.decode(), list(source)])
        except OSError as err:
            row.append(["error: " + type(err).__name__, []])
            break
    s.close()
    results.append(row)
print(json.dumps(results))
"""


def topology(server: str) -> str:
    instances = "".join(f"""
  {name}:
    networks: {{back: {{ip: {ip}}}}}
    command: python3 {server} {name} 8080
    services: [{{name: {SERVICE}, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]"""
                        for name, ip in INSTANCES.items())
    return f"""
name: {TOPO}
networks:
  front: {{subnet: 10.246.1.0/24}}
  back: {{subnet: 10.246.2.0/24}}
routers:
  core: {{networks: [front, back]}}
containers:
  client: {{networks: {{front: {{ip: {CLIENT_IP}}}}}}}{instances}
services:
  {SERVICE}: {{vip: {VIP}, port: 80}}
"""


def run_client(first_port: int, count: int, close: str = "close", delay: float = 0
               ) -> list[list]:
    cmd = (f"python3 -c '{CLIENT}' {VIP} '{json.dumps(INSTANCES)}' "
           f"{first_port} {first_port + count} {close} {delay}")
    out = in_ns(f"sb-{TOPO}-client", cmd, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def both_ways(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Switchboard]:
    tmp = tmp_path_factory.mktemp("vipdirect")
    server = tmp / SERVER_FILE
    server.write_text(SERVER)
    try:
        switchboard.up(tmp, topology(str(server)))

        def passing() -> bool:  # the daemon's last change of the VIP's instances is behind us
            _, entries = consul.Consul().health.service(SERVICE, passing=True)
            return {e["Service"]["Meta"].get("switchboard-container") for e in entries} == set(
                INSTANCES)

        def both_answer() -> bool:
            names = {vip.split()[0] for _, vip, _ in run_client(BASE, 10)}
            return names == set(INSTANCES)
        assert wait_until(passing, 30, interval=0.2), switchboard.log_tail()
        assert wait_until(both_answer, 30, interval=0.5), switchboard.log_tail()
        yield switchboard
    finally:
        switchboard.cli("down", TOPO, check=False)


@pytest.mark.parametrize(("close", "delay", "count"), [("reset", 0, 20), ("close", 1.5, 4)])
def test_direct_connection_from_a_vip_connections_port_opens_at_once(both_ways, close, delay,
                                                                      count):
    """Before the client port was translated, the first direct connection already failed
    after a reset, and one in a few 1.5 s after a normal close (both measured)."""
    first = BASE + (20 if close == "reset" else 40)
    results = run_client(first, count, close, delay)
    for sport, through_vip, direct in results:
        name, peer_ip, peer_port = through_vip.split()
        assert peer_ip == CLIENT_IP, through_vip
        assert int(peer_port) == swapped(sport) < 32768, through_vip
        assert direct == f"{name} {CLIENT_IP} {sport}", (sport, through_vip, direct)


def test_udp_through_the_vip_and_then_direct_from_the_same_port_each_answered_from_where_sent(
        both_ways):
    cmd = (f"python3 -c '{UDP_CLIENT}' {VIP} '{json.dumps(INSTANCES)}' {BASE + 60} {BASE + 70}")
    out = in_ns(f"sb-{TOPO}-client", cmd, timeout=60)
    assert out.returncode == 0, out.stderr
    for row in json.loads(out.stdout):
        assert len(row) == 3, row  # the VIP's datagram got no answer
        sport, (through_vip, vip_source), (direct, direct_source) = row
        name = through_vip.split()[0]
        assert vip_source == [VIP, 80], (sport, through_vip, vip_source)
        assert through_vip == f"{name} {CLIENT_IP} {swapped(sport)}"
        assert direct_source == [INSTANCES[name], 8080], (sport, direct, direct_source)
        assert direct == f"{name} {CLIENT_IP} {sport}"
