"""Events: what two consecutive reports say happened, the per-host ring in Consul KV (a fake
transaction API), and a writer that never blocks its callers."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from controller.daemon import events as cev
from sbcore.state import events as ev


def row(container: str, state: str = "running", restarts: int = 0, **extra: Any) -> dict:
    return {"container": container, "state": state, "restarts": restarts, **extra}


def report(*rows: dict, state: str = "converged", backends: tuple[str, ...] = (),
           error: str = "") -> dict:
    return {"state": state, "error": error, "containers": list(rows),
            "services": [{"name": "api", "backends": [{"container": c} for c in backends]}]}


def kinds(events: list[ev.Event]) -> list[tuple[str, str]]:
    return [(e.kind, e.container) for e in events]


def test_identical_reports_say_nothing_happened() -> None:
    same = report(row("a"), row("b"), backends=("b",))
    assert ev.reports_events("h1", {"t": same}, {"t": dict(same)}, 1.0) == []


def test_a_new_topology_starts_its_live_containers_and_adds_its_backends() -> None:
    after = report(row("a"), row("b", "missing"), row("api-1"), backends=("api-1", "elsewhere"))
    found = ev.report_events("h1", "t", None, after, 5.0)
    assert kinds(found) == [("container.started", "a"), ("container.started", "api-1"),
                            ("vip.backend_added", "api-1")]  # not another host's backend
    assert all(e.host == "h1" and e.topology == "t" and e.time == 5.0 for e in found)


def test_a_higher_restart_count_is_a_restart_with_its_exit_status() -> None:
    before = report(row("a", restarts=0))
    after = report(row("a", restarts=1, exit_status=137, restart="always"))
    (event,) = ev.report_events("h1", "t", before, after, 1.0)
    assert event.kind == "container.restarted"
    assert event.details == {"restarts": 1, "exit_status": 137}
    assert "137" in event.message and "always" in event.message


def test_a_live_container_that_dies_exited_and_one_that_comes_back_started() -> None:
    alive, dead = report(row("a")), report(row("a", "failed", exit_status=1, note="gave up"))
    assert kinds(ev.report_events("h", "t", alive, dead, 1)) == [("container.exited", "a")]
    assert kinds(ev.report_events("h", "t", dead, alive, 2)) == [("container.started", "a")]


def test_a_broken_port_is_neither_a_stop_nor_a_start() -> None:
    alive, broken = report(row("a")), report(row("a", "broken"))
    assert ev.report_events("h", "t", alive, broken, 1) == []
    assert ev.report_events("h", "t", broken, alive, 2) == []


def test_a_container_gone_from_the_report_stopped_and_left_its_vip() -> None:
    before = report(row("a"), row("api-1"), backends=("api-1",))
    found = ev.report_events("h1", "t", before, None, 1.0)
    assert kinds(found) == [("container.stopped", "a"), ("container.stopped", "api-1"),
                            ("vip.backend_removed", "api-1")]


def test_a_backend_that_fails_its_check_leaves_the_vip() -> None:
    before = report(row("api-1"), row("api-2"), backends=("api-1", "api-2"))
    after = report(row("api-1"), row("api-2"), backends=("api-2",))
    (event,) = ev.report_events("h1", "t", before, after, 1.0)
    assert (event.kind, event.container, event.details) == (
        "vip.backend_removed", "api-1", {"service": "api"})


def test_a_topology_turning_error_is_a_failed_reconcile_once_then_recovered() -> None:
    ok, bad = report(row("a")), report(row("a"), state="error", error="plumbing failed: x")
    (failed,) = ev.report_events("h", "t", ok, bad, 1)
    assert failed.kind == "reconcile.failed" and failed.message == "plumbing failed: x"
    worse = report(row("a"), state="error", error="plumbing failed: y")
    assert ev.report_events("h", "t", bad, worse, 2) == []
    assert kinds(ev.report_events("h", "t", worse, ok, 3)) == [("reconcile.recovered", "")]


def test_host_changes_are_up_and_down_and_a_new_ready_host_is_up() -> None:
    found = ev.host_events({"h1": True, "h2": True, "h3": False},
                           {"h1": True, "h2": False, "h3": True, "h4": True}, "h1", 1.0)
    assert [(e.kind, e.details["host"]) for e in found] == [
        ("host.down", "h2"), ("host.up", "h3"), ("host.up", "h4")]
    assert all(e.host == "h1" for e in found)


def test_instance_statuses_take_the_worst_check_and_only_this_hosts_instances() -> None:
    services = {"sb.t.api-1.api": {}, "sb.t.web.web": {}, "sb.other.x.api": {},
                "switchboard-host": {}}
    checks = [{"ServiceID": "sb.t.api-1.api", "Status": "passing"},
              {"ServiceID": "sb.t.api-1.api", "Status": "critical"},
              {"ServiceID": "sb.other.x.api", "Status": "critical"},
              {"ServiceID": "", "CheckID": "serfHealth", "Status": "passing"}]
    found = cev.instance_statuses(checks, services, {("t", "api-1"), ("t", "web")})
    assert found == {("t", "api-1", "api"): "critical", ("t", "web", "web"): "passing"}


def test_health_events_name_the_instance_whose_status_changed() -> None:
    before = {("t", "api-1", "api"): "critical", ("t", "api-2", "api"): "passing"}
    after = {("t", "api-1", "api"): "passing", ("t", "api-2", "api"): "passing"}
    (event,) = ev.health_events("h1", before, after, 1.0)
    assert (event.kind, event.topology, event.container) == ("instance.passing", "t", "api-1")


def test_events_read_back_in_time_order_and_foreign_values_are_skipped() -> None:
    later = ev.Event("container.started", "started", "h2", "t", "b", 20.0)
    earlier = ev.Event("container.stopped", "stopped", "h1", "t", "a", 10.0)
    entries = [{"Key": "p/events/h2/1", "Value": ev.encode(later)},
               {"Key": "p/events/h1/9", "Value": ev.encode(earlier)},
               {"Key": "p/events/h1/x", "Value": b"not json"},
               {"Key": "p/events/h1/y", "Value": None}]
    assert [e for _, e in ev.ordered(entries)] == [earlier, later]
    assert "t/a" in ev.line(earlier) and "container.stopped" in ev.line(earlier)


def _readable(value: bytes) -> bool:
    """Whether ``value`` is an event, by the format's rules: a JSON object with a kind, a
    message and a time a clock gives (seconds since the epoch)."""
    try:
        data = json.loads(value)
        return "kind" in data and "message" in data and 0 <= float(data["time"]) < 1e11
    except (ValueError, KeyError, TypeError, IndexError):
        return False


@settings(max_examples=300, deadline=None)
@example(b'{"kind": "k", "message": "m", "time": 5}')
@example(b'{"kind": "k", "message": "m", "time": 1e300}')  # no date: localtime overflows
@example(b'{"kind": "k", "message": "m", "time": NaN, "details": [1]}')
@given(st.one_of(st.binary(), st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(
        st.sampled_from(["kind", "message", "time", "host", "details", "x"]), inner),
).map(lambda v: json.dumps(v).encode())))
def test_any_value_under_the_events_prefix_is_read_or_skipped_never_raises(value) -> None:
    found = ev.ordered([{"Key": "p/events/h/1", "Value": value}])
    assert len(found) == int(_readable(value)), value
    for _, event in found:
        text = ev.line(event)
        assert event.kind in text and event.message in text


def test_event_keys_sort_by_time_within_a_host() -> None:
    keys = [ev.event_key("p", "h1", t, s) for t, s in ((10**18, 5), (2 * 10**17, 9), (10**18, 6))]
    assert sorted(keys) == [keys[1], keys[0], keys[2]]
    assert keys[0].startswith("p/events/h1/")


# --------------------------------------------------------------------------- the writer


class FakeKV:
    """Consul's KV get (keys) and txn, in memory; ``down`` makes every call fail."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.txns: list[int] = []
        self.down = False
        self.kv, self.txn = self, self

    def get(self, key: str, keys: bool = False, recurse: bool = False, **_: Any) -> Any:
        if self.down:
            raise ConnectionError("agent down")
        found = sorted(k for k in self.data if k.startswith(key))
        if keys:
            return 1, found or None
        return 1, [{"Key": k, "Value": self.data[k]} for k in found] or None

    def put(self, ops: list[dict]) -> dict:
        if self.down:
            raise ConnectionError("agent down")
        assert len(ops) <= 64, "Consul refuses transactions of more than 64 operations"
        self.txns.append(len(ops))
        for op in ops:
            kv = op["KV"]
            if kv["Verb"] == "set":
                self.data[kv["Key"]] = base64.b64decode(kv["Value"])
            elif kv["Verb"] == "delete":
                self.data.pop(kv["Key"], None)
        return {"Results": []}


