"""Concurrent writers: real `switchboard up` and `down` processes racing on one Consul.

``SWITCHBOARD_ADMIT_PAUSE`` holds each `up` between its decision and its commit, so the two
processes of a round always interleave (both read the state before either writes): without
atomic admission both would win a conflict in every round.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sbcore.model import load_topology
from sbcore.model.desired import digest_of, topology_objects
from sbcore.model.ipam import allocate
from sbcore.state.store import Store, consul_client
from tests.harness import ROOT, Switchboard, sh, wait_until

pytestmark = pytest.mark.integration

ROUNDS = 6
PAUSE = "0.4"


def _file(tmp_path: Path, name: str, subnet: str, container: str = "") -> Path:
    text = f"name: {name}\nnetworks:\n  lan: {{subnet: {subnet}}}\n"
    if container:
        text += f"containers:\n  {container}: {{networks: [lan]}}\n"
    path = tmp_path / f"{name}-{subnet.replace('/', '_')}-{container or 'none'}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _start(sb: Switchboard, *args: str) -> subprocess.Popen[str]:
    env = dict(sb.env, SWITCHBOARD_ADMIT_PAUSE=PAUSE)
    return subprocess.Popen([sys.executable, "-m", "switchboard.cli", *args], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _race(sb: Switchboard, first: list[str], second: list[str]) -> list[tuple[int, str]]:
    procs = [_start(sb, *first), _start(sb, *second)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        results.append((proc.returncode, out))
    return results


def _store(sb: Switchboard) -> Store:
    return Store(consul_client("http://127.0.0.1:8500"), sb.prefix)


def _host_addresses(subnet_prefix: str) -> list[str]:
    return [line for line in sh("ip -4 -o addr show").stdout.splitlines()
            if f" {subnet_prefix}" in line]


def _down(sb: Switchboard, *names: str) -> None:
    for name in names:
        sb.cli("down", name, check=False)


def test_of_two_ups_with_one_subnet_exactly_one_wins_in_either_order(switchboard, tmp_path):
    sb = switchboard
    one = _file(tmp_path, "sbt-race-one", "10.231.120.0/24")
    two = _file(tmp_path, "sbt-race-two", "10.231.120.0/24")
    try:
        for round_ in range(ROUNDS):
            files = (one, two) if round_ % 2 == 0 else (two, one)
            results = _race(sb, ["up", str(files[0])], ["up", str(files[1])])
            codes = sorted(code for code, _ in results)
            assert codes == [0, 2], results
            loser = next(out for code, out in results if code == 2)
            assert "overlaps subnet 10.231.120.0/24" in loser and "nothing was changed" in loser
            applied = _store(sb).applied()
            winners = {"sbt-race-one", "sbt-race-two"} & set(applied)
            assert len(winners) == 1, applied.keys()
            # one host leg holds an address in the subnet, not two
            assert len(_host_addresses("10.231.120.")) == 1
            [winner] = winners
            assert sb.status(winner)["state"] == "converged"
            _down(sb, winner)
            snapshot = _store(sb).snapshot()
            assert not {"sbt-race-one", "sbt-race-two"} & (set(snapshot.markers)
                                                           | set(snapshot.versions))
    finally:
        _down(sb, "sbt-race-one", "sbt-race-two")


def test_two_ups_without_a_conflict_both_win(switchboard, tmp_path):
    sb = switchboard
    one = _file(tmp_path, "sbt-race-a", "10.231.121.0/24", "api")
    two = _file(tmp_path, "sbt-race-b", "10.231.122.0/24", "api")
    try:
        for _ in range(2):
            results = _race(sb, ["up", str(one)], ["up", str(two)])
            assert [code for code, _ in results] == [0, 0], results
            assert {"sbt-race-a", "sbt-race-b"} <= set(_store(sb).applied())
            for name, ip_prefix in (("sbt-race-a", "10.231.121."), ("sbt-race-b", "10.231.122.")):
                [row] = sb.status(name)["containers"]
                assert row["ip"].startswith(ip_prefix)
                assert sh(f"ping -c 1 -W 1 {row['ip']}").returncode == 0
            _down(sb, "sbt-race-a", "sbt-race-b")
    finally:
        _down(sb, "sbt-race-a", "sbt-race-b")


def test_two_versions_of_one_topology_racing_leave_one_whole_version(switchboard, tmp_path):
    sb = switchboard
    name = "sbt-race-ver"
    v1 = _file(tmp_path, name, "10.231.123.0/24", "web")
    v2 = _file(tmp_path, name, "10.231.123.0/24", "api")
    try:
        for round_ in range(ROUNDS // 2):
            files = (v1, v2) if round_ % 2 == 0 else (v2, v1)
            results = _race(sb, ["up", str(files[0])], ["up", str(files[1])])
            assert any(code == 0 for code, _ in results), results
            for code, out in results:  # the one that lost says why, it never half-applies
                assert code == 0 or "replaced by another `switchboard up`" in out, results
            state = _store(sb).snapshot()
            assert not state.invalid
            stored = state.topologies[name]
            assert set(stored.topology.containers) in ({"web"}, {"api"})
            # exactly the committed version is left in KV, whole
            assert list(state.versions[name]) == [stored.digest]
            expected = topology_objects(stored.topology, stored.allocation)
            assert len(state.versions[name][stored.digest]) == len(expected) + 1  # + seal
            digest = stored.digest
            assert wait_until(lambda d=digest: sb.status(name)["state"] == "converged"
                              and sb.status(name)["digest"] == d, 30)
            namespaces = sh("ip netns list").stdout
            kept = next(iter(stored.topology.containers))
            gone = ({"web", "api"} - {kept}).pop()
            assert f"sb-{name}-{kept}" in namespaces and f"sb-{name}-{gone}" not in namespaces
    finally:
        _down(sb, name)


def test_down_racing_up_of_one_topology_leaves_it_wholly_up_or_wholly_gone(switchboard,
                                                                           tmp_path):
    sb = switchboard
    name = "sbt-race-down"
    path = _file(tmp_path, name, "10.231.124.0/24", "web")
    try:
        for round_ in range(ROUNDS // 2):
            sb.cli("up", str(path))
            edited = _file(tmp_path, name, "10.231.124.0/24", f"web{round_}")
            order = (["up", str(edited)], ["down", name])
            results = _race(sb, *(order if round_ % 2 == 0 else order[::-1]))
            state = _store(sb).snapshot()
            assert not state.invalid
            if name in state.topologies:  # wholly up: the edited version, realised
                assert set(state.topologies[name].topology.containers) == {f"web{round_}"}
                assert list(state.versions[name]) == [state.topologies[name].digest]
                assert wait_until(lambda: sb.status(name)["state"] == "converged", 30)
                namespaces = sh("ip netns list").stdout.split()
                assert f"sb-{name}-web{round_}" in namespaces
                assert f"sb-{name}-web" not in namespaces, namespaces
            else:  # wholly gone: no version in KV, no namespace left
                assert name not in state.versions
                assert wait_until(lambda: f"sb-{name}-" not in sh("ip netns list").stdout, 30)
            for code, out in results:
                assert code == 0 or "removed by `switchboard down`" in out \
                    or "replaced" in out, results
            _down(sb, name)
    finally:
        _down(sb, name)


def test_a_conflicting_pair_written_into_kv_is_realised_first_come(switchboard, tmp_path):
    """The daemon as the last line: a conflict that bypassed `up` (written straight into KV)
    is not plumbed twice; the later topology is reported as an error, and `up` says so."""
    sb = switchboard
    store = _store(sb)
    first = load_topology("name: sbt-kv-first\nnetworks:\n  lan: {subnet: 10.231.125.0/24}\n"
                          "containers:\n  web: {networks: [lan]}\n")
    second = load_topology("name: sbt-kv-second\nnetworks:\n  lan: {subnet: 10.231.125.0/25}"
                           "\ncontainers:\n  api: {networks: [lan]}\n")
    try:
        for topology in (first, second):  # no admission checks: as a hand-made write would
            state = store.snapshot()
            objects = topology_objects(topology, allocate(topology))
            digest = digest_of(objects)
            sealed = store.stage(state, topology.name, digest, objects)
            assert store.commit(state, topology.name, digest, "by hand", sealed)
        assert wait_until(lambda: sb.status("sbt-kv-second")["state"] == "error", 30)
        assert wait_until(lambda: sb.status("sbt-kv-first")["state"] == "converged", 30)
        error = sb.status("sbt-kv-second")["error"]
        assert "10.231.125.0/24" in error and "'sbt-kv-first'" in error
        assert len(_host_addresses("10.231.125.")) == 1
        assert "sb-sbt-kv-second-api" not in sh("ip netns list").stdout
        [row] = sb.status("sbt-kv-first")["containers"]
        assert sh(f"ping -c 1 -W 1 {row['ip']}").returncode == 0
        shown = sb.cli("status", "sbt-kv-second").stdout
        assert "error" in shown and "conflicts with a topology applied before it" in shown
        data = json.loads(sb.cli("status", "--json").stdout)
        assert {t["name"] for t in data["topologies"]} >= {"sbt-kv-first", "sbt-kv-second"}
        # taking the first down lets the daemon realise the second
        _down(sb, "sbt-kv-first")
        assert wait_until(lambda: sb.status("sbt-kv-second")["state"] == "converged", 30)
    finally:
        _down(sb, "sbt-kv-first", "sbt-kv-second")


def test_python_api_networks_created_at_once_get_different_free_subnets(switchboard,
                                                                         monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from switchboard.api import VirtualNetwork

    monkeypatch.setenv("SWITCHBOARD_ADMIT_PAUSE", PAUSE)  # both decide before either commits
    names = ("sbt-race-vnet1", "sbt-race-vnet2")
    with ThreadPoolExecutor(2) as pool:
        nets = list(pool.map(lambda n: VirtualNetwork(n, prefix=switchboard.prefix), names))
    try:
        assert nets[0].subnet != nets[1].subnet
        assert not nets[0].subnet.overlaps(nets[1].subnet)
        applied = _store(switchboard).applied()
        for net in nets:  # each choice is reserved in the desired state
            [stored] = applied[net.name].topology.networks.values()
            assert stored.subnet == net.subnet
    finally:
        for net in nets:
            net.delete()
