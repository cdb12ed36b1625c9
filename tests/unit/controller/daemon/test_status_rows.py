"""The daemon's status rows: a container short of its plan is reported broken, with why."""

from __future__ import annotations

from controller.daemon.report import container_rows, data_path_problem
from plumbing.plan import Problems
from tests.unit.plumbing.test_plumbing_plan import make_plan, port


def ofports(plan, *missing: str) -> dict[str, int]:
    return {ep.port: n for n, ep in enumerate(plan.endpoints(), start=1)
            if ep.container not in missing}


def test_container_as_planned_is_ready_with_no_problem():
    plan = make_plan(containers={"a": None, "b": None})
    rows = container_rows(plan, ofports(plan), {}, Problems())
    assert [(r["container"], r["problem"]) for r in rows] == [("a", ""), ("b", "")]
    assert data_path_problem(plan, rows, Problems()) == ""


def test_unconfigured_interface_makes_its_row_broken_and_names_the_problem():
    plan = make_plan(containers={"a": None, "b": None})
    problems = Problems(ports={port(plan, "b"): "eth0: down, no address 10.60.0.11/24"})
    rows = container_rows(plan, ofports(plan), {}, problems)
    row_b = next(r for r in rows if r["container"] == "b")
    assert row_b["state"] == "broken"
    assert row_b["problem"] == "eth0: down, no address 10.60.0.11/24"
    summary = data_path_problem(plan, rows, problems)
    assert summary.startswith("1 of 2 containers not ready (b: eth0: down")
    assert "switchboard status" in summary


def test_port_without_ofport_has_no_flows_and_is_broken():
    plan = make_plan(containers={"a": None})
    (row,) = container_rows(plan, ofports(plan, "a"), {}, Problems())
    assert row["state"] == "broken" and "no OpenFlow port" in row["problem"]


def test_missing_namespace_and_host_leg_problems_reach_the_summary():
    plan = make_plan(containers={f"c{i}": None for i in range(6)})
    problems = Problems(containers={("t1", f"c{i}"): "namespace missing" for i in range(6)},
                        host_legs={("t1", "lan"): "sbh…: no address 10.60.0.254/24"})
    rows = container_rows(plan, ofports(plan), {}, problems)
    assert all(r["state"] == "broken" for r in rows)
    summary = data_path_problem(plan, rows, problems)
    assert "6 of 6 containers not ready (c0: namespace missing; also c1, c2, c3 …)" in summary
    assert "host address on lan: sbh…: no address" in summary
