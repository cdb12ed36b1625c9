"""Restart policies and backoff (pure), the plan holding an exited command back, and what
the failover takes out of a VIP's passing set."""

from __future__ import annotations

import time
from ipaddress import IPv4Address

import pytest

from controller.daemon.exits import ExitFailover
from controller.daemon.report import container_rows
from discovery.instances import desired_instances
from plumbing import restart
from plumbing.plan import plan_plumbing
from plumbing.restart import History
from sbcore.model import load_topology
from sbcore.plan.hostplan import plan_topology

T0 = 1_000_000.0


def crash(history: History, pid: int, at: float, status: int = 1, ran: float = 0.1
          ) -> History:
    """Start at ``at``, exit ``ran`` seconds later."""
    history = restart.started(history, at, restart=history.run is not None)
    return restart.exited(history, pid, status, at + ran)


@pytest.mark.parametrize(("policy", "status", "again"), [
    ("always", 0, True), ("always", 1, True), ("always", None, True),
    ("on-failure", 0, False), ("on-failure", 1, True), ("on-failure", 137, True),
    ("on-failure", None, True), ("never", 0, False), ("never", 1, False),
])
def test_policy_decides_whether_an_exit_is_followed_by_a_start(policy, status, again):
    assert restart.restarts_after(policy, status) is again


def test_quick_exits_in_a_row_wait_1_2_4_seconds_up_to_a_cap():
    assert [restart.delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 32, 60]


def test_a_long_run_restarts_at_once_and_resets_the_count():
    history = History()
    for pid in range(3):
        history = crash(history, pid, T0 + pid * 100)
    assert history.quick_exits == 3
    history = crash(history, 10, T0 + 1000, ran=restart.QUICK + 1)
    assert history.quick_exits == 0
    verdict = restart.verdict("always", history, False, T0 + 1000 + restart.QUICK + 1)
    assert verdict.state == "backoff" and verdict.start_at == history.exited_at


def test_the_same_exit_seen_twice_counts_once():
    history = crash(History(), 7, T0)
    assert restart.exited(history, 7, 1, T0 + 50) == history


def test_a_crash_loop_is_named_while_waiting_and_while_its_short_runs_last():
    history = History()
    for pid in range(3):
        history = crash(history, pid, T0 + pid * 10)
    waiting = restart.verdict("on-failure", history, False, history.exited_at)
    assert waiting.state == "crash-looping"
    assert waiting.start_at == history.exited_at + 4
    note = restart.describe(history, waiting, history.exited_at)
    assert "last exit 1" in note and "3 quick exits in a row" in note and "backoff 4 s" in note
    running = restart.started(history, waiting.start_at, restart=True)
    assert restart.verdict("on-failure", running, True, waiting.start_at + 1).state == \
        "crash-looping"
    assert restart.verdict("on-failure", running, True,
                           waiting.start_at + restart.QUICK).state == "running"
    assert running.restarts == history.restarts + 1


def test_a_command_the_policy_does_not_restart_is_exited_or_failed_with_its_status():
    done = crash(History(), 1, T0, status=0)
    assert restart.verdict("on-failure", done, False, T0 + 5) == restart.Verdict("exited")
    killed = crash(History(), 1, T0, status=137)
    verdict = restart.verdict("never", killed, False, T0 + 5)
    assert verdict == restart.Verdict("failed")
    assert "last exit 137 (SIGKILL)" in restart.describe(killed, verdict, T0 + 5)


def test_a_new_start_forgets_the_history_of_an_older_command():
    history = crash(crash(History(), 1, T0), 2, T0 + 5)
    assert restart.started(history, T0 + 60, restart=False) == History(started_at=T0 + 60)


def test_an_unreadable_history_is_a_fresh_one():
    assert History.from_json([1, 2]) == History()
    assert History.from_json({"nope": 1}) == History()


# --- the plan ------------------------------------------------------------------------------

TOPO = """
name: t
networks: {n: {subnet: 10.9.0.0/24}}
containers:
  a: {networks: [n], command: "exit 1", restart: on-failure}
  b: {networks: [n], command: "sleep 1"}
"""


def _plans(text: str = TOPO):
    return [plan_topology(load_topology(text))]


def test_a_held_command_is_neither_stopped_nor_started_until_due():
    plans = _plans()
    ns = {c.netns for c in plans[0].containers}
    running = {"t/a": False, "t/b": True}
    commands = {"t/a": "exit 1", "t/b": "sleep 1"}
    held = plan_plumbing(plans, {}, ns, running, observed_commands=commands, hold={"t/a"})
    assert [c.key for c in held.start_commands if c.key == "t/a"] == []
    assert "t/a" not in held.stop_commands
    due = plan_plumbing(plans, {}, ns, running, observed_commands=commands)
    assert "t/a" in [c.key for c in due.start_commands]


