"""``switchboard services`` and ``switchboard resolve`` against the real Consul agent."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import consul
import pytest

from tests.harness import Switchboard, in_ns, wait_until

pytestmark = pytest.mark.integration

TOPOLOGY = "sbt-svc"
WEB_1, WEB_2, VIP = "10.236.16.11", "10.236.16.12", "10.236.16.100"

SVC_LAB = f"""
name: {TOPOLOGY}
networks:
  lan: {{subnet: 10.236.16.0/24}}
containers:
  web-1:
    networks: {{lan: {{ip: {WEB_1}}}}}
    command: python3 -m http.server 8080
    services:
      - {{name: sbtsvc-web, port: 8080, tags: [v1, blue], check: {{http: /, interval: 1s}}}}
  web-2:
    networks: {{lan: {{ip: {WEB_2}}}}}
    services:
      - {{name: sbtsvc-web, port: 8080, tags: [v2], check: {{tcp: 8080, interval: 1s}}}}
  client:
    networks: [lan]
services:
  sbtsvc-web: {{vip: {VIP}, port: 80}}
"""


def listing(sb: Switchboard, *args: str) -> dict[str, Any]:
    return json.loads(sb.cli("services", "--json", *args).stdout)


def health_of(sb: Switchboard) -> dict[str, str]:
    return {r["instance"]: r["health"] for r in listing(sb, "-t", TOPOLOGY)["instances"]}


def backends(sb: Switchboard) -> list[str]:
    [row] = listing(sb, "-t", TOPOLOGY)["vips"]
    return [b["container"] for b in row["backends"]]


@pytest.fixture(scope="module")
def lab(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Switchboard]:
    switchboard.up(tmp_path_factory.mktemp("svc"), SVC_LAB)
    assert wait_until(lambda: health_of(switchboard) == {"web-1": "passing",
                                                         "web-2": "critical"}, 15)
    assert wait_until(lambda: backends(switchboard) == ["web-1"], 10)
    yield switchboard
    switchboard.cli("down", TOPOLOGY, check=False)


def test_services_json_lists_each_instance_field_by_field(lab):
    rows = listing(lab, "-t", TOPOLOGY)["instances"]
    for row in rows:
        assert set(row.pop("checks")) == {"serfHealth", f"service:{row['id']}"}
        row.pop("node")
    assert rows == [
        {"service": "sbtsvc-web", "instance": "web-1", "topology": TOPOLOGY,
         "id": "sb.sbt-svc.web-1.sbtsvc-web", "address": WEB_1, "port": 8080,
         "tags": ["v1", "blue"], "health": "passing"},
        {"service": "sbtsvc-web", "instance": "web-2", "topology": TOPOLOGY,
         "id": "sb.sbt-svc.web-2.sbtsvc-web", "address": WEB_2, "port": 8080,
         "tags": ["v2"], "health": "critical"},
    ]
    _, entries = consul.Consul().health.service("sbtsvc-web", passing=True)
    assert [e["Service"]["ID"] for e in entries] == ["sb.sbt-svc.web-1.sbtsvc-web"]


def test_services_json_shows_the_vip_and_the_backends_the_switch_uses(lab):
    assert listing(lab, "-t", TOPOLOGY)["vips"] == [{
        "service": "sbtsvc-web", "topology": TOPOLOGY, "host": "test-host", "vip": VIP,
        "port": 80, "published": None,
        "backends": [{"container": "web-1", "ip": WEB_1, "port": 8080}],
    }]
    assert lab.status(TOPOLOGY)["services"] == [{
        "name": "sbtsvc-web", "vip": VIP, "port": 80, "published": None,
        "backends": [{"container": "web-1", "ip": WEB_1, "port": 8080}],
    }]


def test_backends_follow_health(lab):
    server = subprocess.Popen(
        ["ip", "netns", "exec", "sb-sbt-svc-web-2", "python3", "-m", "http.server", "8080"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: backends(lab) == ["web-1", "web-2"], 10)
        assert health_of(lab) == {"web-1": "passing", "web-2": "passing"}
    finally:
        server.kill()
        server.wait()
    assert wait_until(lambda: backends(lab) == ["web-1"], 10)


def test_services_table_shows_instances_and_vips(lab):
    out = lab.cli("services", "-t", TOPOLOGY).stdout
    lines = [line.split() for line in out.splitlines()]
    assert ["sbtsvc-web", "web-1", TOPOLOGY, f"{WEB_1}:8080", "v1,blue", "passing"] in lines
    assert ["sbtsvc-web", "web-2", TOPOLOGY, f"{WEB_2}:8080", "v2", "critical"] in lines
    assert ["sbtsvc-web", TOPOLOGY, f"{VIP}:80", "-", "web-1", f"{WEB_1}:8080",
            "test-host"] in lines  # "-": not published


def test_services_shows_foreign_services_only_with_all(lab):
    client = consul.Consul()
    client.agent.service.register("sbtsvc-foreign", service_id="sbtsvc-foreign-1",
                                  address="192.0.2.9", port=9, tags=["x"])
    try:
        assert "sbtsvc-foreign" not in {r["service"] for r in listing(lab)["instances"]}
        rows = [r for r in listing(lab, "--all")["instances"] if r["service"] == "sbtsvc-foreign"]
        assert [(r["instance"], r["address"], r["port"], r["tags"], r["health"])
                for r in rows] == [("sbtsvc-foreign-1", "192.0.2.9", 9, ["x"], "passing")]
    finally:
        client.agent.service.deregister("sbtsvc-foreign-1")


def test_resolve_prints_the_passing_instances(lab):
    for name in ("sbtsvc-web", "v1.sbtsvc-web", "sbtsvc-web.service.consul"):
        assert lab.cli("resolve", name).stdout == f"{WEB_1}:8080\n", name


def test_resolve_answers_what_a_container_gets(lab):
    srv = in_ns("sb-sbt-svc-client", "dig +short SRV sbtsvc-web.service.consul").stdout.split()
    _, _, port, target = srv
    [address] = in_ns("sb-sbt-svc-client", f"dig +short {target}").stdout.split()
    assert lab.cli("resolve", "sbtsvc-web").stdout == f"{address}:{port}\n"


def test_resolve_of_an_unknown_service_fails_with_a_sentence(lab):
    result = lab.cli("resolve", "sbtsvc-nothing", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert "sbtsvc-nothing.service.consul: no passing instance" in result.stderr


def test_resolve_without_consul_dns_says_where_it_looked(lab):
    result = lab.cli("resolve", "sbtsvc-web", "--dns", "127.0.0.1:9", "--timeout", "0.5",
                     check=False)
    assert result.returncode == 1
    assert "127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


MANY = [f"10.236.17.{i}" for i in range(11, 16)]


def lines(text: str) -> set[str]:
    return set(text.split())


def test_every_instance_of_a_service_with_more_than_three_is_answered(switchboard, tmp_path):
    """Consul answers at most 3 records over UDP without EDNS: `resolve` asks with EDNS, and
    a container's resolver (glibc, no EDNS) is told the answer was trimmed (TC) and asks
    again over TCP, through the daemon's forwarder, for all five."""
    instances = "".join(
        f"  m{i}: {{networks: {{lan: {{ip: {ip}}}}}, services: [{{name: sbtmany, port: 80}}]}}\n"
        for i, ip in enumerate(MANY))
    switchboard.up(tmp_path, "name: sbt-many\nnetworks:\n  lan: {subnet: 10.236.17.0/24}\n"
                   "containers:\n  client: {networks: [lan]}\n" + instances)
    try:
        assert wait_until(lambda: len(lines(switchboard.cli("resolve", "sbtmany",
                                                            check=False).stdout)) == 5, 15)
        assert lines(switchboard.cli("resolve", "sbtmany").stdout) == \
            {f"{ip}:80" for ip in MANY}
        out = in_ns("sb-sbt-many-client", "getent ahostsv4 sbtmany.service.consul").stdout
        assert {line.split()[0] for line in out.splitlines()} == set(MANY)
    finally:
        switchboard.cli("down", "sbt-many", check=False)
