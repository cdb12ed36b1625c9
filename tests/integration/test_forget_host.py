"""`switchboard hosts forget`: a real daemon that dies, a real Consul agent.

A live host is never forgotten; a dead one is refused while containers still run on it (they
are named); once they are gone, its record, slot, reports and events go in one transaction,
`hosts` no longer shows it, and a daemon that starts again under that name registers afresh.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import consul
import pytest

from controller.registration import TTL
from tests.consul_agent import free_port
from tests.harness import Switchboard, forget_registration, private_switchboard, sh, wait_until

pytestmark = pytest.mark.integration

HOST = "gone-host"
NAME = "sbt-forget"
TOPOLOGY = """
name: sbt-forget
networks:
  lan: {subnet: 10.236.72.0/24}
containers:
  a: {networks: [lan]}
"""


def hosts(sb: Switchboard) -> dict[str, dict]:
    return {h["name"]: h for h in json.loads(sb.cli("hosts", "--json").stdout)["hosts"]}


def keys(prefix: str) -> dict[str, bytes]:
    _, entries = consul.Consul().kv.get(f"{prefix}/", recurse=True)
    return {e["Key"]: e["Value"] for e in entries or []}


def inventory(prefix: str) -> dict[str, bytes]:
    """The host records, slots and the admission key (what a forget may change; the daemons
    write their locks, reports and events meanwhile)."""
    return {k: v for k, v in keys(prefix).items()
            if k.startswith((f"{prefix}/hosts/", f"{prefix}/slots/", f"{prefix}/admission"))}


def host_keys(prefix: str) -> list[str]:
    """The keys that are about HOST: its record, the slot it holds, its reports, events."""
    return sorted(k for k, v in keys(prefix).items()
                  if k == f"{prefix}/hosts/{HOST}" or (k.startswith(f"{prefix}/slots/")
                                                      and v == HOST.encode())
                  or k.startswith((f"{prefix}/status/{HOST}/", f"{prefix}/events/{HOST}/")))


@pytest.fixture()
def gone(tmp_path: Path) -> Iterator[Switchboard]:
    """A daemon of its own (prefix, bridge, host name), ready."""
    run_id = os.getpid()
    sb = private_switchboard(tmp_path, prefix=f"sbforget-{run_id}", bridge=f"sbf{run_id}",
                             of_port=free_port())
    sb.env["SWITCHBOARD_HOST_ID"] = HOST
    sb.start()
    try:
        assert wait_until(lambda: hosts(sb).get(HOST, {}).get("state") == "ready", 20), \
            sb.log_tail()
        yield sb
    finally:
        sb.kill()
        forget_registration(sb.prefix)
        consul.Consul().kv.delete(f"{sb.prefix}/", recurse=True)
        sh(f"ovs-vsctl --if-exists del-br {sb.bridge}")


def test_a_live_host_is_refused_and_nothing_changes(gone):
    before = inventory(gone.prefix)
    result = gone.cli("hosts", "forget", HOST, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"host {HOST} is up" in result.stderr and "Traceback" not in result.stderr
    assert inventory(gone.prefix) == before
    unknown = gone.cli("hosts", "forget", "nope", check=False)
    assert unknown.returncode == 1 and f"hosts: {HOST}" in unknown.stderr, unknown.stderr


def killed(sb: Switchboard) -> None:
    sb.kill(signal.SIGKILL)
    assert wait_until(lambda: hosts(sb)[HOST]["state"] == "down", TTL + 5, interval=0.5)


def test_a_dead_host_is_forgotten_once_nothing_runs_on_it(gone, tmp_path):
    gone.up(tmp_path, TOPOLOGY)
    killed(gone)
    before = inventory(gone.prefix)
    refused = gone.cli("hosts", "forget", HOST, check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"containers still run on host {HOST} ({NAME}: a)" in refused.stderr, refused.stderr
    assert inventory(gone.prefix) == before  # changes nothing

    gone.start()  # back, to take its topology down (`down` needs a ready host)
    assert wait_until(lambda: hosts(gone)[HOST]["state"] == "ready", 20), gone.log_tail()
    gone.cli("down", NAME)
    killed(gone)
    assert host_keys(gone.prefix)  # record, slot, its last reports, events
    forgot = gone.cli("hosts", "forget", HOST, check=False)
    assert forgot.returncode == 0, forgot.stdout + forgot.stderr
    assert f"forgot host {HOST}" in forgot.stdout
    assert host_keys(gone.prefix) == []
    assert HOST not in hosts(gone)
    assert "no host has registered" in gone.cli("hosts").stdout

    gone.start()  # the machine comes back after all: it registers afresh
    assert wait_until(lambda: hosts(gone).get(HOST, {}).get("state") == "ready", 20), \
        gone.log_tail()
    assert hosts(gone)[HOST]["slot"] == 0
