"""Translate compiled Flows into os-ken OpenFlow 1.3 messages. The only os-ken-aware encoder."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from os_ken.lib import type_desc
from os_ken.lib.pack_utils import msg_pack_into
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.pipeline.flows import (
    Ct,
    DecTtl,
    Flow,
    Group,
    Move,
    Output,
    Resubmit,
    SelectGroup,
    SetField,
)
from controller.pipeline.tables import TABLES

METADATA_MASK = 0xFFFFFFFF
ALL_COOKIE_BITS = 0xFFFFFFFFFFFFFFFF
CT_COMMIT = 1
NAT_SRC, NAT_DST = 1, 2  # OVS's NX_NAT_F_SRC/_DST (os-ken's nicira_ext lacks them)
NO_RECIRC = 255


class WireMatch(ofproto_v1_3_parser.OFPMatch):
    """An OFPMatch whose OXM fields were serialised once, in wire order, from the flow's
    match (see :func:`match_fields`): os-ken's own OFPMatch converts every field to and from
    its user form on construction and again on serialisation, 7x slower."""

    def __init__(self, fields: bytes, user: list[tuple[str, Any]]) -> None:  # noqa: D107
        # The parent's __init__ is not called: it would parse the fields again.
        self.type = ofproto_v1_3.OFPMT_OXM
        self.fields: list[Any] = []
        self._fields2 = user
        self._wire = fields
        self.length = 4 + len(fields)

    def serialize(self, buf: bytearray, offset: int) -> int:
        """Write the match at ``offset`` of ``buf``; its length, padded to 8 bytes."""
        padded = (self.length + 7) // 8 * 8
        msg_pack_into(f"!HH{len(self._wire)}s{padded - self.length}x", buf, offset,
                      self.type, self.length, self._wire)
        return padded


_OXM = {t.name: t for t in ofproto_v1_3.oxm_types}


def _field_bytes(kind: Any, value: Any, size: int) -> bytes:
    """A field's value as OXM bytes: integers, MACs and IPv4 addresses directly, anything
    else by os-ken's type."""
    if isinstance(value, int):
        return value.to_bytes(size, "big")
    if kind is type_desc.MacAddr:
        return bytes.fromhex(value.replace(":", ""))
    if kind is type_desc.IPv4Addr:
        return IPv4Address(value).packed
    return bytes(kind.from_user(value))


def match_fields(match: tuple[tuple[str, Any], ...]) -> bytes | None:
    """The OXM TLVs of a match, in the order os-ken's OFPMatch writes them (by OXM type),
    each masked value ANDed with its mask; None when a field is not a plain OXM one (an
    experimenter field: os-ken encodes it)."""
    tlvs = []
    for name, value in match:
        desc = _OXM.get(name)
        if desc is None or not isinstance(desc.num, int):
            return None
        size = desc.type.size
        if isinstance(value, tuple):
            raw, mask = (_field_bytes(desc.type, v, size) for v in value)
            raw = bytes(a & b for a, b in zip(raw, mask, strict=True))
            header = (desc.num << 9) | (1 << 8) | (2 * size)
            tlvs.append((desc.num, header.to_bytes(4, "big") + raw + mask))
        else:
            header = (desc.num << 9) | size
            tlvs.append((desc.num, header.to_bytes(4, "big")
                         + _field_bytes(desc.type, value, size)))
    tlvs.sort(key=lambda t: t[0])
    return b"".join(t for _, t in tlvs)


def _match(parser: Any, flow: Flow) -> Any:
    fields = match_fields(flow.match)
    if fields is None:
        return parser.OFPMatch(**flow.matches())
    return WireMatch(fields, list(flow.match))


def _action(dp: Any, action: Any) -> Any:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if isinstance(action, Output):
        port = ofp.OFPP_IN_PORT if action.port == "in_port" else int(action.port)
        return parser.OFPActionOutput(port, 0)
    if isinstance(action, SetField):
        if action.mask is not None:  # set_field:value/mask (Nicira reg_load2)
            return parser.NXActionRegLoad2(dst=action.name, value=action.value, mask=action.mask)
        return parser.OFPActionSetField(**{action.name: action.value})
    if isinstance(action, Move):
        return parser.NXActionRegMove(
            src_field=action.src, dst_field=action.dst, n_bits=action.n_bits
        )
    if isinstance(action, DecTtl):
        return parser.OFPActionDecNwTtl()
    if isinstance(action, Ct):
        return _ct(dp, action)
    if isinstance(action, Group):
        return parser.OFPActionGroup(action.group_id)
    if isinstance(action, Resubmit):
        return parser.NXActionResubmitTable(in_port=0xFFF8, table_id=TABLES[action.table])
    raise TypeError(f"no OpenFlow encoding for action {action!r}")


