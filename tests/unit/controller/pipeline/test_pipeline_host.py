"""The host is protected: what a container may send to the host's own addresses, on the
in-memory switch (with conntrack), on one host and across hosts."""

from __future__ import annotations

from typing import Any

import pytest

from sbcore.model import TopologyError, load_topology
from sbcore.plan.hostplan import HostLeg
from tests.unit.controller.pipeline.test_pipeline_l3 import SHOP, Lab
from tests.unit.controller.pipeline.test_pipeline_overlay import Cluster, _where

OPEN_9100 = SHOP + """
policies:
  - {from: web, to: host, ports: [tcp/9100, icmp]}
"""


def _leg(lab: Lab, network: str) -> HostLeg:
    return lab.net(network).host_leg


def _from_host(lab: Lab, network: str, dst: str, *, proto: int = 6, sport: int = 50000,
               dport: int = 80) -> Any:
    """A packet the host sends from its address on ``network`` to container ``dst``."""
    leg, ep = _leg(lab, network), lab.ep(dst)
    pkt = {"in_port": lab.ports[leg.port], "eth_src": leg.mac, "eth_dst": ep.mac,
           "eth_type": 0x0800, "ipv4_src": str(leg.ip), "ipv4_dst": str(ep.ip),
           "ip_proto": proto, "ip_ttl": 64}
    if proto == 6:
        pkt.update(tcp_src=sport, tcp_dst=dport)
    elif proto == 17:
        pkt.update(udp_src=sport, udp_dst=dport)
    return lab.switch.process(pkt)


def _to_leg(lab: Lab, src: str, network: str, *, dst_ip: str | None = None, **kw: Any) -> Any:
    leg = _leg(lab, network)
    return lab.send(src, dst_ip or str(leg.ip), dst_mac=leg.mac, **kw)


@pytest.mark.parametrize("proto,dport", [(6, 22), (6, 8500), (17, 8600), (1, None)])
def test_a_container_cannot_open_a_connection_to_its_host(proto, dport):
    lab = Lab(SHOP)
    assert _to_leg(lab, "web", "front", proto=proto, dport=dport or 0).ports == []


def test_a_container_cannot_reach_the_hosts_other_addresses_through_its_host_address():
    lab = Lab(SHOP)  # the host's kernel would take any of its addresses on that port
    for address in ("192.168.1.5", "172.17.0.1", "10.10.2.254"):
        assert _to_leg(lab, "web", "front", dst_ip=address, dport=22).ports == []


def test_a_routed_container_cannot_reach_the_hosts_address_on_another_network():
    lab = Lab(SHOP)
    assert lab.send("web", str(_leg(lab, "back").ip), dport=22).ports == []


def test_dns_on_the_host_address_is_served_over_udp_and_tcp():
    lab = Lab(SHOP)
    leg_port = lab.ports[_leg(lab, "front").port]
    assert _to_leg(lab, "web", "front", proto=17, dport=53).ports == [leg_port]
    assert _to_leg(lab, "web", "front", proto=6, dport=53).ports == [leg_port]
    assert _to_leg(lab, "web", "front", proto=17, dport=54).ports == []


def test_connections_the_host_opens_get_their_replies():
    lab = Lab(SHOP)
    leg_port = lab.ports[_leg(lab, "back").port]
    syn = _from_host(lab, "back", "api-1", dport=8080)
    assert syn.ports == [lab.port_of("api-1")]
    assert lab.reply(syn.outputs[0][1], "api-1", to_mac=_leg(lab, "back").mac).ports == [
        leg_port]
    ping = _from_host(lab, "back", "api-2", proto=1)
    out = ping.outputs[0][1]
    echo_reply = {**out, "in_port": lab.port_of("api-2"), "eth_src": lab.ep("api-2").mac,
                  "eth_dst": _leg(lab, "back").mac, "ipv4_src": out["ipv4_dst"],
                  "ipv4_dst": out["ipv4_src"]}
    assert lab.switch.process(echo_reply).ports == [leg_port]


def test_a_host_dns_answer_is_not_recorded_as_a_connection_the_host_opened():
    lab = Lab(SHOP)
    before = len(lab.switch.conntrack)
    answer = _from_host(lab, "front", "web", proto=17, sport=53, dport=40000)
    assert answer.ports == [lab.port_of("web")] and len(lab.switch.conntrack) == before


