"""The compiled pipeline, run on an in-memory flow table: packets in, ports out."""

from __future__ import annotations

from typing import Any

import pytest

from controller.pipeline.compiler import compile_flows
from controller.switch.sync import diff_flows
from sbcore.model import load_topology
from sbcore.plan.hostplan import Endpoint, TopologyPlan, plan_topology
from tests.unit.controller.pipeline.fakeoftable import FakeOFTable

SHOP = """
name: shop
networks:
  front: {subnet: 10.10.1.0/24}
  back: {subnet: 10.10.2.0/24}
containers:
  web: {networks: {front: {ip: 10.10.1.10}}}
  web2: {networks: [front]}
  api: {networks: [back]}
"""

OTHER = """
name: other
networks:
  lan: {subnet: 10.20.1.0/24}
containers:
  peer: {networks: [lan]}
"""


def _plan(text: str) -> TopologyPlan:
    return plan_topology(load_topology(text))


def _ports(*plans: TopologyPlan) -> dict[str, int]:
    names = [ep.port for p in plans for ep in p.endpoints()]
    names += [n.host_leg.port for p in plans for n in p.networks]
    return {name: number for number, name in enumerate(sorted(names), start=1)}


@pytest.fixture()
def shop() -> tuple[TopologyPlan, dict[str, int], FakeOFTable]:
    plan = _plan(SHOP)
    other = _plan(OTHER)
    ports = _ports(plan, other)
    table = FakeOFTable()
    table.apply(compile_flows([plan, other], ports))
    return plan, ports, table


def _ep(plan: TopologyPlan, container: str) -> Endpoint:
    return next(ep for ep in plan.endpoints() if ep.container == container)


def _ip_packet(src: Endpoint, ports: dict[str, int], dst_mac: str, dst_ip: str,
               **overrides: Any) -> dict[str, Any]:
    pkt = {"in_port": ports[src.port], "eth_src": src.mac, "eth_dst": dst_mac,
           "eth_type": 0x0800, "ipv4_src": str(src.ip), "ipv4_dst": dst_ip, "ip_proto": 1}
    pkt.update(overrides)
    return pkt


def _arp_request(src: Endpoint, ports: dict[str, int], target: str) -> dict[str, Any]:
    return {"in_port": ports[src.port], "eth_src": src.mac, "eth_dst": "ff:ff:ff:ff:ff:ff",
            "eth_type": 0x0806, "arp_op": 1, "arp_spa": str(src.ip), "arp_sha": src.mac,
            "arp_tpa": target, "arp_tha": "00:00:00:00:00:00"}


def test_same_network_packet_reaches_exactly_the_destination_port(shop):
    plan, ports, table = shop
    web, web2 = _ep(plan, "web"), _ep(plan, "web2")
    result = table.process(_ip_packet(web, ports, web2.mac, str(web2.ip)))
    assert result.ports == [ports[web2.port]]
    assert result.stages == ["classifier", "conntrack", "service_lb", "l3_router", "l2_forward"]


def test_arp_for_a_neighbour_is_answered_by_the_switch(shop):
    plan, ports, table = shop
    web, web2 = _ep(plan, "web"), _ep(plan, "web2")
    result = table.process(_arp_request(web, ports, str(web2.ip)))
    assert result.ports == [ports[web.port]]
    reply = result.outputs[0][1]
    assert reply["arp_op"] == 2
    assert reply["arp_sha"] == web2.mac and reply["eth_src"] == web2.mac
    assert reply["arp_spa"] == str(web2.ip)
    assert reply["arp_tpa"] == str(web.ip) and reply["eth_dst"] == web.mac


def test_arp_for_the_gateway_is_answered(shop):
    plan, ports, table = shop
    web = _ep(plan, "web")
    front = next(n for n in plan.networks if n.name == "front")
    result = table.process(_arp_request(web, ports, "10.10.1.1"))
    assert result.outputs[0][1]["arp_sha"] == front.gateway_mac


def test_arp_for_an_address_on_another_network_is_not_answered(shop):
    plan, ports, table = shop
    web, api = _ep(plan, "web"), _ep(plan, "api")
    assert table.process(_arp_request(web, ports, str(api.ip))).ports == []


def test_networks_without_a_router_are_isolated(shop):
    plan, ports, table = shop
    web, api = _ep(plan, "web"), _ep(plan, "api")
    assert table.process(_ip_packet(web, ports, api.mac, str(api.ip))).ports == []
    front = next(n for n in plan.networks if n.name == "front")
    assert table.process(_ip_packet(web, ports, front.gateway_mac, str(api.ip))).ports == []


