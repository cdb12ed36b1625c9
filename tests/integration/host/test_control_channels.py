"""Control channels listen where they should: the daemon's OpenFlow and metrics ports on
loopback, its DNS proxy only on the topologies' host addresses, OVSDB on a unix socket, and
the one-host Consul agent on loopback only (a cluster's agents also open their server and
gossip ports on the control address: README "Control channels")."""

from __future__ import annotations

import ipaddress
import re
import time

import pytest

from ovsdb.bridge import DEFAULT_DB
from tests.harness import Switchboard, sh

pytestmark = pytest.mark.integration

TOPOLOGY = """
name: chan
networks:
  lan: {subnet: 10.97.1.0/24}
containers:
  a: {networks: [lan]}
"""


def listening(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of every TCP/UDP socket process ``pid`` listens on."""
    out = sh("ss -tulpnH").stdout
    found = []
    for line in out.splitlines():
        if f"pid={pid}," not in line:
            continue
        fields = line.split()
        address, _, port = fields[4].rpartition(":")
        found.append((fields[0], address.strip("[]").split("%")[0], int(port)))
    return found


def ovsdb_channels(pid: int) -> dict[str, list[str]]:
    """How process ``pid`` talks to ovsdb-server, read from the kernel's socket tables: the
    paths of the unix sockets ovsdb-server serves that it is connected to, and its TCP
    connections to a port an ovsdb-server listens on."""
    unix = [f for f in (line.split() for line in sh("ss -xpH").stdout.splitlines())
            if len(f) > 8]  # type state recv send local inode peer peer-inode process
    served = {f[5]: f[4] for f in unix if '"ovsdb-server"' in f[8]}
    peers = [f[7] for f in unix if f"pid={pid}," in f[8]]
    listens = {line.split()[3].rpartition(":")[2] for line in sh("ss -tlpnH").stdout.splitlines()
               if '"ovsdb-server"' in line}
    tcp = [f[4] for f in (line.split() for line in sh("ss -tnpH").stdout.splitlines())
           if len(f) > 5 and f"pid={pid}," in f[5] and f[4].rpartition(":")[2] in listens]
    return {"unix": sorted({served[p] for p in peers if p in served}), "tcp": tcp}


def test_the_daemon_listens_on_loopback_and_on_host_addresses_for_dns_only(
    switchboard: Switchboard, tmp_path
) -> None:
    assert switchboard.up(tmp_path, TOPOLOGY).returncode == 0
    try:
        host_ips = {n["host_ip"] for n in switchboard.status("chan")["networks"]}
        assert switchboard.proc is not None
        pid = switchboard.proc.pid
        deadline = time.monotonic() + 10
        while not any(p == 53 for _, _, p in listening(pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        sockets = listening(pid)
        assert sockets, "the daemon listens nowhere?"
        for proto, address, port in sockets:
            if ipaddress.ip_address(address).is_loopback:
                continue
            assert (address, port) in {(ip, 53) for ip in host_ips}, (proto, address, port)
        assert {p for _, a, p in sockets if a in host_ips} == {53}
        assert ovsdb_channels(pid) == {"unix": [DEFAULT_DB.removeprefix("unix:")], "tcp": []}
    finally:
        switchboard.cli("down", "chan", check=False)


def test_the_one_host_consul_agent_listens_on_loopback_only() -> None:
    out = sh("ss -tulpnH").stdout
    consul = [line.split()[4] for line in out.splitlines() if '"consul"' in line]
    if not consul:
        pytest.skip("no Consul agent in this namespace")
    for local in consul:
        address = re.sub(r"%.*", "", local.rpartition(":")[0].strip("[]"))
        assert ipaddress.ip_address(address).is_loopback, consul
