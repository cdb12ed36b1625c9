"""Published VIPs (``services.S.publish``): validation, the port claim, the host's table."""

from __future__ import annotations

import pytest

from plumbing.hostnat import Dnat, HostNat, Leg, _dnats, render
from plumbing.listeners import parse_table
from sbcore.model import TopologyError, load_topology
from sbcore.plan.admission import conflicts
from sbcore.plan.hostplan import plan_topology
from tests.unit.controller.pipeline.test_pipeline_l3 import SHOP

PUBLISHED = SHOP.replace("api: {vip: 10.10.2.100, port: 80}",
                         "api: {vip: 10.10.2.100, port: 80, publish: 8080}")


def _error(text: str) -> str:
    with pytest.raises(TopologyError) as info:
        load_topology(text)
    return str(info.value)


def test_a_published_vip_is_planned_on_its_network_for_anyone_without_policies():
    plan = plan_topology(load_topology(PUBLISHED))
    (vip,) = plan.published_vips
    assert (vip.service, vip.network, str(vip.vip), vip.port, vip.proto, vip.host_port) == (
        "api", "back", "10.10.2.100", 80, "tcp", 8080)
    assert vip.sources is None
    udp = plan_topology(load_topology(PUBLISHED.replace("publish: 8080", "publish: 5353/udp")))
    assert (udp.published_vips[0].proto, udp.published_vips[0].host_port) == ("udp", 5353)


def test_with_policies_only_cidr_rules_to_the_service_reach_a_published_vip():
    text = PUBLISHED + """
policies:
  - {from: web, to: service:api}
  - {from: "cidr:198.18.7.0/24", to: service:api}
  - {from: "cidr:198.18.9.0/24", to: service:api, ports: [udp/8080]}
  - {from: "cidr:198.18.8.0/24", to: api-1}
"""
    (vip,) = plan_topology(load_topology(text)).published_vips
    assert vip.sources == ("198.18.7.0/24",)  # tcp to the instances' port; not to api-1 only
    closed = PUBLISHED + "policies:\n  - {from: web, to: service:api}\n"
    assert plan_topology(load_topology(closed)).published_vips[0].sources == ()


def test_a_published_vip_needs_a_vip_and_a_port_and_a_good_value():
    assert "services.api.publish: service 'api' has no vip" in _error(
        PUBLISHED.replace("vip: 10.10.2.100, port: 80, ", ""))
    assert "services.api.publish: bad publish 'http': write a host port, like 8080" in _error(
        PUBLISHED.replace("publish: 8080", "publish: http"))
    assert "ports go from 1 to 65535" in _error(PUBLISHED.replace("publish: 8080",
                                                                  "publish: 70000"))
    listed = _error(PUBLISHED.replace("publish: 8080", "publish: [8080]"))
    assert "services.api.publish: expected a host port, like 8080 or 5353/udp, got [8080]" \
        in listed and "publish.int" not in listed
    no_port = PUBLISHED.replace("port: 80, publish", "publish")
    assert plan_topology(load_topology(no_port)).published_vips[0].port == 8080  # instances'
    differ = no_port.replace("services: [{name: api, port: 8080}]\n  api-3",
                             "services: [{name: api, port: 8081}]\n  api-3")
    assert "instances' ports differ: add port" in _error(differ)


def test_a_host_port_is_claimed_once_by_containers_and_services():
    twice = PUBLISHED.replace("solo: {networks: {lone: {ip: 10.10.3.10}}}",
                              'solo: {networks: {lone: {ip: 10.10.3.10}}, publish: ["8080:80"]}')
    message = _error(twice)
    assert "services.api.publish: host port 8080/tcp is already published by container " \
           "'solo'; publish another host port" in message
    other = load_topology(
        "name: other\nnetworks: {n: {subnet: 10.20.1.0/24}}\n"
        "containers: {c: {networks: [n], publish: ['8080:80']}}\n")
    (problem,) = conflicts(load_topology(PUBLISHED), [other])
    assert "service 'api' gets the same published host port (8080/tcp) as container 'c' of " \
           "applied topology 'other'; publish another host port" in problem
    assert "rename" not in problem
    assert conflicts(load_topology(PUBLISHED.replace("publish: 8080", "publish: 8080/udp")),
                     [other]) == []


def test_the_host_table_dnats_a_published_vip_and_masquerades_it():
    plan = plan_topology(load_topology(PUBLISHED))
    leg = next(n for n in plan.networks if n.name == "back").host_leg
    wanted = _dnats(plan, {leg.port: 7})
    assert wanted == [("back", "services.api.publish",
                       Dnat("tcp", 8080, "10.10.2.100", 80, None, masquerade=True))]
    legs = [Leg(leg.port, str(leg.ip), "10.10.2.0/24", False, True)]
    script = render("switchboard", legs, [], [d for _, _, d in wanted])
    rule = "fib daddr type local tcp dport 8080 dnat to 10.10.2.100:80"
    assert f'iifname != {{ "{leg.port}" }} {rule}' in script and f"    {rule}\n" in script
    assert "ip daddr { 10.10.2.100 } ct status dnat masquerade" in script
    assert "ip saddr 127.0.0.0/8 ct status dnat masquerade" in script
    assert _dnats(plan, {}) == []  # its leg not plugged in: nothing


