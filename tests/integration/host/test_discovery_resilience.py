"""Service discovery stays true while Consul, the daemon and containers come and go.

These tests restart a Consul agent, so they run their own: a real Consul server started here
exactly the way scripts/start-services.sh starts the shared one (``consul agent -server
-bootstrap-expect=1 -data-dir=... -bind=127.0.0.1 -client=127.0.0.1``), on free ports, with
its own data directory, plus a private Switchboard daemon that uses it for desired state,
registrations and DNS. The shared agent other test runs use is never restarted, and every
process started here is stopped here, by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from discovery import lookup
from sbcore.state.hosts import service_id as service_id_of_host
from tests.consul_agent import Agent, free_port, running_agent
from tests.harness import Switchboard, in_ns, private_switchboard, sh, wait_until

pytestmark = pytest.mark.integration

TOPOLOGY = "sbt-res"
TAG = f"topology-{TOPOLOGY}"  # every instance's topology marker
SERVICE = "sbtres-api"
LAN = "10.236.32"
INSTANCES = {"api-1": f"{LAN}.11", "api-2": f"{LAN}.12"}


def service_id(container: str, topology: str = TOPOLOGY, service: str = SERVICE) -> str:
    return f"sb.{topology}.{container}.{service}"


RES_LAB = f"""
name: {TOPOLOGY}
networks:
  lan: {{subnet: {LAN}.0/24}}
containers:
  api-1:
    networks: {{lan: {{ip: {LAN}.11}}}}
    command: python3 -m http.server 8080
    services:
      - {{name: {SERVICE}, port: 8080, tags: [v1, blue], check: {{tcp: 8080, interval: 1s}}}}
  api-2:
    networks: {{lan: {{ip: {LAN}.12}}}}
    command: python3 -m http.server 8080
    services:
      - {{name: {SERVICE}, port: 8080, tags: [v1, green], check: {{http: /, interval: 1s}}}}
  client:
    networks: {{lan: {{ip: {LAN}.10}}}}
"""


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    if os.geteuid() != 0 or shutil.which("consul") is None:
        pytest.skip("needs root and the consul binary")
    with running_agent(tmp_path_factory.mktemp("consul")) as agent:
        yield agent


@pytest.fixture(scope="module")
def sb(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Switchboard]:
    run = os.getpid()
    board = private_switchboard(tmp_path_factory.mktemp("res-state"), prefix=f"sbres-{run}",
                                bridge=f"sbr{run}", of_port=free_port())
    board.env.update({"SWITCHBOARD_CONSUL": agent.http,
                      "SWITCHBOARD_CONSUL_DNS": f"127.0.0.1:{agent.dns[1]}"})
    board.start()
    try:
        board.wait_ready()
        board.up(tmp_path_factory.mktemp("res"), RES_LAB)
        assert wait_until(lambda: len(passing(agent)) == 2, 15), "instances never passed"
        yield board
    finally:
        if not agent.answering():  # a test died mid-restart: bring the agent back
            agent.stop()
            agent.start()
            wait_until(agent.answering, 30, 0.2)
        if board.proc is None or board.proc.poll() is not None:
            board.start()
        for name in (TOPOLOGY, "sbt-resrm"):
            board.cli("down", name, check=False, timeout=120)
        board.kill(signal.SIGTERM)
        sh(f"ovs-vsctl --if-exists del-br {board.bridge}")


# --------------------------------------------------------------------------- observations


def passing(agent: Agent, service: str = SERVICE) -> dict[str, tuple[str, int]]:
    """Service ID -> (address, port) of the passing instances, from the health API."""
    try:
        _, entries = agent.client().health.service(service, passing=True)
    except Exception:  # noqa: BLE001 - agent restarting
        return {}
    return {e["Service"]["ID"]: (e["Service"]["Address"], e["Service"]["Port"])
            for e in entries}


def registrations(agent: Agent, service: str = SERVICE) -> dict[str, dict[str, Any]]:
    """The agent's registrations of a service, field by field (check from /v1/agent/checks)."""
    client = agent.client()
    checks = client.agent.checks()
    found = {}
    for sid, entry in client.agent.services().items():
        if entry["Service"] != service:
            continue
        check = checks.get(f"service:{sid}", {})
        found[sid] = {
            "name": entry["Service"], "address": entry["Address"], "port": entry["Port"],
            "tags": entry["Tags"], "meta": entry["Meta"],
            "check": (check.get("Type"), check.get("ServiceID")),
        }
    return found


