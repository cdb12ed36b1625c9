"""Isolated L2 networks on real OVS and namespaces, driven through the CLI."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import consul
import pytest

from tests.harness import Switchboard, in_ns, pings, sh, wait_until

pytestmark = pytest.mark.integration

LAB = """
name: sbt-lab
networks:
  red: {subnet: 10.231.1.0/24}
  blue: {subnet: 10.231.2.0/24, mtu: 1400}
containers:
  r1: {networks: {red: {ip: 10.231.1.10}}}
  r2:
    networks: [red]
    command: python3 -m http.server 8080
  b1: {networks: [blue, red]}
"""

OTHER = """
name: sbt-other
networks:
  lan: {subnet: 10.231.9.0/24}
containers:
  o1: {networks: {lan: {ip: 10.231.9.10}}}
"""


def _rows(sb: Switchboard, topology: str) -> dict[tuple[str, str], dict]:
    return {(r["container"], r["network"]): r for r in sb.status(topology)["containers"]}


@pytest.fixture(scope="module")
def lab(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("lab")
    switchboard.up(tmp, LAB)
    switchboard.up(tmp, OTHER, "other.yaml")
    yield _rows(switchboard, "sbt-lab")
    switchboard.cli("down", "sbt-other", check=False)
    switchboard.cli("down", "sbt-lab", check=False)


def test_containers_on_the_same_network_reach_each_other(lab):
    r2_ip = lab[("r2", "red")]["ip"]
    assert pings("sb-sbt-lab-r1", r2_ip, count=3)
    assert pings("sb-sbt-lab-b1", "10.231.1.10")  # b1's second network is red


def test_networks_without_a_router_are_isolated(lab):
    b1_blue = lab[("b1", "blue")]["ip"]
    assert not pings("sb-sbt-lab-r1", b1_blue)


def test_topologies_are_isolated_from_each_other(lab):
    assert not pings("sb-sbt-lab-r1", "10.231.9.10")
    assert not pings("sb-sbt-other-o1", "10.231.1.10")


def test_interfaces_have_planned_address_mac_mtu_and_default_route(lab):
    row = lab[("b1", "blue")]
    link = json.loads(in_ns("sb-sbt-lab-b1", "ip -j addr show eth0").stdout)[0]
    assert link["address"] == row["mac"] and link["mtu"] == 1400
    assert any(a["local"] == row["ip"] for a in link["addr_info"])
    route = in_ns("sb-sbt-lab-b1", "ip route show default").stdout
    assert "via 10.231.2.1 dev eth0" in route
    assert in_ns("sb-sbt-lab-b1", "ip -j link show eth1").returncode == 0


def test_host_reaches_every_container_and_tcp_works(lab):
    for row in lab.values():
        assert sh(f"ping -c 1 -W 1 {row['ip']}").returncode == 0, row
    r2_ip = lab[("r2", "red")]["ip"]
    assert wait_until(lambda: sh(f"curl -sf -m 2 http://{r2_ip}:8080/").returncode == 0, 10)
    big = in_ns("sb-sbt-lab-r1", f"curl -sf -m 10 -o /dev/null -w %{{size_download}} "
                f"http://{r2_ip}:8080/")
    assert big.returncode == 0


def test_spoofed_source_mac_is_dropped(lab):
    ns = "sb-sbt-lab-r1"
    real = lab[("r1", "red")]["mac"]
    try:
        in_ns(ns, "ip link set eth0 address 02:de:ad:00:00:01")
        assert not pings(ns, lab[("r2", "red")]["ip"])
    finally:
        in_ns(ns, f"ip link set eth0 address {real}")
    assert pings(ns, lab[("r2", "red")]["ip"])


def test_spoofed_source_ip_is_dropped(lab):
    ns = "sb-sbt-lab-r1"
    try:
        in_ns(ns, "ip addr add 10.231.1.99/24 dev eth0")
        spoofed = in_ns(ns, f"ping -c 1 -W 1 -I 10.231.1.99 {lab[('r2', 'red')]['ip']}")
        assert spoofed.returncode != 0
    finally:
        in_ns(ns, "ip addr del 10.231.1.99/24 dev eth0")


def _converged_by(sb: Switchboard, topology: str, pid: int) -> bool:
    report = sb.status(topology)
    return report["state"] == "converged" and report["daemon_pid"] == pid


def test_command_runs_logs_and_survives_a_controller_restart(switchboard, lab):
    r2_ip = lab[("r2", "red")]["ip"]
    pids_before = sh("ip netns pids sb-sbt-lab-r2").stdout
    assert pids_before.strip()
    switchboard.kill(signal.SIGKILL)
    switchboard.start()
    assert sh("ip netns pids sb-sbt-lab-r2").stdout == pids_before
    assert wait_until(lambda: _converged_by(switchboard, "sbt-lab", switchboard.proc.pid), 20)
    assert wait_until(lambda: sh(f"curl -sf -m 2 http://{r2_ip}:8080/").returncode == 0, 10)
    logs = list(Path(switchboard.state_dir).rglob("r2.log"))
    assert logs and "GET / HTTP" in logs[0].read_text()


def test_reapplying_the_same_file_changes_nothing(switchboard, lab, tmp_path):
    before = switchboard.counters("sbt-lab")
    flows = switchboard.flows()
    switchboard.up(tmp_path, LAB)
    assert switchboard.counters("sbt-lab") == before
    assert switchboard.flows() == flows


def test_attach_by_pid_plugs_an_existing_namespace(switchboard, tmp_path):
    proc = subprocess.Popen(["unshare", "-n", "sleep", "300"])
    try:
        switchboard.up(tmp_path, f"""
            name: sbt-attach
            networks:
              lan: {{subnet: 10.231.5.0/24}}
            containers:
              app: {{networks: {{lan: {{ip: 10.231.5.10}}}}}}
              legacy:
                attach: {{pid: {proc.pid}}}
                networks: {{lan: {{ip: 10.231.5.20}}}}
            """)
        assert pings("sb-sbt-attach-app", "10.231.5.20")
        addrs = sh(f"nsenter --net=/proc/{proc.pid}/ns/net ip -4 -o addr show eth0").stdout
        assert "10.231.5.20/24" in addrs
        switchboard.cli("down", "sbt-attach")
        assert proc.poll() is None  # the attached process is not ours to stop
        assert "sb-sbt-attach-legacy" not in sh("ip netns list").stdout
    finally:
        proc.kill()
        proc.wait()
        switchboard.cli("down", "sbt-attach", check=False)


EDIT_BASE = """
name: sbt-edit
networks:
  lan: {subnet: 10.231.6.0/24}