def test_topologies_are_isolated_from_each_other(shop):
    plan, ports, table = shop
    other = _plan(OTHER)
    web, peer = _ep(plan, "web"), _ep(other, "peer")
    assert table.process(_ip_packet(web, ports, peer.mac, str(peer.ip))).ports == []
    assert table.process(_arp_request(web, ports, str(peer.ip))).ports == []


def test_spoofed_source_mac_is_dropped(shop):
    plan, ports, table = shop
    web, web2 = _ep(plan, "web"), _ep(plan, "web2")
    pkt = _ip_packet(web, ports, web2.mac, str(web2.ip), eth_src="02:de:ad:be:ef:00")
    result = table.process(pkt)
    assert result.ports == [] and result.stages == ["classifier"]


def test_spoofed_source_ip_is_dropped(shop):
    plan, ports, table = shop
    web, web2 = _ep(plan, "web"), _ep(plan, "web2")
    pkt = _ip_packet(web, ports, web2.mac, str(web2.ip), ipv4_src="10.10.1.99")
    assert table.process(pkt).ports == []


def test_spoofed_arp_sender_is_dropped(shop):
    plan, ports, table = shop
    web, web2 = _ep(plan, "web"), _ep(plan, "web2")
    pkt = _arp_request(web, ports, str(web2.ip))
    pkt["arp_spa"] = str(web2.ip)  # claims to be web2
    assert table.process(pkt).ports == []


def test_host_leg_reaches_every_container_of_its_network(shop):
    plan, ports, table = shop
    for net in plan.networks:
        leg = net.host_leg
        for ep in plan.endpoints():
            if ep.network != net.name:
                continue
            pkt = {"in_port": ports[leg.port], "eth_src": leg.mac, "eth_dst": ep.mac,
                   "eth_type": 0x0800, "ipv4_src": str(leg.ip), "ipv4_dst": str(ep.ip)}
            assert table.process(pkt).ports == [ports[ep.port]]


def test_host_leg_cannot_forward_traffic_from_other_addresses(shop):
    plan, ports, table = shop
    front = next(n for n in plan.networks if n.name == "front")
    web2, api = _ep(plan, "web2"), _ep(plan, "api")
    pkt = {"in_port": ports[front.host_leg.port], "eth_src": front.host_leg.mac,
           "eth_dst": web2.mac, "eth_type": 0x0800, "ipv4_src": str(api.ip),
           "ipv4_dst": str(web2.ip)}
    assert table.process(pkt).ports == []


def test_unplugged_port_gets_no_flows():
    plan = _plan(SHOP)
    ports = _ports(plan)
    web = _ep(plan, "web")
    del ports[web.port]
    flows = compile_flows([plan], ports)
    assert all(("in_port", None) not in f.match for f in flows)
    assert not any(f.owner.startswith("shop/web/") for f in flows)


def test_compiling_twice_gives_the_same_flows_and_replay_changes_nothing():
    plan = _plan(SHOP)
    ports = _ports(plan)
    first, second = compile_flows([plan], ports), compile_flows([plan], ports)
    assert first == second
    table = FakeOFTable()
    assert table.apply(first) == len(first)
    assert table.apply(second) == 0
    assert not diff_flows(second, {f.cookie for f in first})


def test_flows_grow_linearly_with_containers():
    def count(n: int) -> int:
        containers = "\n".join(f"  c{i}: {{networks: [lan]}}" for i in range(n))
        plan = _plan(f"name: big\nnetworks:\n  lan: {{subnet: 10.30.0.0/16}}\n"
                     f"containers:\n{containers}\n")
        return len(compile_flows([plan], _ports(plan)))

    per_container = count(20) - count(10)
    assert count(40) - count(20) == 2 * per_container


def test_removing_a_container_diffs_to_deleting_only_its_flows():
    plan = _plan(SHOP)
    ports = _ports(plan)
    before = compile_flows([plan], ports)
    smaller = _plan(SHOP.replace("  web2: {networks: [front]}\n", ""))
    after = compile_flows([smaller], ports)
    diff = diff_flows(after, {f.cookie for f in before})
    deleted = [f for f in before if f.cookie in diff.delete]
    assert not diff.add
    assert deleted and all(f.owner == "shop/web2/front" for f in deleted)


def test_cookies_name_the_stage_and_are_unique():
    from controller.pipeline.flows import cookie_stage

    plan = _plan(SHOP)
    flows = compile_flows([plan], _ports(plan))
    assert len({f.cookie for f in flows}) == len(flows)
    assert all(cookie_stage(f.cookie) == f.table for f in flows)
