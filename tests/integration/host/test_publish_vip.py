"""A published VIP (``services.S.publish``): the host's port reaches the service's VIP from an
outside namespace (198.18.32.0/24), from the host's own address and from 127.0.0.1, balanced
over the passing instances (the instance sees the host's address on the VIP's network); a
``from: cidr:`` policy limits who reaches it; a port taken on the host or published twice is
refused and changes nothing; `down` leaves the host's nftables tables as they were."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Switchboard, sh, wait_until
from tests.integration.host.test_egress import host_state, same
from tests.outside import Outside

pytestmark = pytest.mark.integration

NAME = "sbt-out-pubvip"
HOST_PORT = 18185
VIP = "10.183.1.100"
# answers each GET with "<its name> <the client address it sees>"
SERVER = textwrap.dedent("""
    import http.server, sys
    name, port = sys.argv[1], int(sys.argv[2])
    class Who(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{name} {self.client_address[0]}".encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body)
        def log_message(self, *args): pass
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Who).serve_forever()
""")


def topology(script: Path, publish: object = HOST_PORT, name: str = NAME,
             subnet: str = "10.183.1", policies: str = "") -> str:
    def instance(n: int, port: int) -> str:  # api-3 serves on another port: never passing
        return f"""
  api-{n}:
    networks: {{lan: {{ip: {subnet}.1{n}}}}}
    command: exec {sys.executable} {script} api-{n} {port}
    services: [{{name: api, port: 8080, check: {{tcp: 8080, interval: 1s}}}}]"""
    return f"""
name: {name}
networks:
  lan: {{subnet: {subnet}.0/24}}
