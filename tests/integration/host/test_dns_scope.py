"""Names scoped to their topology, with real clients: two topologies that both define the
services ``api`` and ``web`` are up at once, and ``dig``/``getent``/``curl`` inside their
containers see only their own instances (A, SRV, TAG forms, over UDP and TCP); each
topology's ``NAME.vip.consul`` is its VIP; Consul on the host shows every instance with its
topology; the seed API's Registry/Discoverer instances are seen by everyone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import consul
import pytest

from discovery.registry import Discoverer, Registry
from tests.harness import Switchboard, in_ns, pings, sh, wait_until

pytestmark = pytest.mark.integration

A, B = "sbt-scope-a", "sbt-scope-b"
NET = {A: "10.241.1", B: "10.241.2"}
API = {A: {f"{NET[A]}.11", f"{NET[A]}.12"}, B: {f"{NET[B]}.11"}}
WEB = {A: f"{NET[A]}.20", B: f"{NET[B]}.20"}
VIP = {A: f"{NET[A]}.100", B: f"{NET[B]}.100"}
SERVE = "command: python3 -m http.server 8080"
CHECK = "check: {tcp: 8080, interval: 1s}"


def topology(name: str) -> str:
    net = NET[name]
    second = f"""
  api-2:
    networks: {{lan: {{ip: {net}.12}}}}
    {SERVE}
    services: [{{name: api, port: 8080, tags: [v2], {CHECK}}}]""" if name == A else ""
    return f"""
name: {name}
networks:
  lan: {{subnet: {net}.0/24}}
containers:
  api-1:
    networks: {{lan: {{ip: {net}.11}}}}
    {SERVE}
    services: [{{name: api, port: 8080, tags: [v1], {CHECK}}}]{second}
  web:
    networks: {{lan: {{ip: {net}.20}}}}
    {SERVE}
    services: [{{name: web, port: 8080, {CHECK}}}]
  client:
    networks: {{lan: {{ip: {net}.30}}}}
services:
  api: {{vip: {net}.100, port: 80}}
