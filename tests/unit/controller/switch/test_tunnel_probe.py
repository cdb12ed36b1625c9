"""A freshly started OVS on the userspace datapath learns the other hosts' underlay MACs from
the tunnel probes sent right after its flows are in, not from the first packets to them."""

from __future__ import annotations

import threading
import time
from typing import Any

from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller.daemon.daemon import tunnel_peers
from controller.pipeline.flows import Flow
from controller.switch import ofmsg
from controller.switch.app import SwitchboardApp, SwitchState, TunnelPeers
from sbcore.plan.hostplan import PeerHost, Site


class FakeDatapath:
    """Records what is sent; answers barriers at once."""

    ofproto = ofproto_v1_3
    ofproto_parser = ofproto_v1_3_parser

    def __init__(self, app: SwitchboardApp, dpid: int = 1) -> None:
        self.app, self.id, self.sent, self._xid = app, dpid, [], 0

    def set_xid(self, msg: Any) -> None:
        self._xid += 1
        msg.set_xid(self._xid)

    def send_msg(self, msg: Any) -> None:
        if msg.xid is None:
            self.set_xid(msg)
        self.sent.append(msg)
        if isinstance(msg, ofproto_v1_3_parser.OFPBarrierRequest):
            self.app.switches[self.id].barriers[msg.xid].set()

    def probes(self) -> list[Any]:
        return [m for m in self.sent if isinstance(m, ofproto_v1_3_parser.OFPPacketOut)]


def connected(installed: set[int]) -> tuple[SwitchboardApp, FakeDatapath]:
    app = SwitchboardApp()
    app.probe_delays = (0.0, 0.01)
    dp = FakeDatapath(app)
    app.switches[dp.id] = SwitchState(datapath=dp, installed=installed, ready=True,
                                      fresh=not installed)
    app.tunnel_peers = TunnelPeers(7, ("10.99.1.2", "10.99.1.3"))
    return app, dp


def wait_for(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(check())


def probing_done() -> bool:
    """No probe thread is left: every probe that was going out has gone out (a probe thread
    is started inside ``program``, so one that a pass started is alive when it returns)."""
    return wait_for(lambda: not any(t.name == "tunnel-probe" for t in threading.enumerate()),
                    10.0)


FLOW = Flow(table="classifier", priority=1, match=(("in_port", 1),))


def test_a_fresh_bridge_probes_every_other_host_through_the_tunnel_after_its_flows() -> None:
    app, dp = connected(installed=set())
    assert app.program([FLOW])
    assert wait_for(lambda: len(dp.probes()) == 4)  # two hosts, two rounds
    first_probe = dp.sent.index(dp.probes()[0])
    assert any(isinstance(m, ofproto_v1_3_parser.OFPBarrierRequest)
               for m in dp.sent[:first_probe]), "probes go out once the flows are confirmed"
    probe = dp.probes()[0]
    assert probe.in_port == ofproto_v1_3.OFPP_CONTROLLER and probe.data == ofmsg.TUNNEL_PROBE
    fields = {a.key: a.value for a in probe.actions
              if isinstance(a, ofproto_v1_3_parser.OFPActionSetField)}
    assert fields == {"tunnel_id": 0, "tun_ipv4_dst": "10.99.1.2"}
    assert probe.actions[-1].port == 7
    assert {p.actions[1].value for p in dp.probes()} == {"10.99.1.2", "10.99.1.3"}
    app.program([FLOW])  # later passes: no more probes on this connection
    assert probing_done()
    assert len(dp.probes()) == 4


def test_a_bridge_that_kept_its_flows_is_not_probed() -> None:
    """A daemon restart finds OVS with its flows and its neighbor cache."""
    app, dp = connected(installed={FLOW.cookie})
    assert app.program([FLOW])
    assert probing_done()
    assert dp.probes() == []


def test_probes_stop_when_the_bridge_disconnects() -> None:
    app, dp = connected(installed=set())
    app.probe_delays = (0.0, 0.2)
    assert app.program([FLOW])
    assert wait_for(lambda: len(dp.probes()) == 2)
    with app._lock:
        del app.switches[dp.id]
    assert probing_done()  # the second round was due 0.2 s after the first
    assert len(dp.probes()) == 2


def test_the_peers_are_the_other_hosts_with_a_tunnel_address() -> None:
    site = Site(host="h1", slot=1, peers={"h1": PeerHost(1, "10.99.1.1"),
                                          "h2": PeerHost(2, "10.99.1.2"),
                                          "h3": PeerHost(3, None)})
    assert tunnel_peers(site, 5) == TunnelPeers(5, ("10.99.1.2",))
    assert tunnel_peers(site, None) is None
    assert tunnel_peers(Site(host="h1", peers={"h1": PeerHost(1, "10.99.1.1")}), 5) is None
