"""`up` waits for every host the placement uses, and names the one that did not converge."""

from __future__ import annotations

from typing import Any

import pytest

from sbcore.model import load_topology
from sbcore.state.store import Store
from switchboard import apply
from switchboard.apply import ApplyError, apply_topology

TOPOLOGY = load_topology("name: t\nnetworks: {lan: {subnet: 10.1.0.0/24}}\n"
                         "containers: {a: {networks: [lan]}, b: {networks: [lan]}}\n")


class FakeStore(Store):
    def __init__(self, reports: dict[str, dict[str, Any]]) -> None:
        super().__init__(None, "p")  # type: ignore[arg-type]
        self._reports = reports

    def reports(self, topology: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        return {(host, "t"): r for host, r in self._reports.items()}

    def marker(self, name: str) -> dict[str, Any] | None:
        return {"digest": "d1", "source": "f"}


def report(state: str, *containers: str, digest: str = "d1", error: str = "") -> dict:
    return {"digest": digest, "state": state, "error": error,
            "containers": [{"container": c, "state": "running"} for c in containers]}


DOWN: list[str] = []  # hosts the placed hosts' health says are down


@pytest.fixture(autouse=True)
def placed(monkeypatch):
    monkeypatch.setattr(apply, "admit", lambda store, topology, source, allow_unplaced:
                        (TOPOLOGY, "d1", {"a": "h1", "b": "h2"}))
    monkeypatch.setattr(apply, "_down_hosts", lambda store, placed: sorted(
        set(DOWN) & placed))
    DOWN.clear()


def test_up_does_not_wait_for_a_host_that_is_down_and_names_what_waits_for_it():
    DOWN.append("h2")
    store = FakeStore({"h1": report("converged", "a")})  # h2, dead, never reports
    digest, merged = apply_topology(store, TOPOLOGY, "f", timeout=5)
    assert [(r["container"], r["host"]) for r in merged["containers"]] == [("a", "h1")]
    assert merged["waiting"] == {"h2": ["b"]}


def test_up_with_every_placed_host_down_stores_and_returns_at_once():
    DOWN.extend(["h1", "h2"])
    digest, merged = apply_topology(FakeStore({}), TOPOLOGY, "f", timeout=5)
    assert merged == {"containers": [], "waiting": {"h1": ["a"], "h2": ["b"]}}


def test_up_returns_once_every_placed_host_converged_with_every_hosts_rows():
    store = FakeStore({"h1": report("converged", "a"), "h2": report("converged", "b"),
                       "h3": report("error", error="not mine")})
    seen: list[list[str]] = []
    digest, merged = apply_topology(store, TOPOLOGY, "f", timeout=1,
                                    progress=lambda reports, hosts: seen.append(hosts))
    assert digest == "d1"
    assert [(r["container"], r["host"]) for r in merged["containers"]] == [("a", "h1"),
                                                                           ("b", "h2")]
    assert seen and seen[0] == ["h1", "h2"]


def test_a_placed_host_that_never_reports_is_named():
    store = FakeStore({"h1": report("converged", "a"), "h2": report("converged", digest="d0")})
    with pytest.raises(ApplyError, match=r"no controller reported topology t from host h2 "
                       r"within 0 s; is `switchboard controller` running there"):
        apply_topology(store, TOPOLOGY, "f", timeout=0.3)


def test_a_placed_host_in_error_is_named_with_its_error():
    store = FakeStore({"h1": report("converged", "a"), "h2": report("error", error="boom")})
    with pytest.raises(ApplyError, match="did not converge on host h2: boom"):
        apply_topology(store, TOPOLOGY, "f", timeout=1)


def test_a_placed_host_still_pending_at_the_timeout_is_named():
    store = FakeStore({"h1": report("converged", "a"),
                       "h2": report("pending", error="waiting for bridge")})
    with pytest.raises(ApplyError, match=r"did not converge on host h2 within 0 s "
                       r"\(waiting for bridge\)"):
        apply_topology(store, TOPOLOGY, "f", timeout=0.3)


def test_the_placement_is_written_in_the_transaction_that_commits_the_version():
    class Txn:
        calls: list[list[dict]] = []

        def put(self, ops: list[dict]) -> dict:
            self.calls.append(ops)
            return {}

    class Client:
        txn = Txn()

    from sbcore.model.desired import DesiredState

    store = Store(Client(), "p")  # type: ignore[arg-type]
    assert store.commit(DesiredState(), "t", "d1", "f", 7, {"a": "h1"})
    [ops] = Txn.calls
    verbs = {(op["KV"]["Verb"], op["KV"]["Key"]) for op in ops}
    assert {("cas", "p/admission"), ("set", "p/topologies/t/applied"),
            ("set", "p/topologies/t/placement")} <= verbs
