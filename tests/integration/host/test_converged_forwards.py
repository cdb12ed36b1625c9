"""'converged' means the data path forwards, even when the daemon was SIGKILLed during the `up`
and other bridges point at its OpenFlow port (one of them going away meanwhile).

`up` returns once `status` says converged; at that moment every container must answer one
round of pings from the host (a short grace for the host's own ARP, not a wait for flows).
Repeated with the kill at several moments of the `up`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from tests.consul_agent import Agent, daemon_on_agent, running_agent
from tests.harness import Switchboard, sh, wait_until
from tests.integration.host.test_crash_consistency import (
    finish,
    kill_daemon_after,
    run_cli,
    unanswered,
)

pytestmark = pytest.mark.integration

TOPOLOGY = "sbcf"
N = 200
SUBNET = IPv4Network("10.238.0.0/20")
KILL_AT = (0.4, 0.9, 1.3, 1.8, 2.4, 3.0)  # seconds into the `up`; it plumbs from about 1 s
FIRST_ROUND = 2.0  # seconds: one ping round and the host's ARP, no more


def topology_text() -> str:
    lines = [f"name: {TOPOLOGY}", "networks:", f"  lan: {{subnet: {SUBNET}}}", "containers:"]
    lines += [f"  c{i}: {{networks: [lan]}}" for i in range(N)]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    with running_agent(tmp_path_factory.mktemp("cf-consul")) as agent:
        yield agent


@pytest.fixture(scope="module")
def sb(agent: Agent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Switchboard]:
    run = os.getpid()
    with daemon_on_agent(agent, tmp_path_factory.mktemp("cf-state"), f"sbcf-{run}",
                         f"sbk{run}", TOPOLOGY) as board:
        yield board
    agent.client().kv.delete(f"{board.prefix}/", recurse=True)


def add_foreign_bridge(name: str, port: str) -> None:
    sh(f"ovs-vsctl --if-exists del-br {name} -- add-br {name} -- set Bridge {name} "
       f"datapath_type=netdev fail_mode=secure protocols=OpenFlow13 "
       f"-- set-controller {name} tcp:127.0.0.1:{port}", check=True)


def addresses(sb: Switchboard) -> list[str]:
    data = json.loads(sb.cli("status", TOPOLOGY, "--json").stdout)
    state = next(iter(data["topologies"][0]["hosts"].values()))
    assert state["state"] == "converged", state.get("error")
    return [row["ip"] for row in state["containers"]]


def test_converged_after_a_kill_during_up_means_every_container_answers(sb, tmp_path: Path):
    path = tmp_path / f"{TOPOLOGY}.yaml"
    path.write_text(topology_text())
    port = sb.env["SWITCHBOARD_OF_PORT"]
    stays, goes = f"sbfs{os.getpid() % 10000}", f"sbfg{os.getpid() % 10000}"
    try:
        for delay in KILL_AT:
            add_foreign_bridge(stays, port)
            add_foreign_bridge(goes, port)
            proc = run_cli(sb, "up", str(path), "--timeout", "120")
            kill_daemon_after(sb, delay)
            sh(f"ovs-vsctl --if-exists del-br {goes}")  # a connected datapath goes away
            code, out = finish(proc)
            assert code == 0, f"up failed after a kill at {delay} s:\n{out}\n{sb.log_tail()}"
            rows = addresses(sb)
            assert len(rows) == N
            silent = unanswered(rows, timeout=FIRST_ROUND)
            assert not silent, (f"kill at {delay} s: converged, but {len(silent)} of {N} do "
                                f"not answer, e.g. {sorted(silent)[:5]}\n{sb.log_tail()}")
            sb.cli("down", TOPOLOGY, timeout=120)
            assert wait_until(lambda: not [n for n in os.listdir("/var/run/netns")
                                           if n.startswith(f"sb-{TOPOLOGY}-")], 10)
    finally:
        sh(f"ovs-vsctl --if-exists del-br {stays} -- --if-exists del-br {goes}")
