"""The daemon's metrics, health endpoint and events, against the real daemon, OVS, Consul and
containers: a real Prometheus scrape parsed with the client library's parser while ping
traffic flows, /healthz, and `switchboard events` after up, a killed command and down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plumbing import processes
from sbcore.state import events as ev
from tests.harness import (
    ROOT,
    Switchboard,
    forget_registration,
    free_port,
    in_ns,
    private_switchboard,
    sh,
    wait_until,
)

pytestmark = pytest.mark.integration

NAME = "sbt-mon"
TOPOLOGY = f"""
name: {NAME}
networks:
  lan: {{subnet: 10.243.1.0/24}}
containers:
  a:
    networks: [lan]
  b:
    networks: [lan]
    command: python3 -m http.server 8080
    services:
      - name: monapi
        port: 8080
        check: {{tcp: 8080, interval: 1s}}
services:
  monapi:
    vip: 10.243.1.100
    port: 80
"""


def scrape(sb: Switchboard) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One real scrape of /metrics, parsed: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(f"{sb.metrics_url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not in the scrape: " + ", ".join(
        sorted({n for n, _ in samples if n.startswith(name.rsplit("_", 1)[0])}))
    return samples[key]


def health(sb: Switchboard) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{sb.metrics_url}/healthz", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def events(sb: Switchboard, *args: str) -> list[dict]:
    out = sb.cli("events", "--json", "-n", "0", "-t", NAME, *args).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def kinds(sb: Switchboard) -> list[tuple[str, str]]:
    return [(e["kind"], e["container"]) for e in events(sb)]


@pytest.fixture(scope="module")
def mon(switchboard: Switchboard, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[Switchboard]:
    switchboard.up(tmp_path_factory.mktemp("mon"), TOPOLOGY)
    try:
        yield switchboard
    finally:
        switchboard.cli("down", NAME, check=False)


def test_scrape_counts_the_packets_a_ping_sends_and_receives(mon: Switchboard) -> None:
    netns_a = f"sb-{NAME}-a"
    b_ip = next(r["ip"] for r in mon.status(NAME)["containers"] if r["container"] == "b")
    assert in_ns(netns_a, f"ping -c 1 -W 2 {b_ip}").returncode == 0  # neighbours resolved
    before = scrape(mon)
    a = {"topology": NAME, "container": "a", "interface": "eth0", "network": "lan"}
    b = {**a, "container": "b"}
    result = in_ns(netns_a, f"ping -c 20 -i 0.05 -s 100 -W 2 {b_ip}")
    assert result.returncode == 0, result.stdout + result.stderr
    after = scrape(mon)

    def grew(name: str, labels: dict) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("switchboard_interface_transmit_packets_total", a) >= 20
    assert grew("switchboard_interface_receive_packets_total", b) >= 20
    assert grew("switchboard_interface_transmit_packets_total", b) >= 20  # the replies
    assert grew("switchboard_interface_receive_packets_total", a) >= 20
    assert grew("switchboard_interface_transmit_bytes_total", a) >= 20 * (100 + 28 + 14)
    assert value(after, "switchboard_ovs_stats_up") == 1
    assert value(after, "switchboard_ovs_connected", channel="openflow") == 1
    assert value(after, "switchboard_topology_state", topology=NAME, state="converged") == 1
    assert value(after, "switchboard_openflow_flows") > 10
    assert value(after, "switchboard_openflow_groups") >= 1  # the VIP's select group
    assert value(after, "switchboard_reconcile_duration_seconds_count") >= 1
    assert value(after, "switchboard_reconcile_passes_total", result="ok") >= 1


def test_spoofed_packets_count_as_dropped_by_the_classifier(mon: Switchboard) -> None:
    """A packet from an address the port does not own falls to the classifier's default."""
    stage = {"stage": "classifier"}
    before = value(scrape(mon), "switchboard_pipeline_dropped_packets_total", **stage)
    netns_a = f"sb-{NAME}-a"
    in_ns(netns_a, "ip addr add 10.243.1.250/24 dev eth0")  # not the port's address
    in_ns(netns_a, "ip neigh replace 10.243.1.77 lladdr 02:00:00:00:00:77 dev eth0")  # no ARP
    try:
        in_ns(netns_a, "ping -c 5 -i 0.05 -W 1 -I 10.243.1.250 10.243.1.77")
    finally:
        in_ns(netns_a, "ip neigh del 10.243.1.77 dev eth0")
        in_ns(netns_a, "ip addr del 10.243.1.250/24 dev eth0")
    after = value(scrape(mon), "switchboard_pipeline_dropped_packets_total", **stage)
    assert after - before >= 5


def test_vip_backends_instances_and_dns_are_counted(mon: Switchboard) -> None:
    assert wait_until(lambda: value(scrape(mon), "switchboard_vip_backends",
                                    topology=NAME, service="monapi") == 1, 15)
    samples = scrape(mon)
    assert value(samples, "switchboard_service_instances", topology=NAME, service="monapi",
                 status="passing") == 1
    answered = value(samples, "switchboard_dns_queries_total", result="answered")
    dig = in_ns(f"sb-{NAME}-a", "dig +short +time=2 +tries=1 monapi.vip.consul")
    assert "10.243.1.100" in dig.stdout, dig.stdout + dig.stderr
    assert value(scrape(mon), "switchboard_dns_queries_total", result="answered") > answered


def test_healthz_says_healthy_with_what_it_checked(mon: Switchboard) -> None:
    code, doc = health(mon)
    assert code == 200, doc
    assert doc["healthy"] and doc["problems"] == []
    assert doc["ovs"]["openflow"] and doc["ovs"]["ovsdb"]
    assert doc["consul"]["reachable"]
    assert doc["reconcile"]["last_pass_age_seconds"] < doc["reconcile"]["max_age_seconds"]