def test_a_vip_without_instances_is_refused_by_the_host_but_its_closed_port_is_not_open():
    lab = Lab(SHOP, passing={("shop", "api"): frozenset()})
    leg = _leg(lab, "front")
    refused = lab.send("web", "10.10.2.100", sport=45001)
    assert refused.ports == [lab.ports[leg.port]]
    assert refused.outputs[0][1]["ipv4_dst"] == str(leg.ip)
    assert _to_leg(lab, "web", "front", dport=1).ports == []  # not through the VIP: dropped


def test_a_to_host_policy_opens_its_ports_to_its_sources_only():
    lab = Lab(OPEN_9100)
    leg_port = lab.ports[_leg(lab, "front").port]
    allowed = _to_leg(lab, "web", "front", dport=9100)
    assert allowed.ports == [leg_port]
    assert _to_leg(lab, "web", "front", proto=1).ports == [leg_port]  # icmp listed
    assert _to_leg(lab, "web", "front", dport=22).ports == []
    assert _to_leg(lab, "api-1", "back", dport=9100).ports == []  # not a source
    # the host's answer goes back to the container, and the connection goes on
    leg = _leg(lab, "front")
    back = {"in_port": leg_port, "eth_src": leg.mac, "eth_dst": lab.ep("web").mac,
            "eth_type": 0x0800, "ipv4_src": str(leg.ip), "ipv4_dst": "10.10.1.10",
            "ip_proto": 6, "tcp_src": 9100, "tcp_dst": 40000}
    assert lab.switch.process(back).ports == [lab.port_of("web")]
    assert _to_leg(lab, "web", "front", dport=9100).ports == [leg_port]


def test_a_to_host_policy_leaves_routed_traffic_open():
    lab = Lab(OPEN_9100)
    assert lab.plan.policies is None
    assert lab.send("api-1", "10.10.1.10", dport=22).ports == [lab.port_of("web")]


def test_a_container_named_host_keeps_its_meaning_in_policies():
    text = SHOP.replace("  solo:", "  host: {networks: [back]}\n  solo:") + """
policies:
  - {from: web, to: host, ports: [tcp/80]}
"""
    lab = Lab(text)
    assert lab.plan.host_rules == () and lab.plan.policies is not None


def test_a_policy_from_the_host_is_an_error_naming_where():
    with pytest.raises(TopologyError, match=r"policies\.0\.from: 'host': a policy can only go "
                                            "to the host"):
        load_topology(SHOP + "policies:\n  - {from: host, to: front}\n")


def test_across_hosts_a_container_cannot_reach_another_hosts_address():
    cluster = Cluster()
    plan = cluster.plans["h1"]
    peer = next(n for n in plan.networks if n.name == "front").peer_legs[0]
    host, pkt = cluster.packet("web", peer.mac, str(peer.ip), tcp_dst=22)
    assert cluster.send(host, pkt) == [] and cluster.tunnel_crossings == 0
    host, pkt = cluster.packet("web", peer.mac, str(peer.ip), ip_proto=17, udp_src=40000,
                               udp_dst=53)
    assert _where(cluster.send(host, pkt)) == [(peer.host, cluster.ports[peer.host][next(
        n.host_leg.port for n in cluster.plans[peer.host].networks if n.name == "front")])]


def test_the_picture_draws_a_to_host_policy_to_the_host_addresses() -> None:
    from switchboard.cli import graph

    pic = graph.picture(load_topology(OPEN_9100))
    assert graph.Node("hostaddr__shop__host", "host", ("host addresses",)) in pic.nodes
    assert graph.Edge("ctr__shop__web", "hostaddr__shop__host", "policy",
                      "tcp/9100, icmp") in pic.edges
    text = graph.to_mermaid([pic])
    assert 'hostaddr__shop__host(("host addresses")):::host' in text
    assert "ctr__shop__web ==>|tcp/9100, icmp| hostaddr__shop__host" in text
    assert "hostaddr__shop__host" in graph.to_dot([pic])


def test_trace_says_why_a_packet_to_a_host_address_is_dropped() -> None:
    from pathlib import Path

    from controller.pipeline.trace import explain
    from controller.pipeline.trace_parse import parse_trace

    # captured from ovs-vswitchd 3.1: a container's SYN to a listener on its host address
    text = (Path(__file__).parent / "trace_samples" / "host_address_guarded.txt").read_text()
    report = explain(parse_trace(text), "h", {}, in_port=1)
    assert report.verdict.text() == ("dropped in stage l2_forward: a host's own address takes "
                                     "only replies, DNS and what a `to: host` policy allows")
