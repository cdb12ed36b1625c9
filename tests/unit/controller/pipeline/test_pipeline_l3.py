"""Routing, policies and service VIPs on the in-memory switch (with conntrack)."""

from __future__ import annotations

from typing import Any

from controller.pipeline.compiler import compile_pipeline, port_ranges
from sbcore.model import load_topology
from sbcore.plan.hostplan import Endpoint, NetworkPlan, TopologyPlan, plan_topology
from tests.unit.controller.pipeline.fakeoftable import FakeOFTable

SHOP = """
name: shop
networks:
  front: {subnet: 10.10.1.0/24}
  back: {subnet: 10.10.2.0/24}
  lone: {subnet: 10.10.3.0/24}
routers:
  core: {networks: [front, back]}
containers:
  web: {networks: {front: {ip: 10.10.1.10}}}
  api-1:
    networks: {back: {ip: 10.10.2.11}}
    services: [{name: api, port: 8080}]
  api-2:
    networks: {back: {ip: 10.10.2.12}}
    services: [{name: api, port: 8080}]
  api-3:
    networks: {back: {ip: 10.10.2.13}}
    services: [{name: api, port: 8080}]
  solo: {networks: {lone: {ip: 10.10.3.10}}}
services:
  api: {vip: 10.10.2.100, port: 80}
"""

POLICIES = """
policies:
  - {from: front, to: back, ports: [tcp/8080, udp/53]}
  - {from: web, to: service:api}
"""


class Lab:
    """A compiled topology on a fake switch, with helpers to send packets like a container."""

    def __init__(self, text: str, passing: dict | None = None) -> None:
        self.plan: TopologyPlan = plan_topology(load_topology(text))
        names = [ep.port for ep in self.plan.endpoints()]
        names += [n.host_leg.port for n in self.plan.networks]
        self.ports = {name: i for i, name in enumerate(sorted(names), start=1)}
        self.switch = FakeOFTable()
        self.program(passing)

    def program(self, passing: dict | None = None) -> None:
        compiled = compile_pipeline([self.plan], self.ports, passing)
        self.switch.replace(compiled.flows, compiled.groups)

    def ep(self, container: str) -> Endpoint:
        return next(e for e in self.plan.endpoints() if e.container == container)

    def net(self, name: str) -> NetworkPlan:
        return next(n for n in self.plan.networks if n.name == name)

    def port_of(self, container: str) -> int:
        return self.ports[self.ep(container).port]

    def send(self, src: str, dst_ip: str, *, proto: int = 6, sport: int = 40000,
             dport: int = 80, via_gateway: bool = True, dst_mac: str | None = None) -> Any:
        ep = self.ep(src)
        gw = self.net(ep.network).gateway_mac
        pkt = {"in_port": self.port_of(src), "eth_src": ep.mac,
               "eth_dst": dst_mac or (gw if via_gateway else ""), "eth_type": 0x0800,
               "ipv4_src": str(ep.ip), "ipv4_dst": dst_ip, "ip_proto": proto, "ip_ttl": 64}
        if proto == 6:
            pkt.update(tcp_src=sport, tcp_dst=dport)
        elif proto == 17:
            pkt.update(udp_src=sport, udp_dst=dport)
        return self.switch.process(pkt)

    def reply(self, out: dict[str, Any], src: str, *, to_mac: str | None = None) -> Any:
        """Answer a delivered packet from container ``src`` (swap addresses and ports)."""
        ep = self.ep(src)
        gw = self.net(ep.network).gateway_mac
        pkt = {"in_port": self.port_of(src), "eth_src": ep.mac, "eth_dst": to_mac or gw,
               "eth_type": 0x0800, "ipv4_src": out["ipv4_dst"], "ipv4_dst": out["ipv4_src"],
               "ip_proto": out["ip_proto"], "ip_ttl": 64}
        if out["ip_proto"] == 6:
            pkt.update(tcp_src=out["tcp_dst"], tcp_dst=out["tcp_src"])
        return self.switch.process(pkt)


