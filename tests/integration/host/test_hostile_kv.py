"""Foreign and corrupted keys under the prefix, written to a real Consul agent the way anyone
who reaches it could: every CLI command still answers, `status` names each key it skipped,
and the real daemon keeps the good topology and sees later changes."""

from __future__ import annotations

import json
import os

import consul
import pytest

from tests.harness import Switchboard, sh, wait_until

pytestmark = pytest.mark.integration

GOOD = """
name: kvgood
networks:
  lan: {subnet: 10.97.1.0/24}
containers:
  a: {networks: [lan]}
"""

LATER = """
name: kvlater
networks:
  lan: {subnet: 10.97.2.0/24}
containers:
  b: {networks: [lan]}
"""


def _hostile(prefix: str) -> dict[str, bytes]:
    topo, status = f"{prefix}/topologies", f"{prefix}/status"
    return {
        f"{topo}/evil/x": b"x",  # the example
        f"{topo}/evil2": b"y",
        f"{topo}/broken/applied": b"x",
        f"{topo}/deep/applied": b"[" * 100_000,
        f"{topo}/typed/applied": b'["digest"]',
        f"{topo}/gone/applied": b'{"digest": "0123456789abcdef"}',
        f"{status}/test-host/forged": json.dumps({"state": "converged", "digest": "d",
                                                  "containers": 5}).encode(),
        f"{status}/nohost": b"[" * 100_000,
    }


def test_foreign_and_corrupted_keys_are_reported_and_nothing_else_changes(
    switchboard: Switchboard, tmp_path
) -> None:
    client = consul.Consul()
    hostile = _hostile(switchboard.prefix)
    switchboard.up(tmp_path, GOOD)
    try:
        for key, value in hostile.items():
            client.kv.put(key, value)
        for args in (["status"], ["status", "kvgood"], ["hosts"], ["services"],
                     ["trace", "a", "10.97.1.254", "--icmp"]):
            result = switchboard.cli(*args, check=False)
            assert "Traceback" not in result.stderr, (args, result.stderr)
            assert result.returncode == 0, (args, result.stdout, result.stderr)

        result = switchboard.cli("status")
        warned = " ".join(result.stderr.split())
        for key in hostile:
            assert f"warning: {key} skipped" in warned, key
        assert "kvgood" in result.stdout and "converged" in result.stdout

        data = json.loads(switchboard.cli("status", "--json").stdout)
        assert set(data["skipped"]) == set(hostile)
        assert [t["name"] for t in data["topologies"]] == ["kvgood"]

        # The daemon still sees later changes and keeps the good topology working.
        switchboard.up(tmp_path, LATER, "later.yaml")
        status = json.loads(switchboard.cli("status", "--json").stdout)
        ips = {r["container"]: r["ip"] for t in status["topologies"] for r in t["containers"]}
        assert sh(f"ping -c 1 -W 1 {ips['b']}").returncode == 0  # from the host
        assert sh(f"ping -c 1 -W 1 {ips['a']}").returncode == 0
        assert wait_until(lambda: "skipping " + f"{switchboard.prefix}/topologies/evil/x"
                          in switchboard.log.read_text(), 5)

        # `up` of a name whose keys are corrupted replaces them; `down` removes them.
        switchboard.cli("down", "broken")
        assert client.kv.get(f"{switchboard.prefix}/topologies/broken/applied")[1] is None
    finally:
        for key in hostile:
            client.kv.delete(key)
        for name in ("kvlater", "kvgood"):
            switchboard.cli("down", name, check=False)


def test_random_keys_written_to_a_real_agent_are_skipped_never_raised() -> None:
    """Hypothesis writes random keys and bytes under a private prefix of the real agent;
    reading them back through the client never raises and reports each unreadable key."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from sbcore.state.store import Store

    client = consul.Consul()
    prefix = f"sbfuzz-{os.getpid()}"
    store = Store(client, prefix)
    segment = st.text("abcxyz-_.0129", min_size=1, max_size=6) | st.sampled_from(
        ["applied", "placement", "versions", "sealed", "networks"])
    keys = st.lists(segment, min_size=1, max_size=4).map("/".join)
    values = st.binary(max_size=64) | st.sampled_from(
        [b"[" * 5000, b'{"digest": "x"}', b"null", b'{"state": 1}'])

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.dictionaries(keys, values, min_size=1, max_size=5))
    def read_back(written: dict[str, bytes]) -> None:
        client.kv.delete(f"{prefix}/", recurse=True)
        for key, value in written.items():
            client.kv.put(f"{prefix}/topologies/{key}", value)
            client.kv.put(f"{prefix}/status/{key}", value)
        _, state = store.read_topologies()
        skipped: dict[str, str] = {}
        store.reports(skipped=skipped)
        assert not state.topologies  # nothing random is a sealed, digest-checked version
        assert set(state.invalid) <= set(state.markers)

    try:
        read_back()
    finally:
        client.kv.delete(f"{prefix}/", recurse=True)
