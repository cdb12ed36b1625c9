"""The host inventory and placement on one host: a real daemon, a real Consul agent.

`switchboard hosts` shows the test daemon's host ready with slot 0, and down within the TTL
once its daemon is SIGKILLed; `host:` pins a container to a ready host, and an unknown or
down host fails cleanly, changing nothing; the placement is stored and stays put.
`hosts forget` refuses a live host, and a dead one while containers still run on it (named);
then its record, slot, reports and events go in one transaction, `hosts` no longer shows it,
and a daemon that starts again under that name registers afresh.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from controller.daemon.registration import TTL
from tests.consul_agent import free_port
from tests.harness import Switchboard, forget_registration, private_switchboard, sh, wait_until

pytestmark = pytest.mark.integration

NAME = "sbt-hosts"
TOPOLOGY = """
name: sbt-hosts
networks:
  lan: {subnet: 10.236.70.0/24}
containers:
  a: {networks: [lan], host: %s}
  b: {networks: [lan]}
"""


def hosts(sb: Switchboard) -> dict[str, dict]:
    shown = json.loads(sb.cli("hosts", "--json").stdout)
    return {h["name"]: h for h in shown["hosts"]}


def everything(prefix: str) -> list[tuple[str, bytes]]:
    _, entries = consul.Consul().kv.get(f"{prefix}/", recurse=True)
    return sorted((e["Key"], e["Value"]) for e in entries or [])


def inventory(prefix: str) -> list[tuple[str, bytes]]:
    """The host records, slots and the admission key (what a forget may change; the daemons
    write their locks, reports and events meanwhile)."""
    return [(k, v) for k, v in everything(prefix)
            if k.startswith((f"{prefix}/hosts/", f"{prefix}/slots/", f"{prefix}/admission"))]


def host_keys(prefix: str, host: str) -> list[str]:
    """The keys about ``host``: its record, the slot it holds, its reports and events."""
    return [k for k, v in everything(prefix)
            if k == f"{prefix}/hosts/{host}"
            or (k.startswith(f"{prefix}/slots/") and v == host.encode())
            or k.startswith((f"{prefix}/status/{host}/", f"{prefix}/events/{host}/"))]


@pytest.fixture()
def applied(switchboard: Switchboard) -> Iterator[None]:
    yield
    switchboard.cli("down", NAME, check=False)


def test_hosts_shows_this_host_ready_with_slot_0(switchboard):
    shown = hosts(switchboard)
    assert shown["test-host"]["state"] == "ready" and shown["test-host"]["slot"] == 0
    assert shown["test-host"]["bridge"] == switchboard.bridge
    table = switchboard.cli("hosts").stdout
    assert table.split()[:5] == ["NAME", "ADDRESS", "STATE", "CONTAINERS", "VERSION"]
    assert "test-host" in table and "ready" in table


def test_a_pinned_container_runs_on_its_host_and_the_placement_is_stored_and_stable(
    switchboard, tmp_path, applied
):
    client = consul.Consul()
    key = f"{switchboard.prefix}/topologies/{NAME}/placement"
    result = switchboard.up(tmp_path, TOPOLOGY % "test-host")
    assert "is up" in result.stdout, result.stdout + result.stderr
    index, entry = client.kv.get(key)
    assert json.loads(entry["Value"]) == {"a": "test-host", "b": "test-host"}
    assert hosts(switchboard)["test-host"]["containers"] == 2

    switchboard.up(tmp_path, TOPOLOGY % "test-host")  # the same file again: nothing written
    assert client.kv.get(key)[1]["ModifyIndex"] == entry["ModifyIndex"]

    edited = (TOPOLOGY % "test-host") + "  c: {networks: [lan]}\n"
    switchboard.up(tmp_path, edited)  # an edit: placed containers stay, c is placed
    assert json.loads(client.kv.get(key)[1]["Value"]) == {
        "a": "test-host", "b": "test-host", "c": "test-host"}

    status = json.loads(switchboard.cli("status", NAME, "--json").stdout)["topologies"][0]
    assert {(r["container"], r["host"]) for r in status["containers"]} == {
        ("a", "test-host"), ("b", "test-host"), ("c", "test-host")}
    assert status["placement"] == {"a": "test-host", "b": "test-host", "c": "test-host"}
    text = switchboard.cli("status", NAME).stdout
    assert any(line.split()[:2] == ["container", "host"] for line in text.splitlines()), text
    assert any(line.split()[:3] == ["a", "test-host", "lan"] for line in text.splitlines()), text


@pytest.mark.parametrize(("host", "why"), [
    ("nope", "containers.a.host: nope is not a known host; ready hosts: test-host"),
    ("ghost", "containers.a.host: ghost is down (not registered in Consul"),
])
def test_an_unknown_or_down_host_fails_cleanly_and_changes_nothing(
    switchboard, tmp_path, applied, host, why
):
    client = consul.Consul()
    ghost = f"{switchboard.prefix}/hosts/ghost"
    client.kv.put(ghost, json.dumps({"name": "ghost", "slot": 7}))  # a host long gone
    try:
        before = everything(switchboard.prefix)
        path = tmp_path / "pinned.yaml"
        path.write_text(TOPOLOGY % host)
        result = switchboard.cli("up", str(path), check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "cannot be placed; nothing was changed" in result.stderr
        assert why in result.stderr and "Traceback" not in result.stderr
        assert everything(switchboard.prefix) == before
        assert sh(f"ip netns list | grep -c sb-{NAME}-").stdout.strip() in ("", "0")
    finally:
        client.kv.delete(ghost)
        client.kv.delete(f"{switchboard.prefix}/slots/7")


@pytest.fixture()
def second(tmp_path: Path) -> Iterator[Switchboard]:
    """Another daemon with its own prefix and bridge (the session's is left alone)."""
    run_id = os.getpid()
    sb = private_switchboard(tmp_path, prefix=f"sbhosts-{run_id}", bridge=f"sbk{run_id}",
                             of_port=free_port())
    sb.env["SWITCHBOARD_HOST_ID"] = "doomed-host"
    sb.start()
    try:
        yield sb
    finally:
        sb.kill()
        forget_registration(sb.prefix)
        consul.Consul().kv.delete(f"{sb.prefix}/", recurse=True)
        sh(f"ovs-vsctl --if-exists del-br {sb.bridge}")


def test_a_sigkilled_daemon_shows_down_within_the_ttl(second):
    assert wait_until(lambda: hosts(second).get("doomed-host", {}).get("state") == "ready",
                      20), second.log_tail()
    assert hosts(second)["doomed-host"]["slot"] == 0
    second.kill(signal.SIGKILL)
    killed = time.monotonic()
    assert wait_until(lambda: hosts(second)["doomed-host"]["state"] == "down", TTL + 5,
                      interval=0.5)
    took = time.monotonic() - killed
    assert took <= TTL + 3, took
    shown = hosts(second)["doomed-host"]
    assert shown["reason"].startswith("its daemon stopped answering"), shown
    assert shown["slot"] == 0  # a host keeps its slot


def test_the_python_api_places_containers_too(switchboard):
    from sbcore.plan.placement import PlacementError
    from switchboard.api import Container, VirtualNetwork, VirtualNIC

    net = VirtualNetwork("sbt-hostapi", "10.236.71.0/24", prefix=switchboard.prefix)
    try:
        with pytest.raises(PlacementError, match="containers.x.host: nope is not a known host"):
            Container("x", net, VirtualNIC("n1", net), host="nope").start()
        assert net.containers == {}
        Container("y", net, VirtualNIC("n2", net), host="test-host").start()
        Container("z", net, VirtualNIC("n3", net)).start()
        _, entry = consul.Consul().kv.get(
            f"{switchboard.prefix}/topologies/sbt-hostapi/placement")
        assert json.loads(entry["Value"]) == {"y": "test-host", "z": "test-host"}
    finally:
        net.delete()


FORGET = """
name: sbt-forget
networks:
  lan: {subnet: 10.236.72.0/24}
containers:
  a: {networks: [lan]}
"""


def ready(sb: Switchboard) -> bool:
    return hosts(sb).get("doomed-host", {}).get("state") == "ready"


def killed(sb: Switchboard) -> None:
    sb.kill(signal.SIGKILL)
    assert wait_until(lambda: hosts(sb)["doomed-host"]["state"] == "down", TTL + 5,
                      interval=0.5)


def test_forget_refuses_a_live_host_and_an_unknown_one_changing_nothing(second):
    assert wait_until(lambda: ready(second), 20), second.log_tail()
    before = inventory(second.prefix)
    result = second.cli("hosts", "forget", "doomed-host", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "host doomed-host is up" in result.stderr and "Traceback" not in result.stderr
    assert inventory(second.prefix) == before
    unknown = second.cli("hosts", "forget", "nope", check=False)
    assert unknown.returncode == 1 and "hosts: doomed-host" in unknown.stderr, unknown.stderr


def test_a_dead_host_is_forgotten_once_nothing_runs_on_it(second, tmp_path):
    assert wait_until(lambda: ready(second), 20), second.log_tail()
    second.up(tmp_path, FORGET)
    killed(second)
    before = inventory(second.prefix)
    refused = second.cli("hosts", "forget", "doomed-host", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "containers still run on host doomed-host (sbt-forget: a)" in refused.stderr
    assert inventory(second.prefix) == before  # changes nothing

    second.start()  # back, to take its topology down (`down` needs a ready host)
    assert wait_until(lambda: ready(second), 20), second.log_tail()
    second.cli("down", "sbt-forget")
    killed(second)
    assert host_keys(second.prefix, "doomed-host")  # record, slot, last reports, events
    forgot = second.cli("hosts", "forget", "doomed-host", check=False)
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    assert "forgot host doomed-host" in forgot.stdout
    assert host_keys(second.prefix, "doomed-host") == []
    assert hosts(second) == {}
    assert "no host has registered" in second.cli("hosts").stdout

    second.start()  # the machine comes back after all: it registers afresh
    assert wait_until(lambda: ready(second), 20), second.log_tail()
    assert hosts(second)["doomed-host"]["slot"] == 0
