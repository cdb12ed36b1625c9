"""`status` rows after hosts fail: old reports of moved containers hidden, down hosts named."""

from __future__ import annotations

from switchboard.cli.statusview import host_states, merged_rows


def row(container: str, ip: str, state: str = "running") -> dict:
    return {"container": container, "network": "lan", "ip": ip, "state": state, "problem": ""}


REPORTS = {
    "h1": {"digest": "d1", "state": "converged", "containers": [row("a", "10.0.0.2")]},
    "h2": {"digest": "d1", "state": "converged",
           "containers": [row("b", "10.0.0.3"), row("c", "10.0.0.4")]},
    "h3": {"digest": "d1", "state": "converged", "containers": [row("b", "10.0.0.3")]},
}


def test_a_moved_container_shows_once_from_its_new_host():
    rows = merged_rows(REPORTS, {"a": "h1", "b": "h3", "c": "h2"})
    assert [(r["container"], r["host"]) for r in rows] == [("a", "h1"), ("b", "h3"), ("c", "h2")]


def test_containers_on_a_down_host_show_host_down_and_whether_they_will_move():
    rows = merged_rows(REPORTS, {"a": "h1", "b": "h2", "c": "h2"},
                       {"h2": "its Consul agent is not alive"}, frozenset({"c"}))
    by_name = {r["container"]: r for r in rows}
    assert by_name["a"]["state"] == "running"
    assert by_name["b"]["state"] == by_name["c"]["state"] == "host down"
    assert by_name["b"]["ip"] == "10.0.0.3"  # the last report still tells its address
    assert "moves to a ready host" in by_name["b"]["problem"]
    assert "names its host" in by_name["c"]["problem"]
    assert "its Consul agent is not alive" in by_name["c"]["problem"]


def test_a_placed_container_no_host_reports_shows_not_reported():
    rows = merged_rows({}, {"a": "h1"})
    assert [(r["container"], r["state"]) for r in rows] == [("a", "not reported")]


def test_unplaced_containers_keep_every_reported_row():
    assert len(merged_rows(REPORTS, {})) == 4


def test_host_states_say_down_instead_of_a_dead_hosts_last_word():
    states = host_states(REPORTS, "d1", {"h2": "gone"})
    assert states == ["h1: converged", "h2: down", "h3: converged"]
    assert host_states({"h1": {"digest": "old", "state": "pending"}}, "d1", {}) == [
        "h1: pending (stale)"]