def catalog(agent: Agent, service: str = SERVICE) -> dict[str, tuple[int, int]]:
    """Service ID -> (CreateIndex, ModifyIndex) in the catalog."""
    _, entries = agent.client().catalog.service(service)
    return {e["ServiceID"]: (e["CreateIndex"], e["ModifyIndex"]) for e in entries}


def dns_addresses(agent: Agent, name: str = SERVICE) -> set[str]:
    try:
        msg = lookup.query(f"{name}.service.consul", "A", agent.dns, timeout=1)
    except lookup.DNSError:
        return set()
    return set(lookup.addresses(msg))


def dig_in(netns: str, name: str = SERVICE) -> set[str]:
    """A records a container gets for a service (through the daemon's DNS forwarder)."""
    out = in_ns(netns, f"dig +short +time=1 +tries=1 {name}.service.consul").stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def first_time(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """monotonic() when ``predicate`` first held; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(interval)
    pytest.fail(f"{getattr(predicate, '__name__', 'condition')} did not hold in {timeout} s")


def expected_registrations() -> dict[str, dict[str, Any]]:
    def meta(container: str, check: str) -> dict[str, str]:
        return {"switchboard": "1", "switchboard-topology": TOPOLOGY,
                "switchboard-container": container, "switchboard-check": check}

    return {
        service_id("api-1"): {
            "name": SERVICE, "address": f"{LAN}.11", "port": 8080, "tags": ["v1", "blue", TAG],
            "meta": meta("api-1", json.dumps(
                {"interval": "1s", "kind": "tcp", "target": f"{LAN}.11:8080", "timeout": None},
                separators=(",", ":"))),
            "check": ("tcp", service_id("api-1")),
        },
        service_id("api-2"): {
            "name": SERVICE, "address": f"{LAN}.12", "port": 8080, "tags": ["v1", "green", TAG],
            "meta": meta("api-2", json.dumps(
                {"interval": "1s", "kind": "http", "target": f"http://{LAN}.12:8080/",
                 "timeout": None}, separators=(",", ":"))),
            "check": ("http", service_id("api-2")),
        },
    }


def all_back(agent: Agent) -> bool:
    """Both instances registered with the agent as declared, passing in the health API
    and answered by Consul DNS (the catalog alone may still hold what the agent lost)."""
    try:
        registered = registrations(agent)
    except Exception:  # noqa: BLE001 - agent restarting
        return False
    ids = {service_id(c) for c in INSTANCES}
    return (registered == expected_registrations() and set(passing(agent)) == ids
            and dns_addresses(agent) == set(INSTANCES.values()))


# --------------------------------------------------------------------------- tests


def test_registrations_match_the_file_field_by_field(agent, sb):
    assert registrations(agent) == expected_registrations()
    assert passing(agent) == {service_id(c): (ip, 8080) for c, ip in INSTANCES.items()}
    assert dig_in("sb-sbt-res-client") == set(INSTANCES.values())


def host_passing(agent: Agent, sb: Switchboard) -> bool:
    """The daemon's own registration (``switchboard-host``) is back, its TTL check passing."""
    try:
        checks = agent.client().agent.checks()
    except Exception:  # noqa: BLE001 - agent restarting
        return False
    return (checks.get(f"service:{service_id_of_host(sb.prefix)}") or {}).get("Status") \
        == "passing"


def test_agent_restart_brings_every_service_back_passing(agent, sb):
    """How soon is measured by bench/consul_restart.py (docs/benchmarks.md); printed here."""
    before = registrations(agent)
    agent.stop()
    assert not agent.answering()
    agent.start()
    answering = first_time(agent.answering, 30)
    back = first_time(lambda: all_back(agent) and host_passing(agent, sb), 30)
    print(f"agent answering -> every service back and passing: {back - answering:.2f} s")
    assert registrations(agent) == before == expected_registrations()
    assert set(catalog(agent)) == {service_id(c) for c in INSTANCES}  # no duplicates
    assert wait_until(lambda: sb.status(TOPOLOGY)["state"] == "converged", 10)
    assert dig_in("sb-sbt-res-client") == set(INSTANCES.values())


def test_agent_that_lost_its_services_gets_them_all_back(agent, sb):
    """An agent that comes back without its local state (a rebuilt node): the daemon
    registers its instances and itself again (measured by bench/consul_restart.py: within
    a second of the agent answering, not at the next periodic resync, 10 s)."""
    agent.stop()
    for folder in ("services", "checks"):  # what the agent keeps of local registrations
        shutil.rmtree(agent.data_dir / folder, ignore_errors=True)
    agent.start()
    answering = first_time(agent.answering, 30)
    back = first_time(lambda: all_back(agent) and host_passing(agent, sb), 30)
    print(f"agent answering -> every service back and passing: {back - answering:.2f} s")
    assert registrations(agent) == expected_registrations()
    assert set(catalog(agent)) == {service_id(c) for c in INSTANCES}


def test_periodic_resync_re_registers_a_service_removed_behind_its_back(agent, sb):
    agent.client().agent.service.deregister(service_id("api-1"))
    assert service_id("api-1") not in registrations(agent)
    assert wait_until(lambda: registrations(agent) == expected_registrations(), 12, 0.2)


def test_daemon_restart_registers_nothing_twice_and_does_not_flap(agent, sb):
    assert wait_until(lambda: all_back(agent), 10)
    before_catalog, before = catalog(agent), registrations(agent)
    sb.kill(signal.SIGKILL)
    sb.start()
    pid = sb.proc.pid
    assert wait_until(lambda: sb.status(TOPOLOGY)["daemon_pid"] == pid
                      and sb.status(TOPOLOGY)["state"] == "converged", 30)
    counters = sb.counters(TOPOLOGY)
    assert (counters["registrations"], counters["deregistrations"]) == (0, 0)
    assert catalog(agent) == before_catalog  # same CreateIndex and ModifyIndex
    assert registrations(agent) == before
    assert all_back(agent)


def test_dead_process_turns_critical_and_leaves_dns_within_interval_plus_1s(agent, sb):
    assert wait_until(lambda: all_back(agent), 10)
    pid_file = Path(sb.state_dir, "pids", TOPOLOGY, "api-2.pid")
    pid = int(pid_file.read_text().split()[0])
    os.killpg(pid, signal.SIGKILL)
    killed = time.monotonic()
    sid = service_id("api-2")

    def critical() -> bool:  # its check, or the maintenance the daemon sets at the exit
        checks = agent.client().agent.checks().values()
        return any(c["Status"] == "critical" for c in checks if c.get("ServiceID") == sid)

    def gone_from_dns() -> bool:
        return dig_in("sb-sbt-res-client") == {INSTANCES["api-1"]}

    # The daemon sees the exit at once (see test_failover_exit.py): critical and out of DNS
    # well within the check's interval (1 s) + 1 s, and back once its command is started
    # again (restart: always) and its check passes.
    assert first_time(critical, 5) - killed <= 2.0
    assert first_time(gone_from_dns, 5) - killed <= 2.0
    assert wait_until(lambda: all_back(agent), 20, 0.2)


RM_BASE = """
name: sbt-resrm
networks:
  lan: {subnet: 10.236.33.0/24}
containers:
  keep:
    networks: [lan]
    services: [{name: sbtres-rm, port: 80}]
  gone:
    networks: [lan]
    services: [{name: sbtres-rm, port: 80}]
"""
RM_EDITED = RM_BASE.split("  gone:")[0]


def _applied(agent: Agent, sb: Switchboard) -> str | None:
    _, entry = agent.client().kv.get(f"{sb.prefix}/topologies/sbt-resrm/applied")
    return json.loads(entry["Value"])["digest"] if entry else None


def _removal_delay(agent: Agent, sb: Switchboard, args: list[str], written: Callable) -> float:
    """Run ``switchboard ARGS`` and return seconds from the desired state changing in KV
    (``written``) until the ``gone`` instance has left the agent and the health API."""
    sid = service_id("gone", "sbt-resrm", "sbtres-rm")
    proc = subprocess.Popen([sys.executable, "-m", "switchboard.cli", *args],
                            env=sb.env, cwd=Path(__file__).resolve().parents[3],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        changed = first_time(written, 30, 0.005)
        gone = first_time(lambda: sid not in agent.client().agent.services()
                          and sid not in passing(agent, "sbtres-rm"), 10, 0.005)
    finally:
        out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    return gone - changed


def test_container_removed_by_an_edited_file_leaves_consul_within_1s(agent, sb, tmp_path):
    sb.up(tmp_path, RM_BASE)
    digest = _applied(agent, sb)
    path = tmp_path / "edited.yaml"
    path.write_text(RM_EDITED)
    delay = _removal_delay(agent, sb, ["up", str(path)],
                           lambda: _applied(agent, sb) not in (None, digest))
    assert delay < 1.0
    assert service_id("keep", "sbt-resrm", "sbtres-rm") in agent.client().agent.services()


def test_down_removes_services_from_consul_within_1s(agent, sb, tmp_path):
    sb.up(tmp_path, RM_BASE)
    delay = _removal_delay(agent, sb, ["down", "sbt-resrm"],
                           lambda: _applied(agent, sb) is None)
    assert delay < 1.0
    ours = [s for s in agent.client().agent.services().values() if s["Service"] == "sbtres-rm"]
    assert ours == []