class FakeStore:
    def __init__(self, client: FakeKV) -> None:
        self.client, self.prefix = client, "p"

    def status_key(self, host: str, topology: str) -> str:
        return f"p/status/{host}/{topology}"


def writer(kv: FakeKV, keep: int = 5) -> cev.EventLog:
    log = cev.EventLog(FakeStore(kv), "h1", keep=keep)  # type: ignore[arg-type]
    log.start()
    return log


def stored(kv: FakeKV) -> list[ev.Event]:
    return [e for _, e in ev.ordered({"Key": k, "Value": v} for k, v in kv.data.items()
                                     if k.startswith("p/events/"))]


def test_the_ring_keeps_the_latest_events_of_this_host_only() -> None:
    kv = FakeKV()
    kv.data["p/events/h2/00000000000000000001-000000"] = ev.encode(
        ev.Event("host.down", "h3 down", "h2", time=0.5))
    log = writer(kv, keep=5)
    try:
        for i in range(80):  # more than one transaction's worth
            log.emit("container.started", f"n{i}", "t", f"c{i}")
        assert log.flush()
    finally:
        log.stop()
    mine = [e for e in stored(kv) if e.host == "h1"]
    assert [e.message for e in mine] == [f"n{i}" for i in range(75, 80)]
    assert [e.host for e in stored(kv)].count("h2") == 1  # another host's ring is left alone
    assert log.written == 80 and log.dropped == 0


