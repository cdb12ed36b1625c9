"""When a part is down, every command says so in one line, and the daemon starts only once.

Nothing the host runs is stopped: Consul "down" is an address where nothing listens, OVS
"down" a socket path or run directory that does not exist. Daemons started here (through
scripts/start-controller.sh) are stopped by their PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from sbcore.state.reach import Unreachable
from switchboard.api import Container, Discoverer, Registry, VirtualNetwork, VirtualNIC
from tests.consul_agent import free_port
from tests.harness import (
    ROOT,
    Switchboard,
    forget_registration,
    private_switchboard,
    sh,
    wait_until,
)

pytestmark = pytest.mark.integration

SCRIPT = ROOT / "scripts" / "start-controller.sh"
TOPOLOGY = """
name: sbt-reach
networks:
  lan: {subnet: 10.236.40.0/24}
containers:
  a: {networks: [lan]}
"""


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switchboard.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


# --------------------------------------------------------------------------- the start script

@pytest.fixture()
def private(tmp_path: Path) -> Iterator[Switchboard]:
    """A private daemon configuration (not started), removed afterwards."""
    run_id = os.getpid()
    sb = private_switchboard(tmp_path, prefix=f"sbreach-{run_id}", bridge=f"sbq{run_id}",
                             of_port=free_port())
    sb.env.update({"SWITCHBOARD_LOGS": str(tmp_path),
                   "SWITCHBOARD_CMD": f"{sys.executable} -m switchboard.cli"})
    yield sb
    consul.Consul().kv.delete(f"{sb.prefix}/", recurse=True)
    forget_registration(sb.prefix)
    sh(f"ovs-vsctl --if-exists del-br {sb.bridge}")


def start_script(sb: Switchboard) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], env=sb.env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def stop_started_daemon(sb: Switchboard) -> None:
    """Stop the daemon the script started, by the PID it wrote."""
    pid = int((sb.state_dir / "controller.pid").read_text())
    if not gone(pid):
        os.kill(pid, signal.SIGTERM)
        assert wait_until(lambda: gone(pid), 10)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("stale", ["dead", "zombie", "unrelated"])
def test_start_script_replaces_a_stale_pid_file_and_starts_the_daemon(private, stale):
    helpers: list[subprocess.Popen[str]] = []
    try:
        if stale == "dead":
            pid = dead_pid()
        elif stale == "unrelated":
            helpers.append(subprocess.Popen(["sleep", "300"]))
            pid = helpers[0].pid
        else:  # a parent that does not reap its SIGKILLed child leaves a zombie
            helpers.append(subprocess.Popen(
                [sys.executable, "-c", "import os, signal, subprocess, time\n"
                 "p = subprocess.Popen(['sleep', '300']); print(p.pid, flush=True)\n"
                 "os.kill(p.pid, signal.SIGKILL); time.sleep(300)"],
                stdout=subprocess.PIPE, text=True))
            pid = int(helpers[0].stdout.readline())
            assert wait_until(lambda: gone(pid) and Path(f"/proc/{pid}").exists(), 5)
        (private.state_dir / "controller.pid").write_text(f"{pid}\n")

        result = start_script(private)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "stale PID file" in result.stdout and "started" in result.stdout
        started = int((private.state_dir / "controller.pid").read_text())
        assert started != pid and not gone(started)
        private.wait_ready()

        again = start_script(private)  # a live controller's PID file is trusted
        assert again.returncode == 0 and f"already runs (pid {started}" in again.stdout
        assert int((private.state_dir / "controller.pid").read_text()) == started
    finally:
        if (private.state_dir / "controller.pid").exists():
            stop_started_daemon(private)
        for helper in helpers:
            helper.kill()
            helper.wait()


def test_start_script_says_why_a_daemon_could_not_start(private):
    private.env["SWITCHBOARD_OVSDB"] = "unix:/nonexistent/sbt-db.sock"
    result = start_script(private)
    assert result.returncode != 0
    assert "did not start: cannot reach ovsdb-server at unix:/nonexistent/sbt-db.sock" \
        in result.stderr
    assert not (private.state_dir / "controller.pid").exists()


# --------------------------------------------------------------------------- one daemon per bridge

def test_second_daemon_on_the_same_bridge_refuses_and_the_first_keeps_running(switchboard):
    result = run(switchboard.env, "controller", timeout=60)
    assert_one_line(result, f"already runs for bridge {switchboard.bridge}",
                    f"pid {switchboard.proc.pid}")
    assert switchboard.proc.poll() is None
    switchboard.wait_ready(5)


def test_daemon_on_a_taken_openflow_port_says_so(switchboard):
    env = {**switchboard.env, "SWITCHBOARD_BRIDGE": f"{switchboard.bridge}x"}
    result = run(env, "controller")
    port = env["SWITCHBOARD_OF_PORT"]
    assert_one_line(result, f"OpenFlow port 127.0.0.1:{port} is in use", "--of-port")
    assert sh(f"ovs-vsctl br-exists {env['SWITCHBOARD_BRIDGE']}").returncode == 2


def test_daemon_without_ovsdb_says_where_it_looked(switchboard):
    env = {**switchboard.env, "SWITCHBOARD_BRIDGE": f"{switchboard.bridge}y",
           "SWITCHBOARD_OF_PORT": str(free_port()),
           "SWITCHBOARD_OVSDB": "unix:/nonexistent/sbt-db.sock"}
    result = run(env, "controller")
    assert_one_line(result, "cannot reach ovsdb-server at unix:/nonexistent/sbt-db.sock",
                    "scripts/start-services.sh")


# --------------------------------------------------------------------------- Consul down

@pytest.fixture()
def consul_down(switchboard: Switchboard) -> tuple[dict[str, str], str]:
    port = free_port()
    address = f"http://127.0.0.1:{port}"
    env = {**switchboard.env, "SWITCHBOARD_CONSUL": address,
           "SWITCHBOARD_CONSUL_DNS": f"127.0.0.1:{port}"}
    return env, address


@pytest.mark.parametrize("args", [
    ("status",), ("status", "--json"), ("services",), ("down", "sbt-reach"),
    ("trace", "a", "b"), ("up", "FILE"), ("up", "--no-wait", "FILE"),
])
def test_every_command_without_consul_says_where_in_one_line(consul_down, tmp_path, args):
    env, address = consul_down
    topology = tmp_path / "reach.yaml"
    topology.write_text(TOPOLOGY)
    result = run(env, *(str(topology) if a == "FILE" else a for a in args))
    assert_one_line(result, f"cannot reach the Consul agent at {address}: connection refused",
                    "scripts/start-services.sh")


def test_resolve_without_consul_dns_says_where_in_one_line(consul_down):
    env, _ = consul_down
    result = run(env, "resolve", "web")
    assert_one_line(result, f"cannot reach Consul's DNS interface at "
                    f"{env['SWITCHBOARD_CONSUL_DNS']}: connection refused")


def test_python_api_without_consul_raises_unreachable(consul_down):
    _, address = consul_down
    with pytest.raises(Unreachable, match=f"cannot reach the Consul agent at {address}"):
        VirtualNetwork("sbt-reach", consul=address)
    registry = Registry("sbt-reach", consul=address)
    with pytest.raises(Unreachable, match="connection refused; start it with"):
        registry.register("web", "10.0.0.1", 80)
    with pytest.raises(Unreachable):
        Discoverer("d", registry).discover()
    dns_port = int(address.rsplit(":", 1)[1])
    with pytest.raises(Unreachable, match=f"DNS interface at 127.0.0.1:{dns_port}"):
        Discoverer("d", registry, ("127.0.0.1", dns_port)).resolve("web")


def test_daemon_without_consul_warns_in_one_line_and_keeps_running(private):
    address = f"http://127.0.0.1:{free_port()}"
    private.env["SWITCHBOARD_CONSUL"] = address
    private.start()
    try:
        assert wait_until(lambda: "warning:" in private.log.read_text(errors="replace"), 20)
        assert private.proc is not None and private.proc.poll() is None
        time.sleep(1)
        assert private.proc.poll() is None, private.log_tail()
        warning = next(line for line in private.log.read_text().splitlines()
                       if line.startswith("warning:"))
        assert f"cannot reach the Consul agent at {address}: connection refused" in warning
        assert "leaves the data path as it is" in warning
    finally:
        private.kill(signal.SIGTERM)


# --------------------------------------------------------------------------- OVS down

def test_trace_without_ovs_vswitchd_says_so_in_one_line(switchboard, tmp_path):
    switchboard.up(tmp_path, TOPOLOGY)
    try:
        env = {**switchboard.env, "OVS_RUNDIR": "/nonexistent/sbt-ovs"}
        result = run(env, "trace", "a", "10.236.40.254")
        assert_one_line(result, "cannot reach ovs-vswitchd at /nonexistent/sbt-ovs",
                        "start Open vSwitch with scripts/start-services.sh")
    finally:
        switchboard.cli("down", "sbt-reach", check=False)


# --------------------------------------------------------------------------- no daemon

def test_up_without_a_controller_fails_at_once_and_stores_nothing(switchboard, tmp_path):
    prefix = f"sbnone-{os.getpid()}"
    env = {**switchboard.env, "SWITCHBOARD_PREFIX": prefix}
    topology = tmp_path / "reach.yaml"
    topology.write_text(TOPOLOGY)
    client = consul.Consul()
    try:
        began = time.monotonic()
        result = run(env, "up", "--timeout", "20", str(topology))
        assert time.monotonic() - began < 10
        assert_one_line(result, "cannot reach a switchboard controller", f"prefix {prefix}",
                        "scripts/start-controller.sh", "--no-wait")
        assert client.kv.get(f"{prefix}/", recurse=True)[1] is None

        net = VirtualNetwork("sbt-reach", "10.236.41.0/24", prefix=prefix)
        nic = VirtualNIC("n", net)
        with pytest.raises(Unreachable, match="cannot reach a switchboard controller"):
            Container("a", net, nic).start()
        assert net.containers == {}
        assert client.kv.get(f"{prefix}/", recurse=True)[1] is None
    finally:
        client.kv.delete(f"{prefix}/", recurse=True)


def test_down_and_status_without_a_controller_say_so_and_down_changes_nothing(
    switchboard, tmp_path
):
    prefix = f"sbghost-{os.getpid()}"
    env = {**switchboard.env, "SWITCHBOARD_PREFIX": prefix}
    topology = tmp_path / "reach.yaml"
    topology.write_text(TOPOLOGY)
    client = consul.Consul()
    try:
        assert run(env, "up", "--no-wait", str(topology)).returncode == 0  # no daemon needed
        client.kv.put(f"{prefix}/status/ghost/sbt-reach",  # what a dead daemon left behind
                      json.dumps({"digest": "x", "state": "converged", "containers": []}))
        client.kv.put(f"{prefix}/hosts/ghost", json.dumps(
            {"name": "ghost", "slot": 0}))  # a host whose daemon is long gone
        _, before = client.kv.get(f"{prefix}/", recurse=True)

        result = run(env, "down", "sbt-reach")
        assert_one_line(result, "cannot reach a switchboard controller", f"prefix {prefix}",
                        "no host is ready: ghost is down (not registered in Consul",
                        "it removes what the topology created; nothing was changed")
        assert client.kv.get(f"{prefix}/", recurse=True)[1] == before

        shown = run(env, "status")
        assert shown.returncode == 0 and "sbt-reach" in shown.stdout
        assert shown.stderr.startswith("warning: cannot reach a switchboard controller")
        assert "the reports shown are its last" in shown.stderr
    finally:
        client.kv.delete(f"{prefix}/", recurse=True)


def test_the_daemon_registers_its_host_that_up_relies_on(switchboard):
    _, entry = consul.Consul().kv.get(f"{switchboard.prefix}/hosts/test-host")
    record = json.loads(entry["Value"])
    assert record["pid"] == switchboard.proc.pid and record["bridge"] == switchboard.bridge
    shown = json.loads(switchboard.cli("hosts", "--json").stdout)["hosts"]
    assert [(h["name"], h["state"]) for h in shown] == [("test-host", "ready")]