containers:
  keep: {networks: {lan: {ip: 10.231.6.10}}}
  move: {networks: {lan: {ip: 10.231.6.20}}}
  gone: {networks: [lan]}
"""

EDIT_NEXT = """
name: sbt-edit
networks:
  lan: {subnet: 10.231.6.0/24}
containers:
  keep: {networks: {lan: {ip: 10.231.6.10}}}
  move: {networks: {lan: {ip: 10.231.6.21}}}
  new: {networks: [lan]}
"""


def _owned_flows(sb: Switchboard, mac: str) -> list[str]:
    return [f for f in sb.flows() if mac in f]


def test_editing_the_file_changes_only_what_differs(switchboard, tmp_path):
    try:
        switchboard.up(tmp_path, EDIT_BASE)
        before = _rows(switchboard, "sbt-edit")
        keep_flows = _owned_flows(switchboard, before[("keep", "lan")]["mac"])
        keep_ino = sh("stat -c %i /var/run/netns/sb-sbt-edit-keep").stdout
        switchboard.up(tmp_path, EDIT_NEXT)
        after = _rows(switchboard, "sbt-edit")
        assert set(after) == {("keep", "lan"), ("move", "lan"), ("new", "lan")}
        assert after[("keep", "lan")] == before[("keep", "lan")]
        assert _owned_flows(switchboard, before[("keep", "lan")]["mac"]) == keep_flows
        assert sh("stat -c %i /var/run/netns/sb-sbt-edit-keep").stdout == keep_ino
        assert after[("move", "lan")]["ip"] == "10.231.6.21"
        assert "sb-sbt-edit-gone" not in sh("ip netns list").stdout
        assert pings("sb-sbt-edit-keep", "10.231.6.21")
        assert pings("sb-sbt-edit-new", "10.231.6.10")
        assert not _owned_flows(switchboard, before[("gone", "lan")]["mac"])
    finally:
        switchboard.cli("down", "sbt-edit", check=False)


def test_down_leaves_nothing_behind(switchboard, tmp_path):
    switchboard.up(tmp_path, EDIT_BASE)
    rows = _rows(switchboard, "sbt-edit")
    switchboard.cli("down", "sbt-edit")
    assert "sb-sbt-edit" not in sh("ip netns list").stdout
    ports = sh(f"ovs-vsctl list-ports {switchboard.bridge}").stdout
    links = sh("ip -o link show").stdout
    for row in rows.values():
        assert row["port"] not in ports and row["port"] not in links
        assert not _owned_flows(switchboard, row["mac"])
        assert row["ip"] not in " ".join(switchboard.flows())
    assert "10.231.6." not in sh("ip -4 -o addr show").stdout  # host leg gone
    _, keys = consul.Consul().kv.get(f"{switchboard.prefix}/topologies/sbt-edit/", keys=True)
    assert not keys
