"""The os-ken app: keeps every connected bridge holding exactly the wanted flows.

Handlers only route events; the work is done by ``controller.switch.sync`` (what to change) and
``controller.switch.ofmsg`` (how to say it). Changes go in one atomic ONF bundle per update.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import (
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.ofproto import ofproto_v1_3

from controller.pipeline.flows import Flow, SelectGroup
from controller.switch import ofmsg
from controller.switch.sync import diff_flows, diff_groups

LOG = logging.getLogger("switchboard.controller")
# When a fresh bridge has been programmed, the tunnel probes go out this long after it
# (seconds): several, since the tunnel address may reach OVS's routing a little later.
PROBE_DELAYS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)


def _logged(handler: Any) -> Any:
    """os-ken swallows exceptions raised in handlers: log them instead."""

    def wrapper(self: Any, ev: Any) -> None:
        try:
            handler(self, ev)
        except Exception:  # noqa: BLE001 - must never vanish silently
            LOG.exception("handler %s failed", handler.__name__)

    wrapper.__name__ = handler.__name__
    return wrapper


@dataclass
class StatsReply:
    """The parts of one multipart reply, complete once ``done`` is set."""

    body: list[Any] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class TunnelPeers:
    """The tunnel port of a bridge on the userspace datapath and the other hosts' underlay
    addresses, which that OVS resolves to MACs itself (see ``ofmsg.tunnel_probe``)."""

    port: int
    addresses: tuple[str, ...]


@dataclass
class SwitchState:
    """What we know about one connected bridge."""

    datapath: Any
    installed: set[int] = field(default_factory=set)
    groups: dict[int, SelectGroup | None] = field(default_factory=dict)  # None: content unknown
    ready: bool = False  # True once the installed set has been read from the switch
    pending_stats: set[int] = field(default_factory=set)
    barriers: dict[int, threading.Event] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    replies: dict[int, StatsReply] = field(default_factory=dict)  # asked by request_stats
    fresh: bool = False  # it held no flow when it connected: an OVS that (re)started
    probed: bool = False  # the tunnel probes went out (once per connection of a fresh bridge)


class SwitchboardApp(app_manager.OSKenApp):
    """Proactive controller: no packet-in, no learning, only the compiled pipeline."""

    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    own_datapath_id: int | None = None  # set by controller.switch.runtime before the app listens

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.switches: dict[int, SwitchState] = {}
        # The one bridge to program (its datapath ID, set by the daemon from OVSDB); None:
        # every bridge that connects. Any other datapath is ignored, logged once.
        self.datapath_id: int | None = self.own_datapath_id
        self.ignored: set[int] = set()
        self.failure = ""  # why the last program() failed, naming the datapath
        self.wanted: list[Flow] | None = None
        self.wanted_groups: list[SelectGroup] = []
        self.tunnel_peers: TunnelPeers | None = None  # set by the daemon before program()
        self.probe_delays = PROBE_DELAYS
        self.group_mods_sent = 0
        self.flow_mods_sent = 0
        self.bundles_sent = 0
        self.connected = threading.Event()
        self.wake = threading.Event()  # set when a bridge needs programming
        self._lock = threading.RLock()
        self._bundle_id = 0

    # --- events -------------------------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    @_logged
    def on_switch_features(self, ev: Any) -> None:
        dp = ev.msg.datapath
        if self.datapath_id is not None and dp.id != self.datapath_id:
            if dp.id not in self.ignored:
                self.ignored.add(dp.id)
                LOG.warning("bridge %016x connected to this controller's port but is not its "
                            "bridge (%016x): ignored, it gets no flows", dp.id, self.datapath_id)
            return
        with self._lock:
            state = SwitchState(datapath=dp)
            self.switches[dp.id] = state
            for request in (ofmsg.flow_stats_request(dp), ofmsg.group_desc_request(dp)):
                dp.set_xid(request)
                state.pending_stats.add(request.xid)
                dp.send_msg(request)
        LOG.info("bridge %016x connected; reading its flows", dp.id)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    @_logged
    def on_flow_stats(self, ev: Any) -> None:
        msg = ev.msg
        with self._lock:
            state = self.switches.get(msg.datapath.id)
            if state is not None and msg.xid in state.replies:
                self._reply_part(state, msg)
                return
            if state is None or msg.xid not in state.pending_stats:
                return
            state.installed.update(stat.cookie for stat in msg.body)
            self._stats_part_done(state, msg)
        LOG.info("bridge %016x holds %d flows", msg.datapath.id, len(state.installed))

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    @_logged
    def on_group_desc(self, ev: Any) -> None:
        msg = ev.msg
        with self._lock:
            state = self.switches.get(msg.datapath.id)
            if state is None or msg.xid not in state.pending_stats:
                return
            state.groups.update((g.group_id, None) for g in msg.body)
            self._stats_part_done(state, msg)

    def _stats_part_done(self, state: SwitchState, msg: Any) -> None:
        """Mark the switch ready once every flow and group reply has fully arrived."""
        if msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            return
        state.pending_stats.discard(msg.xid)
        if not state.pending_stats:
            state.fresh = not state.installed
            state.ready = True
            self.connected.set()
            self.wake.set()  # the daemon thread programs it: handlers must not block

    @set_ev_cls(ofp_event.EventOFPPortStatsReply, MAIN_DISPATCHER)
    @_logged
    def on_port_stats(self, ev: Any) -> None:
        with self._lock:
            state = self.switches.get(ev.msg.datapath.id)
            if state is not None and ev.msg.xid in state.replies:
                self._reply_part(state, ev.msg)

    @staticmethod
    def _reply_part(state: SwitchState, msg: Any) -> None:
        reply = state.replies[msg.xid]
        reply.body.extend(msg.body)
        if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            reply.done.set()

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    @_logged
    def on_barrier(self, ev: Any) -> None:
        state = self.switches.get(ev.msg.datapath.id)
        if state is not None and ev.msg.xid in state.barriers:
            state.barriers[ev.msg.xid].set()

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    @_logged
    def on_error(self, ev: Any) -> None:
        msg = ev.msg
        text = f"OpenFlow error type={msg.type} code={msg.code} xid={msg.xid}"
        LOG.error("bridge %016x: %s", msg.datapath.id, text)
        state = self.switches.get(msg.datapath.id)
        if state is not None:
            state.errors[msg.xid] = text

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    @_logged
    def on_disconnect(self, ev: Any) -> None:
        dp = ev.datapath
        if dp.id is None:
            return
        with self._lock:
            state = self.switches.get(dp.id)
            if state is None or state.datapath is not dp:
                return  # an ignored datapath, or an older connection of a reconnected one
            self._forget(state)
        self.wake.set()
        LOG.warning("bridge %016x disconnected", dp.id)

    # --- API for the daemon -------------------------------------------------------------
    def program(
        self, flows: list[Flow], groups: list[SelectGroup] = (), timeout: float = 10.0
    ) -> bool:
        """Make the bridge hold exactly ``flows`` and ``groups``; True if confirmed. When not,
        ``failure`` says why, naming the datapath; a datapath that does not confirm within
        ``timeout`` seconds (and 2 ms more a change) is disconnected, so that it never delays
        a later pass."""
        self.wanted = list(flows)
        self.wanted_groups = list(groups)
        self.failure = "" if self.switches else "no bridge is connected"
        results = []
        for state in list(self.switches.values()):
            synced = self._sync(state, timeout) if state.ready else False
            if synced and state.fresh and not state.probed and self.tunnel_peers is not None:
                state.probed = True
                self._probe_tunnel(state.datapath, self.tunnel_peers)
            results.append(synced)
        return bool(results) and all(results)

    def request_stats(self, make: Any, timeout: float = 2.0) -> list[Any]:
        """Send the multipart request ``make(datapath)`` to every ready bridge and return the
        bodies of their replies (port or flow stats: what a metrics scrape reads).
        TimeoutError when a bridge does not answer within ``timeout`` seconds."""
        asked = []
        with self._lock:
            for state in self.switches.values():
                if not state.ready:
                    continue
                dp = state.datapath
                request = make(dp)
                dp.set_xid(request)
                state.replies[request.xid] = reply = StatsReply()
                dp.send_msg(request)
                asked.append((state, request.xid, reply))
        bodies: list[Any] = []
        for state, xid, reply in asked:
            answered = reply.done.wait(timeout)
            with self._lock:
                state.replies.pop(xid, None)
            if not answered:
                raise TimeoutError(f"bridge {state.datapath.id:016x} did not answer a stats "
                                   f"request within {timeout:.0f} s")
            bodies += reply.body
        return bodies

    # --- internals ----------------------------------------------------------------------
    def _forget(self, state: SwitchState) -> None:
        """Drop a connection's state (if it is still the current one of its datapath); call
        with the lock held."""
        dp_id = state.datapath.id
        if self.switches.get(dp_id) is state:
            del self.switches[dp_id]
            if not self.switches:
                self.connected.clear()

    def _probe_tunnel(self, dp: Any, peers: TunnelPeers) -> threading.Thread:
        """Have a freshly started OVS learn every other host's underlay MAC now, before the
        first packets to that host: on the userspace datapath OVS starts with an empty tunnel
        neighbor cache and drops the packet whose translation sends the ARP request, so each
        host's first packet (a new connection's SYN, retransmitted only after 1 s) was lost."""

        def run() -> None:
            start = time.monotonic()
            for delay in self.probe_delays:
                time.sleep(max(0.0, start + delay - time.monotonic()))
                with self._lock:
                    state = self.switches.get(dp.id)
                    if state is None or state.datapath is not dp:
                        return  # disconnected meanwhile; the next connection probes again
                    for address in peers.addresses:
                        dp.send_msg(ofmsg.tunnel_probe(dp, peers.port, address))

        thread = threading.Thread(target=run, name="tunnel-probe", daemon=True)
        thread.start()
        return thread

    def _sync(self, state: SwitchState, timeout: float) -> bool:
        with self._lock:
            wanted = self.wanted or []
            diff = diff_flows(wanted, state.installed)
            gdiff = diff_groups(self.wanted_groups, state.groups)
            if not diff and not gdiff:
                return True
            dp = state.datapath
            ofp, parser = dp.ofproto, dp.ofproto_parser
            self._bundle_id = (self._bundle_id + 1) & 0xFFFFFFFF
            bundle = self._bundle_id
            flags = ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED
            xids = []
            opened = parser.ONFBundleCtrlMsg(dp, bundle, ofp.ONF_BCT_OPEN_REQUEST, flags, [])
            dp.send_msg(opened)
            xids.append(opened.xid)
            # Groups a new flow points at exist first; groups are deleted after their flows.
            mods = [ofmsg.group_mod(dp, g, "add") for g in gdiff.add]
            mods += [ofmsg.group_mod(dp, g, "modify") for g in gdiff.modify]
            mods += [ofmsg.delete_cookie(dp, c) for c in diff.delete]
            mods += [ofmsg.add_flow(dp, f) for f in diff.add]
            mods += [ofmsg.group_mod(dp, g, "delete") for g in gdiff.delete]
            for mod in mods:
                add = parser.ONFBundleAddMsg(dp, bundle, flags, mod, [])
                dp.send_msg(add)
                xids.append(add.xid)
            commit = parser.ONFBundleCtrlMsg(dp, bundle, ofp.ONF_BCT_COMMIT_REQUEST, flags, [])
            dp.send_msg(commit)
            xids.append(commit.xid)
            barrier = parser.OFPBarrierRequest(dp)
            dp.set_xid(barrier)
            done = threading.Event()
            state.barriers[barrier.xid] = done
            dp.send_msg(barrier)
            self.flow_mods_sent += len(diff.delete) + len(diff.add)
            self.group_mods_sent += len(gdiff.add) + len(gdiff.modify) + len(gdiff.delete)
            self.bundles_sent += 1
        # ovs-vswitchd commits a bundle flow by flow: thousands take seconds on a busy host
        confirmed = done.wait(timeout + 0.002 * len(mods))
        with self._lock:
            state.barriers.pop(barrier.xid, None)
            errors = [state.errors.pop(x) for x in xids if x in state.errors]
            if errors:
                self.failure = f"datapath {dp.id:016x} refused flows: {'; '.join(errors)}"
            elif not confirmed:
                self.failure = (f"datapath {dp.id:016x} did not confirm flows within "
                                f"{timeout + 0.002 * len(mods):.0f} s; its connection was "
                                "dropped")
                self._forget(state)
                dp.close()
            if not confirmed or errors:
                LOG.error("bundle %d not applied: %s", bundle, self.failure)
                return False
            state.installed.difference_update(diff.delete)
            state.installed.update(f.cookie for f in diff.add)
            for g in gdiff.delete:
                state.groups.pop(g.group_id, None)
            state.groups.update((g.group_id, g) for g in gdiff.add + gdiff.modify)
        LOG.info("bridge %016x: -%d +%d flows, %d group changes", dp.id, len(diff.delete),
                 len(diff.add), len(gdiff.add) + len(gdiff.modify) + len(gdiff.delete))
        return True
