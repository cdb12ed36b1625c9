"""Crash consistency (issue 14): whatever dies mid-way, the host comes back to the truth.

The daemon is SIGKILLed at stepped and random moments of an `up` of a few hundred containers,
of an edit and of a `down`, then started again: every container must answer a ping from the
host and `status` must agree, or nothing of the topology may be left. The same for
ovs-vswitchd killed and the Consul agent restarted during an `up`.

The daemon here uses a Consul server of its own (the approach of
test_discovery_resilience.py), so restarting it disturbs nobody. ovs-vswitchd is the
system's: it is killed only in its test and is running again when that test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest

from sbcore.model import naming
from tests.consul_agent import Agent, free_port, running_agent
from tests.harness import (
    ROOT,
    Switchboard,
    marked_processes,
    private_switchboard,
    sh,
    wait_until,
)

pytestmark = pytest.mark.integration

TOPOLOGY = "sbcc"
N = 240
SUBNET = IPv4Network("10.239.0.0/20")
COMMANDS = {"c0": "sleep 7771", "c1": "sleep 7772", "c2": "sleep 7773"}
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
VSWITCHD_PIDFILE = Path("/var/run/openvswitch/ovs-vswitchd.pid")
RNG = random.Random(14)


def topology_text(names: list[str], mtu: int = 1500) -> str:
    lines = [f"name: {TOPOLOGY}", "networks:", f"  lan: {{subnet: {SUBNET}, mtu: {mtu}}}",
             "containers:"]
    for name in names:
        command = f", command: {COMMANDS[name]}" if name in COMMANDS else ""
        lines.append(f"  {name}: {{networks: [lan]{command}}}")
    return "\n".join(lines) + "\n"


ALL = [f"c{i}" for i in range(N)]
EDITED = ALL[:-20] + [f"d{i}" for i in range(20)]  # 20 go, 20 come, the MTU changes


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with running_agent(tmp_path_factory.mktemp("cc-consul")) as agent:
        yield agent


@pytest.fixture(scope="module")
def sb(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Switchboard]:
    run = os.getpid()
    board = private_switchboard(tmp_path_factory.mktemp("cc-state"), prefix=f"sbcc-{run}",
                                bridge=f"sbc{run}", of_port=free_port())
    board.env.update({"SWITCHBOARD_CONSUL": agent.http,
                      "SWITCHBOARD_CONSUL_DNS": f"127.0.0.1:{agent.dns[1]}",
                      "SWITCHBOARD_RESYNC_SECONDS": "2"})
    board.start()
    try:
        board.wait_ready()
        yield board
    finally:
        if not vswitchd_running():
            start_vswitchd()
        if not agent.answering():
            agent.stop()
            agent.start()
            wait_until(agent.answering, 30, 0.2)
        restart(board)
        board.cli("down", TOPOLOGY, check=False, timeout=120)
        board.kill(signal.SIGTERM)
        sh(f"ovs-vsctl --if-exists del-br {board.bridge}")
        leftovers = [n for n in os.listdir("/var/run/netns") if n.startswith(f"sb-{TOPOLOGY}-")]
        if leftovers:  # only after a failure: never leave them on the host
            subprocess.run(["ip", "-force", "-batch", "-"], text=True, capture_output=True,
                           input="".join(f"netns del {n}\n" for n in leftovers))
        agent.client().kv.delete(f"{board.prefix}/", recurse=True)


# --------------------------------------------------------------------------- helpers


def restart(sb: Switchboard) -> None:
    """Start the daemon again if it is not running (after a kill)."""
    if sb.proc is None or sb.proc.poll() is not None:
        sb.start()


def kill_daemon_after(sb: Switchboard, delay: float) -> None:
    time.sleep(delay)
    sb.kill()  # SIGKILL
    sb.start()


def run_cli(sb: Switchboard, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "switchboard.cli", *args], env=sb.env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 150) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def write(tmp_path: Path, names: list[str], mtu: int = 1500) -> Path:
    path = tmp_path / f"{TOPOLOGY}-{len(names)}-{mtu}.yaml"
    path.write_text(topology_text(names, mtu))
    return path


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def unanswered(addresses: list[str], timeout: float = 5.0) -> set[str]:
    """Addresses that do not answer an ICMP echo from the host within ``timeout``: one raw
    socket, every silent address asked again every 0.3 s."""
    pending = set(addresses)
    ident = os.getpid() & 0xFFFF
    deadline = time.monotonic() + timeout
    next_round = 0.0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.setblocking(False)
        while pending and time.monotonic() < deadline:
            if time.monotonic() >= next_round:
                for seq, address in enumerate(sorted(pending)):
                    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
                    packet = struct.pack("!BBHHH", 8, 0, _checksum(header), ident, seq)
                    with contextlib.suppress(OSError):  # queue full: asked again next round
                        sock.sendto(packet, (address, 0))
                next_round = time.monotonic() + 0.3
            select.select([sock], [], [], 0.05)
            while True:
                try:
                    data, (source, _) = sock.recvfrom(2048)
                except BlockingIOError:
                    break
                ihl = (data[0] & 0x0F) * 4
                kind, _code, _sum, rid = struct.unpack_from("!BBHH", data, ihl)
                if kind == 0 and rid == ident:
                    pending.discard(source)
    return pending


def report(sb: Switchboard) -> dict[str, Any]:
    data = json.loads(sb.cli("status", TOPOLOGY, "--json").stdout)
    hosts = data["topologies"][0]["hosts"]
    return next(iter(hosts.values())) if hosts else {}


def assert_all_answer_and_status_agrees(sb: Switchboard, names: list[str], mtu: int) -> None:
    state = report(sb)
    rows = state["containers"]
    assert state["state"] == "converged", state.get("error")
    assert sorted(r["container"] for r in rows) == sorted(names)
    bad = [r for r in rows if r["problem"] or r["state"] not in ("up", "running")
           or not r["ofport"]]
    assert not bad, bad[:3]
    silent = unanswered([r["ip"] for r in rows])
    assert not silent, f"{len(silent)} of {len(rows)} do not answer, e.g. {sorted(silent)[:5]}"
    running = marked(sb)  # each command once, however often the daemon died
    assert {c: len({os.getpgid(p) for p in running.get(c, [])}) for c in COMMANDS
            if c in names} == {c: 1 for c in COMMANDS if c in names}, running
    sample = RNG.sample(rows, 3)
    for row in sample:  # the interface itself, as planned
        out = sh(f"ip -n {row['netns']} -o link show eth0").stdout
        assert f"mtu {mtu} " in out and row["mac"] in out and "state UP" in out, out


def nothing_left(sb: Switchboard, agent: Agent, names: list[str], pids: list[int]) -> list[str]:
    """What of the topology is still on the host or in Consul (empty: nothing)."""
    left = [n for n in os.listdir("/var/run/netns") if n.startswith(f"sb-{TOPOLOGY}-")]
    left += sh("ovs-vsctl --bare --columns=name find Port "
               f"external_ids:switchboard-topology={TOPOLOGY}").stdout.split()
    left += [v for v in (naming.veth_name(TOPOLOGY, n, "lan") for n in names)
             if os.path.exists(f"/sys/class/net/{v}")]
    leg = naming.host_leg_name(TOPOLOGY, "lan")
    left += [leg] if os.path.exists(f"/sys/class/net/{leg}") else []
    _, keys = agent.client().kv.get(f"{sb.prefix}/", keys=True, recurse=True)
    left += [k for k in keys or [] if f"/{TOPOLOGY}" in k]
    left += [f"pid {p}" for p in pids if Path(f"/proc/{p}").exists()]
    left += [f"{c}'s command (pid {p})" for c, ps in marked(sb).items() for p in ps]
    left += [str(p) for p in Path("/etc/netns").glob(f"sb-{TOPOLOGY}-*")]
    return left


def marked(sb: Switchboard) -> dict[str, list[int]]:
    """Container -> live processes carrying its command's mark (its pid file's name, set by
    the wrapper whether or not the pid file was written)."""
    found = marked_processes(sb.state_dir / "pids" / TOPOLOGY)
    return {path.stem: pids for path, pids in found.items()}


def command_pids(sb: Switchboard) -> list[int]:
    pids = []
    for path in (sb.state_dir / "pids" / TOPOLOGY).glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pids.append(int(path.read_text().split()[0]))
    return pids


def up_with_daemon_killed(sb: Switchboard, path: Path, delay: float) -> None:
    proc = run_cli(sb, "up", str(path), "--timeout", "120")
    kill_daemon_after(sb, delay)
    code, out = finish(proc)
    assert code == 0, f"up failed after a kill at {delay:.2f} s:\n{out}\n{sb.log_tail()}"


def down_with_daemon_killed(sb: Switchboard, agent: Agent, names: list[str],
                            delay: float) -> None:
    pids = command_pids(sb)
    proc = run_cli(sb, "down", TOPOLOGY, "--timeout", "90")
    kill_daemon_after(sb, delay)
    code, out = finish(proc)
    assert code == 0, f"down failed after a kill at {delay:.2f} s:\n{out}\n{sb.log_tail()}"
    assert wait_until(lambda: not nothing_left(sb, agent, names, pids), 10), \
        nothing_left(sb, agent, names, pids)


# --------------------------------------------------------------------------- tests


def test_daemon_killed_at_any_moment_of_up_and_down_comes_back_to_the_truth(sb, agent,
                                                                             tmp_path):
    path = write(tmp_path, ALL)
    up_delays = [0.3, 1.0, 1.4, 1.9, RNG.uniform(0.2, 3.0)]  # `up` plumbs from about 1 s
    down_delays = [0.2, 0.7, 1.1, RNG.uniform(0.1, 2.0), 1.6]
    for up_delay, down_delay in zip(up_delays, down_delays, strict=True):
        up_with_daemon_killed(sb, path, up_delay)
        assert_all_answer_and_status_agrees(sb, ALL, 1500)
        down_with_daemon_killed(sb, agent, ALL, down_delay)


def test_daemon_killed_during_an_edit_comes_back_to_the_edited_file(sb, agent, tmp_path):
    before, after = write(tmp_path, ALL), write(tmp_path, EDITED, mtu=1400)
    sb.cli("up", str(before), timeout=150)
    for path, names, mtu, delay in [(after, EDITED, 1400, 0.6), (before, ALL, 1500, 1.5),
                                    (after, EDITED, 1400, RNG.uniform(0.2, 2.5))]:
        up_with_daemon_killed(sb, path, delay)
        assert_all_answer_and_status_agrees(sb, names, mtu)
    sb.cli("down", TOPOLOGY, timeout=120)
    assert not nothing_left(sb, agent, ALL + EDITED, [])


def test_interfaces_changed_behind_the_daemons_back_are_repaired_on_the_next_pass(sb, agent,
                                                                                  tmp_path):
    sb.cli("up", str(write(tmp_path, ALL)), timeout=150)
    ns = {name: naming.netns_name(TOPOLOGY, name) for name in ALL}
    own_link = sh(f"ip -n {ns['c16']} -o link show dev eth0").stdout.split(":")[0]
    for cmd in [f"ip -n {ns['c16']} addr add 192.0.2.7/32 dev eth0",  # the container's own
                f"ip -n {ns['c10']} link set eth0 down",
                f"ip -n {ns['c11']} addr flush dev eth0",
                f"ip -n {ns['c12']} link set eth0 address 02:00:00:00:00:99",
                f"ip -n {ns['c13']} route del default",
                f"ip -n {ns['c14']} link set eth0 mtu 1280",
                f"ip link del {naming.veth_name(TOPOLOGY, 'c15', 'lan')}",  # the pair goes
                f"ip addr flush dev {naming.host_leg_name(TOPOLOGY, 'lan')}"]:
        assert sh(cmd).returncode == 0, cmd
    assert sb.wait_passes(2)  # a whole pass after the changes (resync: every 2 s here)
    assert wait_until(lambda: report(sb).get("state") == "converged", 10), report(sb)
    assert_all_answer_and_status_agrees(sb, ALL, 1500)
    for name in ("c10", "c11", "c12", "c13", "c14", "c15"):
        out = sh(f"ip -n {ns[name]} -o addr show dev eth0").stdout
        assert " 10.239." in out, (name, out)
        assert sh(f"ip -n {ns[name]} route show default").stdout.startswith("default via"), name
    # an address the container added itself is left alone, and so is its interface
    assert sh(f"ip -n {ns['c16']} -o link show dev eth0").stdout.split(":")[0] == own_link
    assert "192.0.2.7/32" in sh(f"ip -n {ns['c16']} -o addr show dev eth0").stdout
    assert sh(f"ip -n {ns['c16']} addr del 192.0.2.7/32 dev eth0").returncode == 0
    assert sb.wait_passes(2)
    assert report(sb).get("state") == "converged", report(sb)
    assert_all_answer_and_status_agrees(sb, ALL, 1500)
    sb.cli("down", TOPOLOGY, timeout=120)
    assert not nothing_left(sb, agent, ALL, [])


def vswitchd_running() -> bool:
    return sh("ovs-appctl -t ovs-vswitchd version").returncode == 0


def start_vswitchd() -> None:
    """Start ovs-vswitchd alone (userspace-tso-enable stays in the database)."""
    sh(f"{OVS_CTL} start --no-ovsdb-server", timeout=60)


def test_vswitchd_killed_during_up_is_survived(sb, agent, tmp_path):
    path = write(tmp_path, ALL)
    proc = run_cli(sb, "up", str(path), "--timeout", "120")
    try:
        time.sleep(1.2)
        pid = int(VSWITCHD_PIDFILE.read_text().strip())
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not Path(f"/proc/{pid}").exists()
                          or "zombie" in sh(f"ps -o stat= -p {pid}").stdout, 5)
        if not wait_until(vswitchd_running, 3):  # --monitor does not restart after SIGKILL
            start_vswitchd()
        assert wait_until(vswitchd_running, 30), "ovs-vswitchd did not come back"
        finish(proc)  # `up` may report the outage: what counts is what the host comes to
    finally:
        if not vswitchd_running():
            start_vswitchd()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_until(lambda: report(sb).get("state") == "converged", 60), report(sb)
    assert_all_answer_and_status_agrees(sb, ALL, 1500)
    sb.cli("down", TOPOLOGY, timeout=120)
    assert not nothing_left(sb, agent, ALL, [])


def test_consul_agent_restarted_during_up_is_survived(sb, agent, tmp_path):
    path = write(tmp_path, ALL)
    proc = run_cli(sb, "up", str(path), "--timeout", "120")
    try:
        time.sleep(1.0)
        agent.stop()
        agent.start()
        assert wait_until(agent.answering, 30, 0.2), "the test's Consul agent did not return"
        finish(proc)  # `up` may lose its agent for a moment: the host must still converge
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_until(lambda: report(sb).get("state") == "converged", 60), report(sb)
    assert_all_answer_and_status_agrees(sb, ALL, 1500)
    sb.cli("down", TOPOLOGY, timeout=120)
    assert not nothing_left(sb, agent, ALL, [])


def test_a_command_started_by_a_daemon_killed_before_its_pid_file_runs_once(sb, agent,
                                                                          tmp_path):
    """The daemon was killed after starting a command and before writing its pid file: the
    next daemon takes that command as it runs (same PID) instead of starting a second copy."""
    names = ["c0", "c1", "c2", "c3"]
    sb.cli("up", str(write(tmp_path, names)), timeout=150)
    try:
        before = marked(sb)["c0"]
        sb.kill()  # SIGKILL
        (sb.state_dir / "pids" / TOPOLOGY / "c0.pid").unlink()
        sb.start()
        sb.wait_ready()
        assert wait_until(lambda: (sb.state_dir / "pids" / TOPOLOGY / "c0.pid").exists(), 20)
        assert int((sb.state_dir / "pids" / TOPOLOGY / "c0.pid").read_text().split()[0]) \
            == before[0]
        assert marked(sb)["c0"] == before
        assert wait_until(lambda: report(sb).get("state") == "converged", 30), report(sb)
        assert_all_answer_and_status_agrees(sb, names, 1500)
    finally:
        restart(sb)
        sb.cli("down", TOPOLOGY, timeout=120)
    assert not nothing_left(sb, agent, names, [])
