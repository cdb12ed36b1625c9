"""Egress: containers reach an outside namespace (198.18.25.0/24) through the host,
source-NATed to the host's address; a policy can refuse it; nothing from outside gets in;
`down` of the last topology leaves the host's nftables ruleset, routes and forwarding flags
as they were."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    Switchboard,
    free_port,
    in_ns,
    private_switchboard,
    sh,
    teardown,
    wait_until,
)
from tests.outside import Outside

pytestmark = pytest.mark.integration

NAME = "sbt-out-egress"
TOPOLOGY = f"""
name: {NAME}
networks:
  lan: {{subnet: 10.182.1.0/24}}
  shut: {{subnet: 10.182.2.0/24, egress: false}}
containers:
  web:
    networks: {{lan: {{ip: 10.182.1.10}}}}
    command: python3 -m http.server 8080
  island: {{networks: {{shut: {{ip: 10.182.2.10}}}}}}
"""
WEB = f"sb-{NAME}-web"


def host_state() -> dict[str, str]:
    """What the daemon may change on the host and must put back: the nftables tables, and
    by interface the routes through it and its forwarding flag (``ip_forward`` too). Other
    work on this machine adds and removes interfaces and tables meanwhile: compare with
    ``same``, and look for the daemon's own tables by name."""
    state = {"ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text()}
    for table in sh("nft list tables", check=True).stdout.splitlines():  # "table FAMILY NAME"
        text = sh(f"nft -s list {table}").stdout  # -s: without counters
        if "switchboard" not in table:  # another's (its rules change with its own work):
            text = "\n".join(line for line in text.splitlines()  # anything of ours in it
                              if "10.182." in line or "sbh" in line or "198.18." in line)
        state[f"nft {table}"] = text
    for conf in Path("/proc/sys/net/ipv4/conf").iterdir():
        try:
            state[f"forwarding {conf.name}"] = (conf / "forwarding").read_text()
        except OSError:
            continue
    for line in sh("ip route").stdout.splitlines():
        dev = line.split(" dev ")[1].split()[0] if " dev " in line else ""
        state[f"routes {dev}"] = state.get(f"routes {dev}", "") + line + "\n"
    return state


USERS_TABLE = "nft table ip switchboard"  # a daemon on the default bridge: never a test's


def same(before: dict[str, str], after: dict[str, str]) -> bool:
    """Equal on everything both know of, host legs aside (they go with their network), and
    the table of a user's daemon on the default bridge aside: its uplinks (so its rules)
    follow the interfaces the tests add."""
    keys = {k for k in before.keys() & after.keys() if "sbh" not in k and k != USERS_TABLE}
    return {k: before[k] for k in keys} == {k: after[k] for k in keys}


@pytest.fixture(scope="module")
def outside() -> Iterator[Outside]:
    with Outside(25) as out:
        yield out


@pytest.fixture(scope="module")
def egress(switchboard: Switchboard, outside: Outside,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    before = host_state()
    switchboard.up(tmp_path_factory.mktemp("egress"), TOPOLOGY)
    try:
        yield before
    finally:
        switchboard.cli("down", NAME, check=False)


def _curl(netns: str, url: str) -> str:
    return in_ns(netns, f"curl -s -m 3 {url}").stdout


def test_tcp_udp_and_icmp_reach_the_outside_from_the_hosts_address(
        egress: dict[str, str], outside: Outside) -> None:
    url = f"http://{outside.ip}:8080/"
    assert wait_until(lambda: _curl(WEB, url) == outside.root_ip, 30), \
        f"TCP: the outside server saw {_curl(WEB, url)!r}, not the host's {outside.root_ip}"
    udp = in_ns(WEB, f"python3 -c \"import socket; s = socket.socket(2, 2); s.settimeout(3); "
                     f"s.sendto(b'hi', ('{outside.ip}', 5353)); print(s.recv(100).decode())\"")
    assert udp.stdout.strip() == outside.root_ip, udp.stderr
    assert in_ns(WEB, f"ping -c 1 -W 2 {outside.ip}").returncode == 0


def test_a_network_with_egress_off_stays_an_island(egress: dict[str, str],
                                                   outside: Outside) -> None:
    assert wait_until(lambda: _curl(WEB, f"http://{outside.ip}:8080/") == outside.root_ip, 30)
    assert in_ns(f"sb-{NAME}-island", f"ping -c 1 -W 2 {outside.ip}").returncode != 0


def test_egress_does_not_reach_the_hosts_own_listeners(egress: dict[str, str],
                                                       outside: Outside) -> None:
    """A server on the host's address toward the outside is not egress: the host's table
    drops a new connection that arrives on a leg for any host address but the leg's."""
    server = sh(f"python3 -m http.server 18125 --bind {outside.root_ip} >/dev/null 2>&1 & "
                "echo $!")
    pid = int(server.stdout.strip())
    try:
        assert wait_until(lambda: sh(f"curl -s -o /dev/null -m 1 http://{outside.root_ip}"
                                     ":18125/").returncode == 0, 10)
        assert wait_until(lambda: _curl(WEB, f"http://{outside.ip}:8080/") == outside.root_ip,
                          30)
        assert in_ns(WEB, f"curl -s -o /dev/null -m 3 http://{outside.root_ip}:18125/"
                     ).returncode != 0
    finally:
        sh(f"kill {pid}")


def test_an_outside_client_routing_the_subnet_through_the_host_gets_nothing(
        egress: dict[str, str], outside: Outside) -> None:
    assert wait_until(lambda: _curl(WEB, f"http://{outside.ip}:8080/") == outside.root_ip, 30)
    outside.run(f"ip route add 10.182.0.0/16 via {outside.root_ip}")
    try:
        probe = outside.run("curl -s -o /dev/null -m 3 http://10.182.1.10:8080/")
        assert probe.returncode != 0, "an unpublished container port answered from outside"
        assert outside.run("ping -c 1 -W 2 10.182.1.10").returncode != 0
    finally:
        outside.run("ip route del 10.182.0.0/16")


def test_a_policy_refuses_egress_its_rules_do_not_allow(
        switchboard: Switchboard, egress: dict[str, str], outside: Outside,
        tmp_path: Path) -> None:
    url = f"http://{outside.ip}:8080/"
    assert wait_until(lambda: _curl(WEB, url) == outside.root_ip, 30)
    closed = TOPOLOGY + """
policies:
  - {from: lan, to: "cidr:198.18.99.0/24", ports: [tcp/8080]}
"""
    switchboard.up(tmp_path, closed)
    try:
        assert wait_until(lambda: _curl(WEB, url) == "", 30), "egress passed without a rule"
        assert in_ns(WEB, f"ping -c 1 -W 2 {outside.ip}").returncode != 0
        opened = closed.replace("198.18.99.0/24", "198.18.25.0/24")
        switchboard.up(tmp_path, opened)
        assert wait_until(lambda: _curl(WEB, url) == outside.root_ip, 30)
        assert in_ns(WEB, f"ping -c 1 -W 2 {outside.ip}").returncode != 0  # tcp/8080 only
    finally:
        switchboard.up(tmp_path, TOPOLOGY)


def test_down_leaves_the_host_as_it_was(switchboard: Switchboard, egress: dict[str, str],
                                        outside: Outside) -> None:
    assert wait_until(lambda: _curl(WEB, f"http://{outside.ip}:8080/") == outside.root_ip, 30)
    during = host_state()
    ours = [key for key in during if key.startswith("nft table ip switchboard_")]
    assert ours and "masquerade" in during[ours[0]]
    switchboard.cli("down", NAME)
    assert "forwarding eth0" in egress and f"forwarding {outside.veth}" in egress
    assert wait_until(lambda: same(egress, host_state())
                      and not any(key in host_state() for key in ours), 30), (
        f"before:\n{egress}\nafter down:\n{host_state()}")


STOPPING = """
name: sbt-out-stop
networks:
  lan: {subnet: 10.182.3.0/24}
containers:
  probe: {networks: {lan: {ip: 10.182.3.10}}}
"""


def test_a_daemon_that_stops_for_good_removes_its_table_and_a_killed_ones_is_cleaned(
        tmp_path: Path) -> None:
    """SIGKILL leaves the table and forwarding flags; the next start removes them (then makes
    what its topologies need); SIGTERM removes them, with the topology still up."""
    run = os.getpid()
    sb = private_switchboard(tmp_path, prefix=f"sbt25stop-{run}", bridge=f"sbt25s{run % 10000}",
                             of_port=free_port())
    table = f"table ip switchboard_{sb.bridge}"
    with Outside(27) as outside:
        before = host_state()
        sb.start()
        sb.wait_ready()
        try:
            sb.up(tmp_path, STOPPING)
            probe = "sb-sbt-out-stop-probe"
            assert wait_until(lambda: in_ns(probe, f"ping -c 1 -W 1 {outside.ip}")
                              .returncode == 0, 30)
            sb.kill(signal.SIGKILL)
            assert table in sh("nft list tables").stdout  # what a SIGKILL leaves
            sb.start()
            sb.wait_ready()
            assert wait_until(lambda: "an earlier daemon left" in sb.log.read_text(), 30)
            assert wait_until(lambda: in_ns(probe, f"ping -c 1 -W 1 {outside.ip}")
                              .returncode == 0, 30)
            sb.kill(signal.SIGTERM)
            assert table not in sh("nft list tables").stdout
            after = host_state()
            assert same(before, after), {k: (before[k], after[k]) for k in before.keys()
                                         & after.keys() if before[k] != after[k]}
        finally:
            teardown(sb)
    assert table not in sh("nft list tables").stdout