def test_events_tell_what_up_a_killed_command_and_down_did(mon: Switchboard,
                                                           tmp_path: Path) -> None:
    assert wait_until(lambda: {("container.started", "a"), ("container.started", "b"),
                               ("vip.backend_added", "b")} <= set(kinds(mon)), 15), kinds(mon)
    row = next(r for r in mon.status(NAME)["containers"] if r["container"] == "b")
    assert row.get("restarts") == 0, row  # the report counts restarts
    record = processes.read(mon.state_dir / "pids" / NAME / "b.pid")
    assert record is not None
    pid = record.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: ("container.restarted", "b") in kinds(mon), 30), kinds(mon)
    restarted = next(e for e in events(mon) if e["kind"] == "container.restarted")
    assert restarted["host"] == "test-host" and restarted["details"]["restarts"] >= 1
    human = mon.cli("events", "-t", NAME).stdout
    assert "container.restarted" in human and f"{NAME}/b" in human


def test_events_follow_prints_what_down_does_as_it_happens(switchboard: Switchboard,
                                                           tmp_path: Path) -> None:
    name = "sbt-mon2"
    topology = f"""
name: {name}
networks:
  lan: {{subnet: 10.243.2.0/24}}
containers:
  c:
    networks: [lan]
"""
    switchboard.up(tmp_path, topology)
    follower = subprocess.Popen(
        [sys.executable, "-m", "switchboard.cli", "events", "-f", "--json", "-n", "0",
         "-t", name], env=switchboard.env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    seen: list[tuple[str, str]] = []
    assert follower.stdout is not None

    def read_until(wanted: tuple[str, str]) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and wanted not in seen:
            line = follower.stdout.readline()  # type: ignore[union-attr]
            if line:
                event = json.loads(line)
                seen.append((event["kind"], event["container"]))
        return wanted in seen

    # events written while it starts, one every 0.5 s: once it prints one, it is following
    markers: list[str] = []
    following = threading.Event()

    def mark() -> None:
        while not following.is_set() and len(markers) < 120:
            markers.append(ev.event_key(switchboard.prefix, "sbt-marker", time.time_ns(), 0))
            consul.Consul().kv.put(markers[-1], ev.encode(ev.Event(
                "test.marker", "following?", "sbt-marker", name, "m", time.time())))
            following.wait(0.5)
    marker = threading.Thread(target=mark, daemon=True)
    marker.start()
    try:
        assert read_until(("test.marker", "m")), seen
        following.set()
        marker.join(10)
        switchboard.cli("down", name)
        assert read_until(("container.stopped", "c")), seen
    finally:
        following.set()
        follower.send_signal(signal.SIGINT)
        follower.wait(10)
        consul.Consul().kv.delete(f"{switchboard.prefix}/events/sbt-marker/", recurse=True)
        switchboard.cli("down", name, check=False)


def test_a_taken_metrics_address_refuses_to_start_naming_it(switchboard: Switchboard,
                                                            tmp_path: Path) -> None:
    env = {**switchboard.env, "SWITCHBOARD_BRIDGE": "sbt-nomet", "SWITCHBOARD_RUN":
           str(tmp_path), "SWITCHBOARD_STATE": str(tmp_path),
           "SWITCHBOARD_OF_PORT": str(int(switchboard.env["SWITCHBOARD_OF_PORT"]) + 7)}
    result = subprocess.run([sys.executable, "-m", "switchboard.cli", "controller"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    sh("ovs-vsctl --if-exists del-br sbt-nomet")
    assert result.returncode == 1
    assert switchboard.env["SWITCHBOARD_METRICS"] in result.stderr
    assert "--metrics" in result.stderr


@pytest.fixture()
def private(tmp_path: Path) -> Iterator[Switchboard]:
    """A daemon configuration of its own (started by the start script), removed afterwards."""
    run = os.getpid()
    sb = private_switchboard(tmp_path, prefix=f"sbmonstart-{run}", bridge=f"sbs{run}",
                             of_port=free_port())
    sb.env.update({"SWITCHBOARD_LOGS": str(tmp_path),
                   "SWITCHBOARD_CMD": f"{sys.executable} -m switchboard.cli"})
    yield sb
    pid_file = tmp_path / "controller.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10)
    consul.Consul().kv.delete(f"{sb.prefix}/", recurse=True)
    forget_registration(sb.prefix)
    sh(f"ovs-vsctl --if-exists del-br {sb.bridge}")


def start_script(sb: Switchboard) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "scripts" / "start-controller.sh")], env=sb.env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_the_start_script_returns_once_the_daemon_is_healthy(private: Switchboard) -> None:
    result = start_script(private)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "switchboard controller is healthy" in result.stdout, result.stdout + result.stderr
    assert health(private)[0] == 200


def test_without_consul_healthz_is_503_and_the_start_script_says_why(private: Switchboard
                                                                     ) -> None:
    private.env.update({"SWITCHBOARD_CONSUL": f"http://127.0.0.1:{free_port()}",
                        "SWITCHBOARD_HEALTH_WAIT": "2"})
    result = start_script(private)
    assert result.returncode == 0, result.stdout + result.stderr  # it runs, and catches up
    assert "not healthy yet: the Consul agent does not answer" in result.stderr
    code, doc = health(private)
    assert code == 503 and not doc["healthy"] and not doc["consul"]["reachable"]
    assert "no reconcile pass has ended yet" in doc["problems"]