def test_router_joins_networks_with_mac_rewrite_and_ttl_decrement():
    lab = Lab(SHOP)
    result = lab.send("web", "10.10.2.11", dport=8080)
    assert result.ports == [lab.port_of("api-1")]
    out = result.outputs[0][1]
    assert out["eth_dst"] == lab.ep("api-1").mac
    assert out["eth_src"] == lab.net("back").gateway_mac
    assert out["ip_ttl"] == 63
    assert "l3_router" in result.stages and "l3_neighbor" in result.stages


def test_networks_not_joined_by_a_router_never_reach_each_other():
    lab = Lab(SHOP)
    assert lab.send("web", "10.10.3.10").ports == []
    assert lab.send("solo", "10.10.1.10").ports == []


def test_without_policies_routed_traffic_is_open_both_ways():
    lab = Lab(SHOP)
    assert lab.send("web", "10.10.2.12", dport=22).ports == [lab.port_of("api-2")]
    assert lab.send("api-2", "10.10.1.10", dport=22).ports == [lab.port_of("web")]


def test_policy_allows_listed_port_and_refuses_another():
    lab = Lab(SHOP + POLICIES)
    assert lab.send("web", "10.10.2.11", dport=8080).ports == [lab.port_of("api-1")]
    assert lab.send("web", "10.10.2.11", dport=9090).ports == []
    assert lab.send("web", "10.10.2.11", proto=17, dport=53).ports == [lab.port_of("api-1")]
    assert lab.send("web", "10.10.2.11", proto=17, dport=54).ports == []


def test_policy_replies_pass_but_reverse_connections_are_refused():
    lab = Lab(SHOP + POLICIES)
    forward = lab.send("web", "10.10.2.11", dport=8080)
    reply = lab.reply(forward.outputs[0][1], "api-1")
    assert reply.ports == [lab.port_of("web")]
    assert lab.send("api-1", "10.10.1.10", dport=80).ports == []


def test_same_network_traffic_is_not_filtered_by_policies():
    lab = Lab(SHOP + POLICIES)
    api2 = lab.ep("api-2")
    result = lab.send("api-1", str(api2.ip), dport=9999, dst_mac=api2.mac)
    assert result.ports == [lab.port_of("api-2")]


def test_vip_spreads_new_connections_over_instances_with_nat():
    lab = Lab(SHOP)
    seen = {}
    for sport in range(41000, 41300):
        result = lab.send("web", "10.10.2.100", sport=sport, dport=80)
        assert len(result.ports) == 1
        out = result.outputs[0][1]
        assert out["tcp_dst"] == 8080 and out["eth_dst"] == lab.ep(
            next(c for c in ("api-1", "api-2", "api-3") if lab.port_of(c) == result.ports[0])
        ).mac
        seen[out["ipv4_dst"]] = seen.get(out["ipv4_dst"], 0) + 1
    assert set(seen) == {"10.10.2.11", "10.10.2.12", "10.10.2.13"}
    assert all(60 <= n <= 140 for n in seen.values()), seen


def test_vip_replies_come_back_from_the_vip():
    lab = Lab(SHOP)
    forward = lab.send("web", "10.10.2.100", sport=42000, dport=80)
    backend = next(c for c in ("api-1", "api-2", "api-3") if lab.port_of(c) == forward.ports[0])
    reply = lab.reply(forward.outputs[0][1], backend)
    assert reply.ports == [lab.port_of("web")]
    back = reply.outputs[0][1]
    assert (back["ipv4_src"], back["tcp_src"]) == ("10.10.2.100", 80)


def test_established_vip_connection_stays_on_its_instance_when_instances_change():
    lab = Lab(SHOP)
    first = lab.send("web", "10.10.2.100", sport=43000, dport=80)
    backend = next(c for c in ("api-1", "api-2", "api-3") if lab.port_of(c) == first.ports[0])
    others = frozenset({"api-1", "api-2", "api-3"} - {backend})
    lab.program({("shop", "api"): others})
    again = lab.send("web", "10.10.2.100", sport=43000, dport=80)
    assert again.ports == first.ports


def test_failed_instance_gets_no_new_connections():
    lab = Lab(SHOP, passing={("shop", "api"): frozenset({"api-1", "api-3"})})
    targets = {lab.send("web", "10.10.2.100", sport=s).outputs[0][1]["ipv4_dst"]
               for s in range(44000, 44100)}
    assert targets == {"10.10.2.11", "10.10.2.13"}