def test_the_host_table_limits_a_published_vip_to_its_sources():
    legs = [Leg("sbhaaa", "10.10.2.254", "10.10.2.0/24", False, True)]
    some = Dnat("tcp", 8080, "10.10.2.100", 80, ("198.18.7.0/24",), masquerade=True)
    assert ("fib daddr type local ip saddr { 198.18.7.0/24 } tcp dport 8080 dnat to "
            "10.10.2.100:80") in render("t", legs, [], [some])
    nobody = Dnat("tcp", 8080, "10.10.2.100", 80, (), masquerade=True)
    assert "dport 8080" not in render("t", legs, [], [nobody])


def test_the_socket_tables_give_listeners_and_udp_servers_only():
    tcp = """  sl  local_address rem_address   st tx_queue rx_queue
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000
   1: 0100007F:1F91 0100007F:9C40 01 00000000:00000000 00:00000000 00000000
"""
    assert parse_table(tcp, "0A") == {8080}
    udp6 = """  sl  local_address                         remote_address
   0: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 0
"""
    assert parse_table(udp6, "07") == {5353}


def test_a_port_something_listens_on_is_not_published_and_is_the_topology_error(
        tmp_path, monkeypatch):
    import plumbing.hostnat as hostnat
    monkeypatch.setattr(hostnat, "listening", lambda: {("tcp", 8080)})
    nat = HostNat("sb-test", tmp_path)
    errors: dict[str, str] = {}
    wanted = [("services.api.publish", Dnat("tcp", 8080, "10.10.2.100", 80)),
              ("containers.web.publish", Dnat("tcp", 8081, "10.10.1.10", 80))]
    kept = nat._unclaimed("shop", wanted, errors)
    assert kept == [wanted[1][1]]
    assert errors["shop"].startswith("services.api.publish: host port 8080/tcp is already "
                                     "taken on this host")
    nat.claimed = {("tcp", 8080)}  # published before the listener came: stays published
    assert nat._unclaimed("shop", wanted, {}) == [d for _, d in wanted]


def test_plan_graph_and_the_status_rows_show_a_published_vip():
    from controller.daemon.report import service_rows
    from sbcore.plan.changes import diff, render
    from switchboard.cli.graph import picture, to_mermaid
    from tests.unit.sbcore.plan.test_changes import side
    before = side(SHOP)
    after = side(PUBLISHED, before)
    lines = "\n".join(render(diff(before, after)))
    assert "publish: 8080 (new)" in lines
    assert "published on host port 8080" in "\n".join(render(diff(None, after)))
    moved = "\n".join(render(diff(after, side(PUBLISHED.replace("publish: 8080",
                                                                "publish: 8081"), after))))
    assert "publish: 8080 -> 8081" in moved
    assert "published on host port 8080/tcp (every host)" in to_mermaid(
        [picture(load_topology(PUBLISHED))])
    (row,) = service_rows(plan_topology(load_topology(PUBLISHED)), {})
    assert row["published"] == "8080/tcp"
    assert service_rows(plan_topology(load_topology(SHOP)), {})[0]["published"] is None


def test_route_localnet_is_turned_on_where_it_was_off_recorded_and_put_back(
        tmp_path, monkeypatch):
    import json

    import plumbing.hostnat as hostnat
    conf = tmp_path / "conf"
    for leg, value in (("sbhaaa", "0"), ("sbhbbb", "1")):
        (conf / leg).mkdir(parents=True)
        (conf / leg / "route_localnet").write_text(value)
    monkeypatch.setattr(hostnat, "CONF", conf)
    nat = HostNat("sb-test", tmp_path / "state")
    nat._route_localnet({"sbhaaa", "sbhbbb"})
    assert (conf / "sbhaaa" / "route_localnet").read_text() == "1"
    assert nat.localnet == ["sbhaaa"]  # sbhbbb was on already: not ours to put back
    assert json.loads(nat.record.read_text())["route_localnet"] == ["sbhaaa"]
    nat._route_localnet({"sbhbbb"})  # sbhaaa publishes nothing more
    assert (conf / "sbhaaa" / "route_localnet").read_text() == "0"
    assert (conf / "sbhbbb" / "route_localnet").read_text() == "1"
    nat._route_localnet({"sbhaaa"})
    killed = HostNat("sb-test", tmp_path / "state")  # the next start, after a SIGKILL
    monkeypatch.setattr(killed, "available", lambda: False)
    killed.start()
    assert (conf / "sbhaaa" / "route_localnet").read_text() == "0"
    assert not killed.record.exists()