def test_a_changed_command_starts_even_when_held():
    plans = _plans()
    ns = {c.netns for c in plans[0].containers}
    plan = plan_plumbing(plans, {}, ns, {"t/a": False}, observed_commands={"t/a": "exit 2"},
                         hold={"t/a"})
    assert "t/a" in [c.key for c in plan.start_commands]


def test_the_restart_policy_reaches_the_container_plan_and_defaults_to_always():
    containers = {c.name: c for c in _plans()[0].containers}
    assert containers["a"].restart == "on-failure" and containers["b"].restart == "always"


def test_status_rows_carry_state_restarts_exit_status_and_a_note_with_the_log():
    plan = _plans()[0]
    ep = next(e for e in plan.endpoints() if e.container == "a")
    observed = {ep.port: {"netns_exists": True, "running": False, "command": {
        "state": "crash-looping", "restarts": 4, "exit_status": 1, "restart": "on-failure",
        "note": "last exit 1; 4 quick exits in a row", "log": "/x/a.log"}}}
    row = next(r for r in container_rows(plan, {ep.port: 5}, observed) if r["container"] == "a")
    assert (row["state"], row["restarts"], row["exit_status"]) == ("crash-looping", 4, 1)
    assert row["note"].endswith("log /x/a.log") and row["problem"] == ""


# --- the failover's passing sets -------------------------------------------------------------

VIP = """
name: v
networks: {n: {subnet: 10.9.1.0/24}}
containers:
  i1: {networks: {n: {ip: 10.9.1.11}}, command: x, services: [{name: s, port: 8080}]}
  i2: {networks: {n: {ip: 10.9.1.12}}, command: x, services: [{name: s, port: 8080}]}
services:
  s: {vip: 10.9.1.100, port: 80}
"""


class _Agent:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.service = self
        self.check = self
        self.log: list[str] = []

    def deregister(self, check_id: str) -> None:
        self.log.append(f"deregister {check_id}")

    def maintenance(self, service_id: str, enable: bool, reason: str | None = None) -> None:
        self.calls.append((service_id, enable))
        self.log.append(f"maintenance {service_id} {enable}")

    def checks(self) -> dict:
        return {}


class _Client:
    def __init__(self) -> None:
        self.agent = _Agent()


def test_an_exited_instance_leaves_the_passing_set_at_once_even_before_consul_answers():
    plans = _plans(VIP)
    wakes = []
    failover = ExitFailover(_Client(), lambda: wakes.append(1))
    failover.exited("v/i1")
    assert wakes == [1]
    assert failover.adjust(plans, {})[("v", "s")] == frozenset({"i2"})
    assert failover.adjust(plans, {("v", "s"): frozenset({"i1", "i2"})})[("v", "s")] == \
        frozenset({"i2"})
    backends = plans[0].services[0].active_backends(failover.adjust(plans, {}))
    assert [b.ip for b in backends] == [IPv4Address("10.9.1.12")]


def test_an_instance_running_again_returns_once_its_check_passes():
    plans = _plans(VIP)
    client = _Client()
    failover = ExitFailover(client, lambda: None, probe=lambda check: True)
    topo = load_topology(VIP)
    failover.know(desired_instances(topo, plans[0].allocation))
    failover.exited("v/i1")
    assert [enable for _, enable in client.agent.calls] == [True]
    failover.settle({"v/i1": True, "v/i2": True})
    deadline = time.monotonic() + 2
    while failover.down() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert failover.down() == set()
    assert [enable for _, enable in client.agent.calls] == [True, False]
    assert failover.adjust(plans, {}) == {}


def test_a_check_that_passed_from_the_host_is_made_passing_in_consul_under_maintenance():
    text = VIP.replace("services: [{name: s, port: 8080}]}",
                       "services: [{name: s, port: 8080, check: {tcp: 8080}}]}", 1)
    plans = _plans(text)
    client = _Client()
    registered = []

    def register(inst, passing):
        registered.append((inst.id, passing))
        client.agent.log.append(f"register {inst.id} {passing}")

    failover = ExitFailover(client, lambda: None, probe=lambda check: True, register=register)
    failover.know(desired_instances(load_topology(text), plans[0].allocation))
    failover.exited("v/i1")
    failover.settle({"v/i1": True, "v/i2": True})
    deadline = time.monotonic() + 2
    while failover.down() and time.monotonic() < deadline:
        time.sleep(0.01)
    sid = registered[0][0]
    assert registered == [(sid, True)]
    assert client.agent.log == [f"maintenance {sid} True", f"deregister service:{sid}",
                                f"register {sid} True", f"maintenance {sid} False"]


def test_plan_shows_a_changed_restart_policy_and_restarts_nothing():
    from sbcore.plan.changes import diff, render
    from tests.unit.sbcore.plan.test_changes import side

    before = side(TOPO)
    after = side(TOPO.replace('command: "sleep 1"}', 'command: "sleep 1", restart: never}'),
                 before)
    lines = render(diff(before, after))
    assert '      restart: "never" (new)' in lines
    assert not any(line.startswith("containers that restart") for line in lines)
