"""ofmsg's wire-order match encoding writes exactly what os-ken's OFPMatch writes, for every
flow of pipelines that use every kind of match (policies, VIPs, ranges, the overlay)."""

from __future__ import annotations

from typing import Any

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.pipeline.compiler import compile_pipeline
from controller.pipeline.flows import Flow
from controller.switch import ofmsg
from tests.unit.controller.pipeline.test_pipeline_l3 import POLICIES, SHOP, Lab
from tests.unit.controller.pipeline.test_pipeline_overlay import TUNNEL, Cluster


class FakeDatapath:
    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser
    id = 1


def _wire(msg: Any) -> bytes:
    msg.set_xid(1)
    msg.serialize()
    return bytes(msg.buf)


def _flows() -> list[Flow]:
    flows = list(compile_pipeline([Lab(SHOP + POLICIES).plan], Lab(SHOP + POLICIES).ports,
                                  None).flows)
    cluster = Cluster()
    for host, plan in cluster.plans.items():
        flows += compile_pipeline([plan], cluster.ports[host], tunnel_port=TUNNEL).flows
    return flows


def test_wire_match_is_os_kens_byte_for_byte() -> None:
    dp = FakeDatapath()
    flows = _flows()
    kinds = {name for f in flows for name, _ in f.match}
    masked = {name for f in flows for name, v in f.match if isinstance(v, tuple)}
    assert {"arp_sha", "eth_src", "in_port", "metadata", "reg1", "tunnel_id"} <= kinds
    assert {"ct_state", "ipv4_dst", "tcp_dst"} <= masked
    for flow in flows:
        fast = ofmsg.add_flow(dp, flow)
        assert isinstance(fast.match, ofmsg.WireMatch) or ofmsg.match_fields(flow.match) is None
        slow = ofproto_v1_3_parser.OFPFlowMod(
            dp, cookie=flow.cookie, table_id=flow.table_id, command=ofproto_v1_3.OFPFC_ADD,
            priority=flow.priority, match=ofproto_v1_3_parser.OFPMatch(**flow.matches()),
            instructions=ofmsg.instructions(dp, flow))
        assert _wire(fast) == _wire(slow), flow


def test_masked_values_are_anded_with_their_mask() -> None:
    fields = ofmsg.match_fields((("ipv4_dst", ("10.1.2.3", "255.255.255.0")),))
    assert fields is not None and fields.endswith(bytes([10, 1, 2, 0, 255, 255, 255, 0]))