"""


def client(name: str) -> str:
    return f"sb-{name}-client"


def lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip()}


def dig(netns: str, args: str) -> set[str]:
    return lines(in_ns(netns, f"dig +short +time=2 +tries=1 {args}").stdout)


def host_dig(args: str) -> set[str]:
    return lines(sh(f"dig +short +time=2 +tries=1 @127.0.0.1 -p 8600 {args}").stdout)


def srv_addresses(netns: str, name: str) -> set[tuple[str, str]]:
    """(address, port) of each SRV answer, each target resolved inside the container."""
    found = set()
    for _, _, port, target in (line.split() for line in dig(netns, f"SRV {name}")):
        found |= {(address, port) for address in dig(netns, target)}
    return found


@pytest.fixture(scope="module")
def two(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    tmp = tmp_path_factory.mktemp("scope")
    try:
        for name in (A, B):
            switchboard.up(tmp, topology(name), name=f"{name}.yaml")
        health = consul.Consul().health

        def passing() -> bool:
            mine = [e for e in health.service("api", passing=True)[1] + health.service(
                "web", passing=True)[1] if e["Service"]["Meta"].get(
                "switchboard-topology") in (A, B)]
            return len(mine) == 5
        assert wait_until(passing, 20), "the instances never passed their checks"
        yield
    finally:
        for name in (A, B):
            switchboard.cli("down", name, check=False)


def test_a_name_in_two_topologies_answers_each_with_its_own_instances(two):
    for name in (A, B):
        assert dig(client(name), "api.service.consul") == API[name]
        assert dig(client(name), "web.service.consul") == {WEB[name]}
        assert lines(in_ns(client(name), "dig +tcp +short api.service.consul").stdout) \
            == API[name]


def test_srv_answers_are_scoped_and_their_targets_resolve_inside(two):
    for name in (A, B):
        assert srv_addresses(client(name), "api.service.consul") == {
            (ip, "8080") for ip in API[name]}
        assert srv_addresses(client(name), "_web._tcp.service.consul") == {
            (WEB[name], "8080")}


def test_tag_names_are_scoped_too(two):
    assert dig(client(A), "v1.api.service.consul") == {f"{NET[A]}.11"}
    assert dig(client(A), "v2.api.service.consul") == {f"{NET[A]}.12"}
    assert dig(client(B), "v1.api.service.consul") == {f"{NET[B]}.11"}
    out = in_ns(client(B), "dig +time=2 +tries=1 v2.api.service.consul").stdout
    assert "status: NXDOMAIN" in out  # A has a v2 instance; B does not see it


def test_programs_in_a_container_get_scoped_names_through_the_search_domain(two):
    for name in (A, B):
        out = in_ns(client(name), "getent ahostsv4 api").stdout
        assert {line.split()[0] for line in lines(out)} == API[name]


def test_each_topologys_vip_name_is_its_vip_and_carries_traffic(two):
    for name in (A, B):
        assert dig(client(name), "api.vip.consul") == {VIP[name]}
        assert srv_addresses(client(name), "api.vip.consul") == {(VIP[name], "80")}
        curl = in_ns(client(name), "curl -sf -m 3 -o /dev/null http://api.vip.consul/")
        assert curl.returncode == 0, curl.stderr
    assert "status: NXDOMAIN" in in_ns(client(A), "dig +time=2 web.vip.consul").stdout


def test_another_topologys_instances_are_unreachable_as_well_as_unnamed(two):
    assert not pings(client(A), f"{NET[B]}.11")
    assert not pings(client(B), f"{NET[A]}.11")


def test_consul_on_the_host_shows_every_instance_marked_with_its_topology(two):
    assert host_dig("api.service.consul") >= API[A] | API[B]
    assert host_dig(f"topology-{A}.api.service.consul") == API[A]
    assert host_dig(f"topology-{B}.api.service.consul") == API[B]
    _, entries = consul.Consul().health.service("api")
    marked = {e["Service"]["Address"]: e["Service"]["Meta"].get("switchboard-topology")
              for e in entries}
    assert {ip: marked[ip] for ip in API[A] | API[B]} == {
        **dict.fromkeys(API[A], A), **dict.fromkeys(API[B], B)}


def test_resolve_and_services_take_a_topology(two, switchboard):
    for name in (A, B):
        out = switchboard.cli("resolve", "--topology", name, "api").stdout
        assert lines(out) == {f"{ip}:8080" for ip in API[name]}
        vip = switchboard.cli("resolve", "-t", name, "api.vip.consul").stdout
        assert lines(vip) == {f"{VIP[name]}:80"}
        listed = json.loads(switchboard.cli("services", "-t", name, "--json").stdout)
        assert {r["address"] for r in listed["instances"] if r["service"] == "api"} \
            == API[name]
        assert all(not any(t.startswith("topology-") for t in r["tags"])
                   for r in listed["instances"])
    everyone = lines(switchboard.cli("resolve", "api").stdout)
    assert everyone >= {f"{ip}:8080" for ip in API[A] | API[B]}
    missing = switchboard.cli("resolve", "-t", "sbt-scope-none", "api", check=False)
    assert missing.returncode == 1
    assert "topology sbt-scope-none has no network on this host" in missing.stderr


def test_registry_instances_belong_to_no_topology_and_every_container_sees_them(two):
    registry = Registry("sbt-scope")
    try:
        registry.register("sbtscope-reg", "10.241.9.9", 9999)
        assert Discoverer("d", registry).resolve("sbtscope-reg") == [("10.241.9.9", 9999)]
        for name in (A, B):
            assert wait_until(lambda n=name: dig(client(n), "sbtscope-reg.service.consul")
                              == {"10.241.9.9"}, 5)
            assert srv_addresses(client(name), "sbtscope-reg.service.consul") == {
                ("10.241.9.9", "9999")}
        registry.register("api", "10.241.9.10", 8080)  # shared: next to each topology's own
        for name in (A, B):
            assert dig(client(name), "api.service.consul") == API[name] | {"10.241.9.10"}
    finally:
        registry.deregister()