def _ct(dp: Any, ct: Ct) -> Any:
    parser = dp.ofproto_parser
    nested = []
    # The mark goes first: OVS rejects a ct whose NAT (as os-ken encodes it) is followed by
    # another nested action (OFPBAC_BAD_LEN, measured); with the NAT last it is accepted.
    if ct.mark is not None:
        nested.append(parser.OFPActionSetField(ct_mark=ct.mark))
    if ct.nat is not None:
        if ct.nat.startswith("src="):
            ip = ct.nat.removeprefix("src=")
            nested.append(parser.NXActionNAT(flags=NAT_SRC, range_ipv4_min=ip,
                                             range_ipv4_max=ip))
        elif ct.nat:
            ip, _, port = ct.nat.partition(":")
            ranges = dict(range_ipv4_min=ip, range_ipv4_max=ip)
            if port:
                ranges.update(range_proto_min=int(port), range_proto_max=int(port))
            nested.append(parser.NXActionNAT(flags=NAT_DST, **ranges))
        else:
            nested.append(parser.NXActionNAT(flags=0))
    return parser.NXActionCT(
        flags=CT_COMMIT if ct.commit else 0, zone_src="", zone_ofs_nbits=ct.zone,
        recirc_table=TABLES[ct.table] if ct.table else NO_RECIRC, alg=0, actions=nested,
    )


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


def flow_stats_by_cookie(dp: Any, cookie: int, mask: int) -> Any:
    """Ask for the flows whose cookie has ``cookie`` under ``mask`` (one owner's flows)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowStatsRequest(
        dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch()
    )


def port_stats_request(dp: Any) -> Any:
    """Ask for the counters of every port."""
    return dp.ofproto_parser.OFPPortStatsRequest(dp, 0, dp.ofproto.OFPP_ANY)


def group_mod(dp: Any, group: SelectGroup, command: str) -> Any:
    """OFPGroupMod adding, modifying or deleting a select group."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    commands = {"add": ofp.OFPGC_ADD, "modify": ofp.OFPGC_MODIFY, "delete": ofp.OFPGC_DELETE}
    buckets = [
        parser.OFPBucket(weight=1, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                         actions=[_action(dp, a) for a in bucket])
        for bucket in group.buckets
    ] if command != "delete" else []
    return parser.OFPGroupMod(dp, commands[command], ofp.OFPGT_SELECT, group.group_id, buckets)


# Broadcast, a locally administered source and the IEEE local experimental EtherType, padded to
# the Ethernet minimum: a frame no host's pipeline takes in (it matches no network's VNI either).
TUNNEL_PROBE = bytes.fromhex("ffffffffffff" "020000000001" "88b5") + bytes(46)


def tunnel_probe(dp: Any, tunnel_port: int, remote_ip: str) -> Any:
    """A packet-out of :data:`TUNNEL_PROBE` through the tunnel port to ``remote_ip`` with VNI 0.

    On the userspace datapath, translating it makes OVS resolve ``remote_ip``'s underlay MAC
    (its tunnel neighbor cache; an ARP request when the entry is missing). The probe itself is
    dropped while the MAC is unknown, and by the other host's pipeline once it is known."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    actions = [
        parser.OFPActionSetField(tunnel_id=0),
        parser.OFPActionSetField(tun_ipv4_dst=remote_ip),
        parser.OFPActionOutput(tunnel_port, 0),
    ]
    return parser.OFPPacketOut(datapath=dp, buffer_id=ofp.OFP_NO_BUFFER,
                               in_port=ofp.OFPP_CONTROLLER, actions=actions, data=TUNNEL_PROBE)


def group_desc_request(dp: Any) -> Any:
    """Ask for every group on the switch."""
    return dp.ofproto_parser.OFPGroupDescStatsRequest(dp, 0)
