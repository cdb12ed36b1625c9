"""`switchboard lab` with real processes: three simulated hosts come up (each its own OVS,
Consul agent and controller in its own namespace), form one Consul cluster, survive a host
being killed and started again, and `lab down` leaves nothing behind.

One lab for the module, under a name of its own (SWITCHBOARD_LAB_NAME), so a user's `sblab`
and other test runs are never touched. Select these tests with `pytest -m lab`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import procs
from lab.config import RUN_ROOT, STATE_ROOT

pytestmark = [pytest.mark.lab, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[3]
NAME = f"sbt{os.getpid() % 100000}"
HOSTS = ("h1", "h2", "h3")


def lab(*args: str, name: str = NAME, env: dict[str, str] | None = None,
        input: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run `switchboard lab ARGS` as a user would."""
    full_env = {**os.environ, "SWITCHBOARD_LAB_NAME": name, **(env or {})}
    full_env.pop("SWITCHBOARD_LAB_HOST", None)
    return subprocess.run([sys.executable, "-m", "switchboard.cli", "lab", *args],
                          cwd=ROOT, env=full_env, capture_output=True, text=True,
                          input=input, timeout=timeout)


def status() -> dict:
    out = lab("status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def namespaces(name: str = NAME) -> list[str]:
    return [line.split()[0] for line in
            subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
            .stdout.splitlines() if line.startswith(f"{name}-")]


def leader_of(host: str) -> str:
    out = lab("exec", host, "--", "curl", "-fsS", "http://127.0.0.1:8500/v1/status/leader")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().strip('"')


@pytest.fixture(scope="module")
def three_hosts() -> Iterator[dict]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    up = lab("up", "--hosts", "3")
    try:
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        yield status()
    finally:
        lab("down")  # idempotent: also after test_down_leaves_nothing


def test_up_starts_every_part_of_every_host(three_hosts: dict) -> None:
    rows = {row["host"]: row for row in three_hosts["hosts"]}
    assert sorted(rows) == list(HOSTS)
    for k, host in enumerate(HOSTS, 1):
        row = rows[host]
        assert row["state"] == "running", row
        assert row["control_ip"] == f"10.99.0.{k}" and row["tunnel_ip"] == f"10.99.1.{k}"
        assert all(row["processes"].values()), row


def test_consul_agents_form_one_cluster_with_a_leader(three_hosts: dict) -> None:
    leaders = {leader_of(host) for host in HOSTS}
    assert len(leaders) == 1 and leaders != {""}, leaders
    out = lab("exec", "h3", "--", "consul", "members")
    assert out.returncode == 0, out.stderr
    alive = [line.split()[0] for line in out.stdout.splitlines() if " alive " in line]
    assert sorted(alive) == list(HOSTS), out.stdout


def test_consul_gossip_is_encrypted_rpc_needs_tls_and_acls_deny(three_hosts: dict) -> None:
    """The lab's agents run as start-host.sh --secrets makes them: gossip encrypted, RPC only
    over TLS with verified certificates, ACLs default deny with each host's token installed."""
    info = lab("exec", "h3", "--", "sh", "-c",
               'CONSUL_HTTP_TOKEN=$(cat "$SWITCHBOARD_STATE/token") consul info')
    assert info.returncode == 0, info.stderr
    serf = [line.strip() for line in info.stdout.splitlines() if "encrypted" in line]
    assert serf == ["encrypted = true", "encrypted = true"], info.stdout  # LAN and WAN
    mode = os.stat(f"{STATE_ROOT}/{NAME}/h3/token").st_mode & 0o777
    assert mode == 0o600
    plain = ("import socket; s = socket.create_connection(('10.99.0.1', 8300), 3); "
             "s.sendall(b'\\x00'); s.settimeout(5); print(repr(s.recv(64)))")
    out = lab("exec", "h2", "--", sys.executable, "-c", plain)
    assert out.stdout.strip() == "b''", out  # a plaintext RPC connection is closed at once
    log = Path(f"{STATE_ROOT}/{NAME}/h1/log/consul.log").read_text()
    assert "Non-TLS connection attempted with VerifyIncoming set" in log
    anonymous = lab("exec", "h1", "--", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                    "-X", "PUT", "-d", "x", "http://127.0.0.1:8500/v1/kv/switchboard/evil")
    assert anonymous.stdout == "403", anonymous  # no token: no write
    hosts = lab("exec", "h2", "--", sys.executable, "-m", "switchboard.cli", "hosts")
    assert hosts.returncode == 0 and hosts.stdout.count("ready") == 3, hosts


def test_each_host_has_its_own_ovs_with_the_tunnel_address(three_hosts: dict) -> None:
    system_ids = set()
    for k, host in enumerate(HOSTS, 1):
        out = lab("exec", host, "--", "ovs-vsctl", "get", "Open_vSwitch", ".",
                  "external_ids:system-id")
        assert out.returncode == 0, out.stderr
        system_ids.add(out.stdout.strip())
        device = "sb-ul" if three_hosts["datapath"] == "netdev" else "ul1"
        addr = lab("exec", host, "--", "ip", "-o", "-4", "addr", "show", "dev", device)
        assert f"10.99.1.{k}/24" in addr.stdout, addr.stdout + addr.stderr
    assert {s.strip('"') for s in system_ids} == set(HOSTS)
    ping = lab("exec", "h1", "--", "ping", "-c1", "-W2", "10.99.1.3")  # across the underlay
    assert ping.returncode == 0, ping.stdout


def test_exec_runs_in_the_host_namespace_and_passes_the_exit_code(three_hosts: dict) -> None:
    out = lab("exec", "h2", "--", "ip", "-o", "-4", "addr", "show", "dev", "ul0")
    assert "10.99.0.2/24" in out.stdout
    assert lab("exec", "h1", "--", "sh", "-c", "exit 7").returncode == 7
    echoed = lab("exec", "h1", "--", "cat", input="through stdin\n")
    assert echoed.stdout == "through stdin\n"


def test_lab_host_variable_runs_the_cli_in_that_host(three_hosts: dict) -> None:
    code = ("import os; from lab.enter import enter_host; enter_host('h2'); "
            "print(os.stat('/proc/self/ns/net').st_ino, os.environ['SWITCHBOARD_HOST_ID'])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "SWITCHBOARD_LAB_NAME": NAME})
    assert out.returncode == 0, out.stderr
    inode = os.stat(f"/run/netns/{NAME}-h2").st_ino
    assert out.stdout.split() == [str(inode), "h2"]
    bad = subprocess.run([sys.executable, "-m", "switchboard.cli", "status"], cwd=ROOT,
                         capture_output=True, text=True,
                         env={**os.environ, "SWITCHBOARD_LAB_NAME": NAME,
                              "SWITCHBOARD_LAB_HOST": "h9"})
    assert bad.returncode == 1 and "has no host 'h9'" in bad.stderr, bad.stderr


def test_kill_leaves_no_process_and_start_brings_the_host_back(three_hosts: dict) -> None:
    killed = lab("kill", "h2")
    assert killed.returncode == 0, killed.stderr
    assert procs.pids_in_namespaces([n for n in namespaces() if n.startswith(f"{NAME}-h2")]) == []
    row = next(r for r in status()["hosts"] if r["host"] == "h2")
    assert row["state"] == "killed" and not any(row["processes"].values())
    assert not row["plugged_in"]
    assert f"{NAME}-h2" in namespaces()  # a power cut keeps the namespace
    assert leader_of("h1")  # two servers of three still have a leader
    again = lab("kill", "h2")
    assert again.returncode == 1 and "already killed" in again.stderr

    started = lab("start", "h2")
    assert started.returncode == 0, started.stdout + started.stderr
    row = next(r for r in status()["hosts"] if r["host"] == "h2")
    assert row["state"] == "running" and all(row["processes"].values()), row
    assert leader_of("h2") == leader_of("h1")
    device = "sb-ul" if three_hosts["datapath"] == "netdev" else "ul1"
    addr = lab("exec", "h2", "--", "ip", "-o", "-4", "addr", "show", "dev", device)
    assert "10.99.1.2/24" in addr.stdout  # the tunnel address is back on its new tap
    ping = lab("exec", "h1", "--", "ping", "-c1", "-W2", "10.99.1.2")
    assert ping.returncode == 0, ping.stdout


def test_bad_input_gives_one_line_errors(three_hosts: dict) -> None:
    cases = [
        (lab("exec", "h9", "--", "true"), "has no host 'h9'"),
        (lab("kill", "h9"), "has no host 'h9'"),
        (lab("start", "h1"), "already running"),
        (lab("up"), "already exists"),
        (lab("status", name="sbtnone"), "no lab sbtnone is up"),
        (lab("exec", "h1", "--", "true", name="sbtnone"), "no lab sbtnone is up"),
    ]
    for out, message in cases:
        assert out.returncode == 1, out
        assert message in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_down_leaves_nothing(three_hosts: dict) -> None:
    pids = [pid for row in status()["hosts"] for pid in row["processes"].values() if pid]
    out = lab("down")
    assert out.returncode == 0, out.stderr
    assert namespaces() == []
    assert not any(procs.alive(pid) for pid in pids)
    assert not (STATE_ROOT / NAME).exists() and not (RUN_ROOT / NAME).exists()
    assert not list(Path("/etc/netns").glob(f"{NAME}-*"))
    again = lab("down")
    assert again.returncode == 0 and "nothing to remove" in again.stdout
