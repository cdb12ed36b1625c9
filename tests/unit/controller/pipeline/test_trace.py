"""`switchboard trace`: the packet it builds and how it reads OVS's ofproto/trace output.

The samples in trace_samples/ were captured from ovs-vswitchd 3.1 running this pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.pipeline.trace import TraceError, build_packet, explain, flow_spec
from controller.pipeline.trace_parse import nat_targets, parse_trace, port_names
from sbcore.model import naming

SAMPLES = Path(__file__).parent / "trace_samples"


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text()


REPORT = {
    "bridge": "sb-int",
    "networks": [
        {"name": "front", "subnet": "10.1.1.0/24", "gateway": "10.1.1.1",
         "host_ip": "10.1.1.254"},
        {"name": "back", "subnet": "10.1.2.0/24", "gateway": "10.1.2.1",
         "host_ip": "10.1.2.254"},
    ],
    "containers": [
        {"container": "web", "network": "front", "ip": "10.1.1.10",
         "mac": "02:00:00:00:01:0a", "ofport": 5, "port": "sbvweb"},
        {"container": "peer", "network": "front", "ip": "10.1.1.11",
         "mac": "02:00:00:00:01:0b", "ofport": 6, "port": "sbvpeer"},
        {"container": "api", "network": "back", "ip": "10.1.2.10",
         "mac": "02:00:00:00:02:0a", "ofport": 8, "port": "sbvapi"},
        {"container": "multi", "network": "back", "ip": "10.1.2.20",
         "mac": "02:00:00:00:02:14", "ofport": 9, "port": "sbvmulti0"},
        {"container": "multi", "network": "front", "ip": "10.1.1.20",
         "mac": "02:00:00:00:01:14", "ofport": 10, "port": "sbvmulti1"},
    ],
}
FRONT_GW = naming.gateway_mac("shop", "front")


# --- the packet --------------------------------------------------------------------------

def test_packet_to_a_container_on_the_same_network_carries_its_mac():
    packet = build_packet("shop", REPORT, "web", "peer")
    assert (packet.in_port, packet.eth_src, packet.ip_src) == (5, "02:00:00:00:01:0a",
                                                              "10.1.1.10")
    assert (packet.eth_dst, packet.ip_dst) == ("02:00:00:00:01:0b", "10.1.1.11")
    assert not packet.to_gateway


def test_packet_to_another_network_goes_to_the_gateway_mac():
    packet = build_packet("shop", REPORT, "web", "api")
    assert (packet.eth_dst, packet.ip_dst) == (FRONT_GW, "10.1.2.10")
    assert packet.to_gateway


def test_packet_leaves_by_the_network_it_shares_with_the_destination():
    packet = build_packet("shop", REPORT, "multi", "web")
    assert (packet.in_port, packet.ip_src, packet.eth_dst) == (10, "10.1.1.20",
                                                               "02:00:00:00:01:0a")


def test_packet_to_a_vip_by_service_name_or_address_goes_to_the_gateway():
    vips = {"api": "10.1.1.100"}
    by_name = build_packet("shop", REPORT, "web", "api-vip", {"api-vip": "10.1.1.100"})
    by_ip = build_packet("shop", REPORT, "web", "10.1.1.100", vips)
    assert by_name.ip_dst == by_ip.ip_dst == "10.1.1.100"
    assert by_name.eth_dst == by_ip.eth_dst == FRONT_GW
    assert "VIP" in by_ip.destination


def test_packet_to_the_host_address_uses_the_host_leg_mac():
    packet = build_packet("shop", REPORT, "web", "10.1.1.254")
    assert packet.eth_dst == naming.host_leg_mac("shop", "front")


def test_unknown_source_or_destination_is_an_error_that_says_which():
    with pytest.raises(TraceError, match="no container 'nope'"):
        build_packet("shop", REPORT, "nope", "api")
    with pytest.raises(TraceError, match="'db' is neither"):
        build_packet("shop", REPORT, "web", "db")


def test_flow_spec_for_tcp_udp_and_icmp():
    packet = build_packet("shop", REPORT, "web", "api")
    tcp = flow_spec(packet, "tcp", 8080)
    assert tcp.startswith("tcp,in_port=5,") and "tcp_dst=8080" in tcp and "tcp_flags=syn" in tcp
    assert "udp_dst=53" in flow_spec(packet, "udp", 53)
    assert "icmp_type=8" in flow_spec(packet)
    with pytest.raises(TraceError):
        flow_spec(packet, "tcp")


# --- parsing ofproto/trace ---------------------------------------------------------------

def test_allowed_routed_connection_goes_through_every_stage_and_is_output():
    trace = parse_trace(sample("routed_tcp_allowed"))
    assert [s.stage for s in trace.steps] == [
        "classifier", "conntrack", "service_lb", "l3_router", "l3_neighbor", "policy",
        "l2_forward"]
    assert [p.ct_state for p in trace.passes] == [None, "new|trk"]
    assert trace.outputs == [8]
    assert trace.dropped_at is None
    router = trace.steps[3]
    assert (router.table, router.priority) == (40, 100)
    assert "dec_ttl" in router.actions and "nw_dst=10.231.59.0/24" in router.match


def test_refused_connection_is_dropped_in_the_policy_stage():
    trace = parse_trace(sample("routed_tcp_refused"))
    assert trace.outputs == []
    assert trace.dropped_at.stage == "policy"
    assert trace.dropped_at.priority == 0


def test_spoofed_source_is_dropped_by_port_security():
    trace = parse_trace(sample("spoofed_source"))
    assert [s.stage for s in trace.steps] == ["classifier"]
    assert trace.dropped_at.stage == "classifier"


def test_arp_for_the_gateway_is_answered_back_out_of_the_ingress_port():
    trace = parse_trace(sample("arp_gateway"))
    assert [s.stage for s in trace.steps] == ["classifier", "arp_responder"]
    assert trace.outputs == ["in_port"]
    assert "set_field:2->arp_op" in trace.steps[1].actions


def test_vip_trace_ends_in_its_select_group():
    trace = parse_trace(sample("vip_select_group"))
    assert trace.group == 472164404
    assert trace.steps[-1].stage == "service_lb"
    assert trace.dropped_at is None


def test_table_miss_is_a_drop_in_that_table():
    trace = parse_trace(sample("table_miss"))
    assert trace.dropped_at.table == 20 and trace.dropped_at.priority is None
    assert trace.dropped_at.stage == "conntrack"


def test_nat_targets_lists_each_instance_of_a_vip_once_per_protocol():
    flows = (
        " cookie=0x5, table=31, priority=100,tcp,reg1=0x1,nw_dst=10.0.0.100 "
        "actions=ct(commit,table=40,zone=9,nat(dst=10.0.0.12:8080))\n"
        " cookie=0x5, table=31, priority=100,tcp,reg1=0,nw_dst=10.0.0.100 "
        "actions=ct(commit,table=40,zone=9,nat(dst=10.0.0.11:8080))\n"
        " cookie=0x5, table=31, priority=100,udp,reg1=0,nw_dst=10.0.0.100 "
        "actions=ct(commit,table=40,zone=9,nat(dst=10.0.0.11:8080))\n"
        " cookie=0x5, table=31, priority=100,tcp,reg1=0,nw_dst=10.0.0.200 "
        "actions=ct(commit,table=40,zone=9,nat(dst=10.0.0.21:80))\n")
    assert nat_targets(flows, "10.0.0.100", "tcp") == ["10.0.0.12:8080", "10.0.0.11:8080"]
    assert nat_targets(flows, "10.0.0.100", "udp") == ["10.0.0.11:8080"]


def test_port_names_from_ovs_ofctl_show():
    show = (" 1(sbh9ceb9a826c): addr:02:e6:61:f2:e2:b4\n     config:     0\n"
            " 8(sbv3b62cafc57): addr:0a:d7:61:de:7b:8a\n LOCAL(sb-int): addr:aa:bb\n")
    assert port_names(show) == {1: "sbh9ceb9a826c", 8: "sbv3b62cafc57"}


# --- what the user reads -----------------------------------------------------------------

def test_explained_allowed_trace_names_stages_and_the_receiving_container():
    trace = parse_trace(sample("routed_tcp_allowed"))
    report = explain(trace, "tcp/8080 from web to api", {8: "api (port 8)"}, in_port=5)
    assert report.verdict.text() == "delivered to api (port 8)"
    text = "\n".join(report.lines())
    for stage in ("classifier", "conntrack", "l3_router", "policy", "l2_forward"):
        assert stage in text
    assert "back from conntrack with ct_state=new|trk" in text
    assert text.splitlines()[-1] == "verdict: delivered to api (port 8)"


def test_explained_refused_trace_says_no_policy_allows_it():
    report = explain(parse_trace(sample("routed_tcp_refused")), "h", {}, in_port=5)
    assert report.verdict.dropped_in == "policy"
    assert report.verdict.text() == (
        "dropped in stage policy: no policy allows this new connection")


def test_explained_arp_reply_is_delivered_back_to_the_sender():
    report = explain(parse_trace(sample("arp_gateway")), "h", {5: "web (port 5)"}, in_port=5)
    assert report.verdict.delivered == ("web (port 5)",)


def test_explained_vip_trace_follows_the_chosen_instance():
    first = parse_trace(sample("vip_select_group"))
    instance = parse_trace(sample("vip_instance"))
    report = explain(first, "h", {10: "a2 (port 10)"}, in_port=14,
                     then=("10.231.62.12:8080", instance))
    assert report.verdict.delivered == ("a2 (port 10)",)
    assert report.verdict.via == "10.231.62.12:8080"
    stages = [s.get("stage") for s in report.stages if "stage" in s]
    assert stages[:3] == ["classifier", "conntrack", "service_lb"]
    assert stages[3:] == ["l3_router", "l3_neighbor", "policy", "l2_forward"]


def test_unjoined_networks_drop_is_explained_as_no_router():
    trace = parse_trace(sample("table_miss").replace("20. No match.", "60. No match."))
    report = explain(trace, "h", {}, in_port=1, to_gateway=True)
    assert report.verdict.dropped_in == "l2_forward"
    assert "no router joins" in report.verdict.reason
