"""Restarts without loss: the daemon killed with SIGKILL, and ovs-vswitchd restarted."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Iterator

import pytest

from controller.pipeline.compiler import compile_pipeline
from sbcore.plan.hostplan import plan_topology
from sbcore.state.store import Store, consul_client
from tests.harness import Switchboard, pings, sh, wait_until

pytestmark = pytest.mark.integration

TOPOLOGY = """
name: sbt-restart
networks:
  front: {subnet: 10.231.48.0/24}
  back: {subnet: 10.231.49.0/24}
routers:
  core: {networks: [front, back]}
policies:
  - {from: front, to: back, ports: [icmp, tcp/8080]}
containers:
  web: {networks: {front: {ip: 10.231.48.10}}}
  api: {networks: {back: {ip: 10.231.49.10}}}
"""
API = "10.231.49.10"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


@pytest.fixture(scope="module")
def topology(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    switchboard.up(tmp_path_factory.mktemp("restart"), TOPOLOGY)
    yield "sbt-restart"
    switchboard.cli("down", "sbt-restart", check=False)
    assert "sb-sbt-restart-" not in sh("ip netns list").stdout


def dump_flows(sb: Switchboard) -> list[str]:
    """Every flow on the bridge, sorted (``--no-stats`` prints no header line to skip)."""
    out = sh(f"ovs-ofctl -O OpenFlow13 --no-stats dump-flows {sb.bridge}").stdout
    return sorted(line.strip() for line in out.splitlines() if "cookie=" in line)


def _cookie(line: str) -> int:
    return int(re.search(r"cookie=(0x[0-9a-f]+)", line).group(1), 16)


def wanted_cookies(sb: Switchboard) -> set[int]:
    """The cookies the compiler wants for every applied topology, given the bridge's ofports."""
    store = Store(consul_client("http://127.0.0.1:8500"), sb.prefix)
    plans = [plan_topology(s.topology, s.allocation) for s in store.applied().values()]
    names = [ep.port for p in plans for ep in p.endpoints()]
    names += [n.host_leg.port for p in plans for n in p.networks]
    ports = {}
    for name in names:
        ofport = sh(f"ovs-vsctl get Interface {name} ofport").stdout.strip()
        ports[name] = int(ofport)
    return {f.cookie for f in compile_pipeline(plans, ports).flows}


def assert_exactly_wanted(sb: Switchboard, flows: list[str]) -> None:
    cookies = [_cookie(line) for line in flows]
    assert len(cookies) == len(set(cookies)), "duplicate flows on the bridge"
    assert set(cookies) == wanted_cookies(sb)


def converged_by(sb: Switchboard, topology: str, pid: int) -> bool:
    report = sb.status(topology)
    return report["state"] == "converged" and report["daemon_pid"] == pid


def start_ping(netns: str, address: str, count: int) -> subprocess.Popen[str]:
    """20 pings a second from the namespace, in the background."""
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, "ping", "-i", "0.05", "-W", "1", "-c", str(count),
         address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_daemon_killed_and_restarted_loses_no_ping_and_sends_no_flow_mod(switchboard, topology):
    flows_before = dump_flows(switchboard)
    assert_exactly_wanted(switchboard, flows_before)
    old_pid = switchboard.proc.pid
    ping = start_ping("sb-sbt-restart-web", API, count=160)  # 8 seconds
    try:
        time.sleep(1.5)
        switchboard.kill()  # SIGKILL
        switchboard.start()
        new_pid = switchboard.proc.pid
        assert new_pid != old_pid
        assert wait_until(lambda: converged_by(switchboard, topology, new_pid), 30), \
            switchboard.log_tail()
        assert ping.poll() is None, "the ping ended before the daemon had restarted"
        out, _ = ping.communicate(timeout=30)
    finally:
        if ping.poll() is None:
            ping.kill()
            ping.wait()
    assert " 0% packet loss" in out, out
    assert dump_flows(switchboard) == flows_before
    assert_exactly_wanted(switchboard, dump_flows(switchboard))
    assert switchboard.counters(topology)["flow_mods"] == 0
    assert switchboard.counters(topology)["bundles"] == 0


def vswitchd_running() -> bool:
    return sh("ovs-appctl -t ovs-vswitchd version").returncode == 0


def start_vswitchd() -> None:
    """Start ovs-vswitchd alone (userspace-tso-enable stays in the database)."""
    sh(f"{shlex.quote(OVS_CTL)} start --no-ovsdb-server", timeout=60)


def test_vswitchd_restart_is_survived_and_the_bridge_reprogrammed(switchboard, topology):
    flows_before = dump_flows(switchboard)
    addresses = sh("ip -4 -o addr show").stdout
    legs = [line.split()[1] for line in addresses.splitlines() if " 10.231.4" in line]
    assert len(legs) == 2, addresses
    try:
        assert sh("ovs-appctl -t ovs-vswitchd exit", timeout=30).returncode == 0
        assert wait_until(lambda: not vswitchd_running(), 10)
        start_vswitchd()
        assert vswitchd_running()
        assert wait_until(lambda: pings("sb-sbt-restart-web", API, wait=0.3), 30)
    finally:
        if not vswitchd_running():
            start_vswitchd()
    assert wait_until(lambda: dump_flows(switchboard) == flows_before, 5)
    assert_exactly_wanted(switchboard, dump_flows(switchboard))
    for leg in legs:  # the host legs (internal ports) keep their addresses
        assert " 10.231.4" in sh(f"ip -4 -o addr show dev {leg}").stdout, leg
    assert sh(f"ping -c 1 -W 1 {API}").returncode == 0  # the host reaches containers again