containers:{instance(1, 8080)}{instance(2, 8080)}{instance(3, 8081)}
services:
  api: {{vip: {subnet}.100, port: 80, publish: {publish}}}
{policies}"""


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    with Outside(32) as out:
        yield out


@pytest.fixture(scope="module")
def before(outside: Outside) -> dict[str, str]:
    """The host before the topology is up (the outside namespace already made)."""
    return host_state()


@pytest.fixture(scope="module")
def published(switchboard: Switchboard, outside: Outside, before: dict[str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("publish-vip")
    script = work / "who.py"
    script.write_text(SERVER)
    switchboard.up(work, topology(script))
    try:
        yield script
    finally:
        switchboard.cli("down", NAME, check=False)


def _get(outside: Outside | None, host: str, port: int = HOST_PORT, wait: int = 3) -> str:
    cmd = f"curl -s -m {wait} http://{host}:{port}/"
    return (outside.run(cmd) if outside else sh(cmd)).stdout


def _answers(outside: Outside | None, host: str, count: int) -> Counter[str]:
    """Who answered ``count`` new connections, and from which address they saw the client."""
    return Counter(_get(outside, host, wait=15) for _ in range(count))  # a loaded machine


def _leg_ip(switchboard: Switchboard) -> str:
    return str(switchboard.status(NAME)["networks"][0]["host_ip"])


def test_outside_reaches_the_vip_balanced_over_the_passing_instances(
        switchboard: Switchboard, published: Path, outside: Outside) -> None:
    assert wait_until(lambda: _get(outside, outside.root_ip).startswith("api-"), 30), (
        _get(outside, outside.root_ip) or switchboard.log_tail())
    leg = _leg_ip(switchboard)
    seen = _answers(outside, outside.root_ip, 30)
    # both passing instances, never the one whose check fails; each sees the host
    assert set(seen) == {f"api-1 {leg}", f"api-2 {leg}"}, seen


def test_the_host_reaches_the_vip_by_its_address_and_by_127_0_0_1(
        switchboard: Switchboard, published: Path, outside: Outside) -> None:
    assert wait_until(lambda: _get(None, "127.0.0.1").startswith("api-"), 30), (
        _get(None, "127.0.0.1"))
    leg = _leg_ip(switchboard)
    for host in (outside.root_ip, "127.0.0.1"):
        seen = _answers(None, host, 20)
        assert set(seen) == {f"api-1 {leg}", f"api-2 {leg}"}, (host, seen)


def test_status_services_and_graph_show_the_published_vip(
        switchboard: Switchboard, published: Path) -> None:
    line = f"service api: host port {HOST_PORT}/tcp on every host -> VIP {VIP}:80"
    assert line in switchboard.cli("status", NAME).stdout
    vips = json.loads(switchboard.cli("services", "-t", NAME, "--json").stdout)["vips"]
    assert [(v["service"], v["published"]) for v in vips] == [("api", f"{HOST_PORT}/tcp")]
    assert f"host port {HOST_PORT}/tcp" in switchboard.cli("services", "-t", NAME).stdout
    graph = switchboard.cli("graph", NAME).stdout
    assert f"published on host port {HOST_PORT}/tcp" in graph, graph


def test_a_cidr_policy_limits_who_reaches_the_published_vip(
        switchboard: Switchboard, published: Path, outside: Outside, tmp_path: Path) -> None:
    assert wait_until(lambda: _get(outside, outside.root_ip).startswith("api-"), 30)
    rule = "policies:\n  - {from: \"cidr:198.18.99.0/24\", to: service:api}\n"
    try:
        switchboard.up(tmp_path, topology(published, policies=rule))
        assert wait_until(lambda: _get(outside, outside.root_ip) == "", 30)
        assert _get(None, "127.0.0.1") == ""  # the host needs a rule for its address too
        switchboard.up(tmp_path, topology(published, policies=rule.replace("99", "32")))
        assert wait_until(lambda: _get(outside, outside.root_ip).startswith("api-"), 30)
    finally:
        switchboard.up(tmp_path, topology(published))
    assert wait_until(lambda: _get(None, "127.0.0.1").startswith("api-"), 30)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    return path


def test_a_port_taken_on_the_host_or_published_twice_is_refused_and_changes_nothing(
        switchboard: Switchboard, published: Path, tmp_path: Path) -> None:
    before = switchboard.cli("status", NAME, "--json").stdout
    with socket.create_server(("127.0.0.1", HOST_PORT + 1)):
        taken = switchboard.cli("up", str(_file(tmp_path, topology(
            published, HOST_PORT + 1))), check=False)
    assert taken.returncode != 0
    assert (f"services.api.publish: host port {HOST_PORT + 1}/tcp is already taken on this "
            "host") in taken.stdout + taken.stderr
    twice = switchboard.cli("up", str(_file(tmp_path, topology(
        published, name="sbt-out-pubvip2", subnet="10.183.2"))), check=False)
    message = " ".join((twice.stdout + twice.stderr).split())
    assert twice.returncode != 0
    assert (f"service 'api' gets the same published host port ({HOST_PORT}/tcp) as service "
            f"'api' of applied topology '{NAME}'; publish another host port") in message
    assert "sbt-out-pubvip2" not in switchboard.cli("status", "--json").stdout
    assert switchboard.cli("status", NAME, "--json").stdout == before


def _ours(before: dict[str, str], after: dict[str, str], table: str
          ) -> tuple[dict[str, str], dict[str, str]]:
    """``before`` and ``after`` without what other work on this machine changes meanwhile:
    other daemons' tables, and, while another daemon has a table (it turns forwarding on
    interfaces on and off), the forwarding flags."""
    others = {k for k in before.keys() | after.keys()
              if k.startswith("nft table ip switchboard_") and k != table}

    def keep(key: str) -> bool:
        return key not in others and not (others and (key.startswith("forwarding ")
                                                      or key == "ip_forward"))
    return ({k: v for k, v in before.items() if keep(k)},
            {k: v for k, v in after.items() if keep(k)})


def test_down_leaves_the_hosts_tables_as_they_were(
        switchboard: Switchboard, published: Path, outside: Outside,
        before: dict[str, str]) -> None:
    assert wait_until(lambda: _get(outside, outside.root_ip).startswith("api-"), 30)
    table = f"nft table ip switchboard_{switchboard.bridge}"
    assert f"dnat to {VIP}:80" in host_state()[table]
    switchboard.cli("down", NAME)
    assert wait_until(lambda: table not in host_state() or table in before, 30)
    assert wait_until(lambda: same(*_ours(before, host_state(), table)), 30), _ours(
        before, host_state(), table)
    assert _get(outside, outside.root_ip) == ""
