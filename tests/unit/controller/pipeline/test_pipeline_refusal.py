"""A VIP with no passing instance, in a topology with policies, on the in-memory switch."""

from __future__ import annotations

from controller.pipeline.refusal import REJECT_PORT, refused_sources
from tests.unit.controller.pipeline.test_pipeline_l3 import Lab, _from_host_leg

TOPOLOGY = """
name: pol
networks:
  front: {subnet: 10.20.1.0/24}
  back: {subnet: 10.20.2.0/24}
  side: {subnet: 10.20.3.0/24}
routers:
  core: {networks: [front, back, side]}
policies:
  - {from: front, to: service:api, ports: [tcp/8080]}
  - {from: side, to: front}
  - {from: front, to: host, ports: [tcp/9]}
containers:
  web: {networks: {front: {ip: 10.20.1.10}}}
  near: {networks: {back: {ip: 10.20.2.20}}}
  other: {networks: {side: {ip: 10.20.3.10}}}
  api-1:
    networks: {back: {ip: 10.20.2.11}}
    services: [{name: api, port: 8080}]
services:
  api: {vip: 10.20.2.100, port: 80}
"""
VIP = "10.20.2.100"
NONE_PASSING = {("pol", "api"): frozenset()}


def test_vip_with_policies_refuses_its_own_network_and_a_routed_one_a_policy_lets_in():
    lab = Lab(TOPOLOGY, passing=NONE_PASSING)
    for client, network in (("near", "back"), ("web", "front"), ("api-1", "back")):
        result = lab.send(client, VIP, sport=45100)
        leg = lab.net(network).host_leg
        assert result.ports == [lab.ports[leg.port]], (client, result.stages)
        out = result.outputs[0][1]
        assert (out["ipv4_dst"], out["tcp_dst"]) == (str(leg.ip), REJECT_PORT), client


def test_reset_for_a_refused_routed_client_passes_the_policy_stage_back_from_the_vip():
    lab = Lab(TOPOLOGY, passing=NONE_PASSING)
    syn = lab.send("web", VIP, sport=45101).outputs[0][1]
    reset = lab.switch.process(_from_host_leg(
        lab, "front", eth_dst=lab.ep("web").mac, ipv4_dst=syn["ipv4_src"], tcp_src=REJECT_PORT,
        tcp_dst=syn["tcp_src"]))
    assert reset.ports == [lab.port_of("web")], reset.stages
    back = reset.outputs[0][1]
    assert (back["ipv4_src"], back["tcp_src"], back["tcp_dst"]) == (VIP, 80, 45101)


def test_vip_with_no_passing_instance_is_silent_to_a_network_no_policy_lets_in():
    lab = Lab(TOPOLOGY, passing=NONE_PASSING)
    assert lab.send("other", VIP, sport=45102).ports == []


def test_vip_with_policies_still_balances_when_an_instance_passes():
    lab = Lab(TOPOLOGY, passing={("pol", "api"): frozenset({"api-1"})})
    result = lab.send("web", VIP, sport=45103)
    assert result.ports == [lab.port_of("api-1")]
    assert lab.send("other", VIP, sport=45104).ports == []


def test_refused_sources_follow_the_rules_that_reach_an_instance_port_and_protocol():
    lab = Lab(TOPOLOGY)
    service = lab.plan.services[0]
    home, front, side = lab.net("back"), lab.net("front"), lab.net("side")
    assert refused_sources(lab.plan, service, home, home, "tcp") is None
    assert refused_sources(lab.plan, service, front, home, "tcp") == ("10.20.1.0/24",)
    assert refused_sources(lab.plan, service, front, home, "udp") == ()
    assert refused_sources(lab.plan, service, side, home, "tcp") == ()