def _from_host_leg(lab: Lab, network: str, **fields: Any) -> dict[str, Any]:
    leg = lab.net(network).host_leg
    return {"in_port": lab.ports[leg.port], "eth_src": leg.mac, "eth_type": 0x0800,
            "ipv4_src": str(leg.ip), "ip_proto": 6, "ip_ttl": 64, **fields}


def test_vip_with_no_passing_instance_sends_each_client_to_a_closed_port_of_its_own_leg():
    lab = Lab(SHOP, passing={("shop", "api"): frozenset()})
    for client, network in (("web", "front"), ("api-1", "back")):
        result = lab.send(client, "10.10.2.100", sport=45000)
        leg = lab.net(network).host_leg
        assert result.ports == [lab.ports[leg.port]], client
        out = result.outputs[0][1]
        assert (out["ipv4_dst"], out["tcp_dst"], out["eth_dst"]) == (str(leg.ip), 1, leg.mac)


def test_host_reset_for_a_vip_with_no_passing_instance_reaches_the_client_from_the_vip():
    lab = Lab(SHOP, passing={("shop", "api"): frozenset()})
    syn = lab.send("web", "10.10.2.100", sport=45001).outputs[0][1]
    reset = lab.switch.process(_from_host_leg(
        lab, "front", eth_dst=lab.ep("web").mac, ipv4_dst=syn["ipv4_src"], tcp_src=1,
        tcp_dst=syn["tcp_src"]))
    assert reset.ports == [lab.port_of("web")]
    back = reset.outputs[0][1]
    assert (back["ipv4_src"], back["tcp_src"], back["tcp_dst"]) == ("10.10.2.100", 80, 45001)


def test_host_connection_to_a_vip_with_no_passing_instance_is_turned_back_as_refused():
    lab = Lab(SHOP, passing={("shop", "api"): frozenset()})
    leg = lab.net("back").host_leg
    gateway = lab.net("back").gateway_mac
    syn = lab.switch.process(_from_host_leg(lab, "back", eth_dst=gateway,
                                            ipv4_dst="10.10.2.100", tcp_src=45002, tcp_dst=80))
    assert syn.ports == [lab.ports[leg.port]]
    turned = syn.outputs[0][1]
    assert (turned["ipv4_src"], turned["tcp_src"]) == ("10.10.2.100", 45002)
    assert (turned["ipv4_dst"], turned["tcp_dst"], turned["eth_dst"]) == (str(leg.ip), 1, leg.mac)
    reset = lab.switch.process(_from_host_leg(lab, "back", eth_dst=gateway,
                                              ipv4_dst="10.10.2.100", tcp_src=1, tcp_dst=45002))
    assert reset.ports == [lab.ports[leg.port]]
    back = reset.outputs[0][1]
    assert (back["ipv4_src"], back["tcp_src"]) == ("10.10.2.100", 80)
    assert (back["ipv4_dst"], back["tcp_dst"]) == (str(leg.ip), 45002)


def test_vip_is_unreachable_from_a_network_not_routed_to_its_network():
    for passing in (None, {("shop", "api"): frozenset()}):
        lab = Lab(SHOP, passing=passing)
        assert lab.send("solo", "10.10.2.100", sport=45003).ports == [], passing


def test_vip_answers_arp_with_the_gateway_mac():
    lab = Lab(SHOP)
    ep = lab.ep("api-1")
    result = lab.switch.process({
        "in_port": lab.port_of("api-1"), "eth_src": ep.mac, "eth_dst": "ff:ff:ff:ff:ff:ff",
        "eth_type": 0x0806, "arp_op": 1, "arp_spa": str(ep.ip), "arp_sha": ep.mac,
        "arp_tpa": "10.10.2.100"})
    assert result.outputs[0][1]["arp_sha"] == lab.net("back").gateway_mac


def test_port_ranges_cover_exactly_the_range():
    for lo, hi in [(80, 80), (8000, 8080), (1, 65535), (1024, 2047), (3, 17)]:
        covered = set()
        for item in port_ranges(lo, hi):
            value, mask = (item, 0xFFFF) if isinstance(item, int) else item
            covered |= {p for p in range(1, 65536) if p & mask == value}
        assert covered == set(range(lo, hi + 1)), (lo, hi)
