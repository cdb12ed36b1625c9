"""Translate compiled Flows into os-ken OpenFlow 1.3 messages. The only os-ken-aware encoder."""

from __future__ import annotations

from typing import Any

from controller.flows import DecTtl, Flow, Move, Output, SetField

METADATA_MASK = 0xFFFFFFFF
ALL_COOKIE_BITS = 0xFFFFFFFFFFFFFFFF


def _match(parser: Any, flow: Flow) -> Any:
    return parser.OFPMatch(**flow.matches())


def _action(dp: Any, action: Any) -> Any:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(action, Output):
        port = ofp.OFPP_IN_PORT if action.port == "in_port" else int(action.port)
        return parser.OFPActionOutput(port, 0)
    if isinstance(action, SetField):
        return parser.OFPActionSetField(**{action.name: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(
            src_field=action.src, dst_field=action.dst, n_bits=action.n_bits
        )
    if isinstance(action, DecTtl):
        return parser.OFPActionDecNwTtl()
    raise TypeError(f"no OpenFlow encoding for action {action!r}")


def instructions(dp: Any, flow: Flow) -> list[Any]:
    """Apply-actions, write-metadata and goto-table instructions of a flow."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    result = []
    if flow.actions:
        actions = [_action(dp, a) for a in flow.actions]
        result.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if flow.write_metadata is not None:
        result.append(parser.OFPInstructionWriteMetadata(flow.write_metadata, METADATA_MASK))
    if flow.goto is not None:
        from controller.tables import TABLES

        result.append(parser.OFPInstructionGotoTable(TABLES[flow.goto]))
    return result


def add_flow(dp: Any, flow: Flow) -> Any:
    """OFPFC_ADD for a flow, carrying its owner cookie."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        dp, cookie=flow.cookie, table_id=flow.table_id, command=ofp.OFPFC_ADD,
        priority=flow.priority, match=_match(parser, flow), instructions=instructions(dp, flow),
    )


def delete_cookie(dp: Any, cookie: int) -> Any:
    """Delete the flows with exactly this cookie, in every table."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        dp, cookie=cookie, cookie_mask=ALL_COOKIE_BITS, table_id=ofp.OFPTT_ALL,
        command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(),
    )


def flow_stats_request(dp: Any) -> Any:
    """Ask for every flow on the switch (to learn what is installed after a (re)connect)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowStatsRequest(
        dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()
    )