class SilentKV(FakeKV):
    """A Consul agent that does not answer until ``answer`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.asked, self.answer = threading.Event(), threading.Event()

    def get(self, key: str, keys: bool = False, recurse: bool = False, **_: Any) -> Any:
        self.asked.set()
        self.answer.wait()
        return super().get(key, keys, recurse)

    def put(self, ops: list[dict]) -> dict:
        self.asked.set()
        self.answer.wait()
        return super().put(ops)


def test_emit_never_waits_for_consul_and_the_queue_is_written_when_it_answers() -> None:
    kv = SilentKV()
    log = writer(kv)
    try:
        assert kv.asked.wait(10)  # the writer thread is stuck in a call to Consul
        emitter = threading.Thread(target=lambda: [log.emit("container.started", f"n{i}")
                                                   for i in range(3)])
        emitter.start()
        emitter.join(10)
        assert not emitter.is_alive(), "emit waited for Consul"
        assert log.pending() == 3 and stored(kv) == []
        kv.answer.set()
        assert log.flush(10)
    finally:
        kv.answer.set()
        log.stop()
    assert [e.message for e in stored(kv)] == ["n0", "n1", "n2"]


def test_the_queue_is_bounded_and_counts_what_it_drops(monkeypatch) -> None:
    monkeypatch.setattr(cev, "QUEUE_MAX", 4)
    log = cev.EventLog(FakeStore(FakeKV()), "h1")  # type: ignore[arg-type]  # not started
    for i in range(10):
        log.emit("container.started", f"n{i}")
    assert log.pending() == 4 and log.dropped == 6


def test_a_restarted_daemon_compares_with_the_reports_it_left_behind() -> None:
    kv = FakeKV()
    kv.data["p/status/h1/t"] = json.dumps(report(row("a"), row("b"))).encode()
    log = writer(kv)
    try:
        log.observe({"t": report(row("a"))})  # b went while no daemon ran
        assert log.flush()
        deadline = time.monotonic() + 5
        while not stored(kv) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        log.stop()
    assert kinds(stored(kv)) == [("container.stopped", "b")]


def test_a_new_decider_reports_a_host_that_is_down_when_it_takes_over() -> None:
    log = cev.EventLog(FakeStore(FakeKV()), "h1")  # type: ignore[arg-type]
    log.hosts({"h1": True, "h2": False})
    log.hosts({"h1": True, "h2": False})  # a second later: nothing new
    assert [(e.kind, e.details["host"]) for e in log._queue] == [("host.down", "h2")]
