"""The host is protected: a real listener on the host's address on a network is not reachable
from the containers, until a `to: host` policy opens its port to some of them. What the host
opens to containers (a user's curl, Consul's checks), DNS on the host address and a VIP with
no instance (refused at once by the host) keep working."""

from __future__ import annotations

import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Switchboard, in_ns, sh, wait_until

pytestmark = pytest.mark.integration

LEG = "10.95.1.254"  # the host's address on the network (the highest of the subnet)
PORT = 18099
TOPOLOGY = """
name: sbt-guard
networks:
  lan: {subnet: 10.95.1.0/24}
containers:
  web:
    networks: {lan: {ip: 10.95.1.10}}
    command: python3 -m http.server 8080
    services: [{name: sbt-guard-web, port: 8080, check: {tcp: 8080, interval: 1s}}]
  probe: {networks: {lan: {ip: 10.95.1.11}}}
  idle: {networks: {lan: {ip: 10.95.1.12}}, services: [{name: sbt-guard-idle, port: 8080}]}
services:
  sbt-guard-idle: {vip: 10.95.1.100, port: 80}
"""
OPEN = TOPOLOGY + f"""
policies:
  - {{from: probe, to: host, ports: [tcp/{PORT}]}}
"""


class Listener:
    """A TCP server bound to one host address only (never the host's own addresses): it
    counts the connections it accepts and answers each with one line."""

    def __init__(self, address: str, port: int) -> None:
        self.sock = socket.create_server((address, port))
        self.sock.settimeout(0.2)
        self.accepted: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted.append(peer[0])
            with conn:
                conn.sendall(b"host secret\n")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture()
def listener(switchboard: Switchboard, tmp_path: Path) -> Iterator[Listener]:
    switchboard.up(tmp_path, TOPOLOGY)
    server = Listener(LEG, PORT)  # the address exists once the topology is up
    try:
        yield server
    finally:
        server.close()
        switchboard.cli("down", "sbt-guard", check=False)


def _connect(netns: str, address: str, port: int) -> tuple[int, str]:
    """(exit status, output) of a TCP client in a container (2 s at most)."""
    result = in_ns(netns, f"python3 -c \"import socket; s = socket.create_connection("
                          f"('{address}', {port}), timeout=2); print(s.recv(64).decode())\"")
    return result.returncode, result.stdout


def _check_passing(service: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:8500/v1/health/service/{service}") as r:
        entries = json.load(r)
    return bool(entries) and all(c["Status"] == "passing" for e in entries
                                 for c in e["Checks"] if c["ServiceName"] == service)


def test_a_host_listener_is_closed_to_containers_until_a_to_host_policy_opens_it(
    switchboard: Switchboard, listener: Listener, tmp_path: Path
) -> None:
    # The host's listener answers the host itself: it is up.
    with socket.create_connection((LEG, PORT), timeout=2) as own:
        assert own.recv(64) == b"host secret\n"
    listener.accepted.clear()

    status, out = _connect("sb-sbt-guard-probe", LEG, PORT)
    assert status != 0 and "host secret" not in out
    assert in_ns("sb-sbt-guard-probe", f"ping -c 1 -W 1 {LEG}").returncode != 0
    assert listener.accepted == []

    # The host reaches the containers, and Consul's check of web passes.
    assert wait_until(lambda: sh("curl -s -o /dev/null -w '%{http_code}' --max-time 2 "
                                 "http://10.95.1.10:8080/").stdout == "200", 10)
    assert wait_until(lambda: _check_passing("sbt-guard-web"), 15)
    # DNS on the host address, over UDP and TCP.
    for tcp in ("", "+tcp"):
        answer = in_ns("sb-sbt-guard-probe", f"dig {tcp} +short +time=2 +tries=1 "
                                             "sbt-guard-web.service.consul")
        assert "10.95.1.10" in answer.stdout.split(), (tcp, answer.stdout, answer.stderr)
    # A VIP with no passing instance is refused by the host at once, not left to time out.
    # Refused (7), not timed out (28), and answered to the first SYN (curl's own clock:
    # one sent again after 1 s would take longer).
    refused = in_ns("sb-sbt-guard-probe", "curl -s -o /dev/null -w %{time_total} --max-time 3 "
                                          "http://10.95.1.100/")
    assert refused.returncode == 7 and float(refused.stdout) < 0.9, refused

    # A `to: host` policy opens the port to its source only.
    switchboard.up(tmp_path, OPEN, "open.yaml")
    status, out = _connect("sb-sbt-guard-probe", LEG, PORT)
    assert status == 0 and "host secret" in out
    assert listener.accepted == ["10.95.1.11"]
    status, out = _connect("sb-sbt-guard-web", LEG, PORT)
    assert status != 0 and listener.accepted == ["10.95.1.11"]
    # Containers still reach each other: the policy only concerns the host.
    assert in_ns("sb-sbt-guard-probe", "curl -s -o /dev/null -w '%{http_code}' --max-time 2 "
                 "http://10.95.1.10:8080/").stdout == "200"
