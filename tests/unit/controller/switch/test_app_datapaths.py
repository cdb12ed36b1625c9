"""The switch app programs its own bridge only, and a datapath that stops answering is dropped
the first time, so that it never delays a later pass."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from controller.pipeline.flows import Flow
from controller.switch.app import SwitchboardApp, SwitchState
from sbcore.model.naming import datapath_id
from tests.unit.controller.switch.test_tunnel_probe import FakeDatapath

FLOW = Flow(table="classifier", priority=1, match=(("in_port", 1),))
OWN, FOREIGN = 0x0A, 0x0B


class SilentDatapath(FakeDatapath):
    """Records what is sent; never answers a barrier (a bridge that went away)."""

    closed = False

    def send_msg(self, msg: Any) -> None:
        if msg.xid is None:
            self.set_xid(msg)
        self.sent.append(msg)

    def close(self) -> None:
        self.closed = True


def features(dp: Any) -> SimpleNamespace:
    return SimpleNamespace(msg=SimpleNamespace(datapath=dp))


def test_a_foreign_datapath_gets_nothing_and_is_logged_once(caplog):
    app = SwitchboardApp()
    app.datapath_id = OWN
    foreign = FakeDatapath(app, dpid=FOREIGN)
    with caplog.at_level(logging.WARNING, logger="switchboard.controller"):
        app.on_switch_features(features(foreign))
        app.on_switch_features(features(foreign))  # it connects again
    assert foreign.sent == []
    assert app.switches == {} and not app.connected.is_set()
    named = [r for r in caplog.records if f"{FOREIGN:016x}" in r.getMessage()]
    assert len(named) == 1, [r.getMessage() for r in caplog.records]
    assert app.program([FLOW]) is False
    assert foreign.sent == []


def test_its_own_datapath_is_read_and_programmed():
    app = SwitchboardApp()
    app.datapath_id = OWN
    own = FakeDatapath(app, dpid=OWN)
    app.on_switch_features(features(own))
    assert OWN in app.switches and own.sent  # its flows and groups are being read
    app.switches[OWN].ready = True
    assert app.program([FLOW]) is True


def test_a_datapath_that_does_not_confirm_is_dropped_the_first_time():
    app = SwitchboardApp()
    dead = SilentDatapath(app, dpid=OWN)
    app.switches[OWN] = SwitchState(datapath=dead, ready=True)
    app.connected.set()
    assert app.program([FLOW], timeout=0.05) is False
    assert f"{OWN:016x}" in app.failure and "did not confirm" in app.failure
    assert dead.closed and app.switches == {} and not app.connected.is_set()
    sent = len(dead.sent)
    assert app.program([FLOW], timeout=0.05) is False  # nothing left to wait on
    assert len(dead.sent) == sent and app.failure == "no bridge is connected"


def test_bridge_datapath_ids_are_stable_distinct_and_valid_for_ovs():
    ids = {datapath_id(name) for name in ("sb-int", "sbt123", "sbt124", "br0")}
    assert len(ids) == 4
    assert datapath_id("sb-int") == datapath_id("sb-int")
    assert all(0 < i < 1 << 48 for i in ids)
