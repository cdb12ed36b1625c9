"""Bridges that are not the daemon's own, on real OVS: one pointed at the daemon's OpenFlow
port gets no flow, is logged once, and going away never delays the daemon's own bridge."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Switchboard, sh, wait_until

pytestmark = pytest.mark.integration

TOPO, OTHER = "sbt-fb", "sbt-fb2"


def small_topology(name: str, third_octet: int) -> str:
    return f"""
name: {name}
networks: {{n: {{subnet: 10.233.{third_octet}.0/24}}}}
containers:
  a: {{networks: {{n: {{ip: 10.233.{third_octet}.10}}}}}}
  b: {{networks: {{n: {{ip: 10.233.{third_octet}.11}}}}}}
"""


def vsctl(*args: str) -> str:
    return sh("ovs-vsctl " + " ".join(args), check=True).stdout.strip()


def flow_count(bridge: str) -> int:
    out = sh(f"ovs-ofctl -O OpenFlow13 dump-flows {bridge}", check=True).stdout
    return sum("cookie=" in line for line in out.splitlines())


def connected(bridge: str) -> bool:
    uuid = vsctl(f"get Bridge {bridge} controller").strip("[]")
    return bool(uuid) and vsctl(f"get Controller {uuid} is_connected") == "true"


@pytest.fixture
def foreign(switchboard: Switchboard) -> Iterator[str]:
    """A bridge that is not the daemon's, pointed at the daemon's OpenFlow port."""
    name = f"sbf{os.getpid() % 100000}"
    port = switchboard.env["SWITCHBOARD_OF_PORT"]
    sh(f"ovs-vsctl --if-exists del-br {name}")
    vsctl(f"add-br {name} -- set Bridge {name} datapath_type=netdev fail_mode=secure "
          f"protocols=OpenFlow13 -- set-controller {name} tcp:127.0.0.1:{port}")
    try:
        assert wait_until(lambda: connected(name), 15), f"{name} never connected"
        yield name
    finally:
        sh(f"ovs-vsctl --if-exists del-br {name}")


def log_lines(sb: Switchboard, text: str) -> list[str]:
    return [line for line in sb.log.read_text().splitlines() if text in line]


def test_a_foreign_bridge_on_the_daemons_port_gets_no_flows(
    switchboard: Switchboard, foreign: str, tmp_path: Path
):
    dpid = vsctl(f"get Bridge {foreign} datapath_id").strip('"')
    try:
        switchboard.up(tmp_path, small_topology(TOPO, 1))
        assert flow_count(switchboard.bridge) > 0  # the daemon's own bridge is programmed
        assert flow_count(foreign) == 0
        named = log_lines(switchboard, dpid)
        assert len(named) == 1 and "not its bridge" in named[0], named
    finally:
        switchboard.cli("down", TOPO, check=False)


def test_a_foreign_bridge_that_goes_away_does_not_stall_the_next_up(
    switchboard: Switchboard, foreign: str, tmp_path: Path
):
    dpid = vsctl(f"get Bridge {foreign} datapath_id").strip('"')
    sh(f"ovs-vsctl del-br {foreign}", check=True)
    try:
        switchboard.up(tmp_path, small_topology(OTHER, 2))
        assert switchboard.status(OTHER)["state"] == "converged"
        assert not [line for line in log_lines(switchboard, "not applied") if dpid in line]
        assert sh(f"ip netns exec sb-{OTHER}-a ping -c 1 -W 2 10.233.2.11").returncode == 0
    finally:
        switchboard.cli("down", OTHER, check=False)
