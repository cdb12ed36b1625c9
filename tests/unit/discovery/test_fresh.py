"""Instances seen answering are in the daemon's DNS answers until Consul has them, and only
then; probing never waits for other instances' registrations."""

from __future__ import annotations

import threading
import time
from typing import Any

import dns.message
import dns.rcode
import pytest

from discovery.dnsproxy import DnsProxy
from discovery.fresh import FreshInstances, health_entry, with_fresh
from discovery.instances import CheckSpec, Instance, topology_meta
from discovery.lookup import srv_endpoints
from discovery.plan import SyncPlan
from discovery.readiness import register_when_ready
from discovery.scope import Scope
from discovery.sync import ServiceSync, SyncError


def inst(container: str, topology: str = "shop", name: str = "api", check: bool = True,
         address: str | None = None) -> Instance:
    address = address or f"10.1.0.{len(container) + 1}"
    return Instance(id=f"sb.{topology}.{container}.{name}", name=name, address=address,
                    port=8080, tags=("v1", f"topology-{topology}"),
                    meta=tuple(topology_meta(topology, container).items()),
                    check=CheckSpec("tcp", f"{address}:8080", "1s") if check else None)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- the set


def test_a_fresh_instance_is_answered_until_linger_after_its_registration():
    clock = Clock()
    fresh = FreshInstances(linger=1.0, clock=clock)
    a = inst("a")
    fresh.add(a)
    clock.now += 30  # still waiting for the agent: still answered
    assert fresh.of("shop", "API") == [a]
    fresh.registered(a.id)
    clock.now += 0.9
    assert fresh.of("shop", "api") == [a]
    clock.now += 0.2
    assert fresh.of("shop", "api") == []


def test_only_the_asking_topologys_instances_of_that_service_are_fresh():
    fresh = FreshInstances()
    mine, theirs, other = inst("a"), inst("a", topology="blog"), inst("b", name="db")
    for i in (mine, theirs, other):
        fresh.add(i)
    assert fresh.of("shop", "api") == [mine]


def test_a_failed_or_deregistered_instance_and_a_down_container_are_not_answered():
    down: set[str] = set()
    fresh = FreshInstances(down=lambda: down)
    a, b, c = inst("a"), inst("bb"), inst("ccc")
    for i in (a, b, c):
        fresh.add(i)
    fresh.drop(a.id)
    down.add("shop/bb")
    assert fresh.of("shop", "api") == [c]


def test_consuls_entry_wins_over_a_fresh_one_in_any_state():
    a, b = inst("a"), inst("bb")
    critical = health_entry(a, "dc2")
    critical["Checks"][0]["Status"] = "critical"
    merged = with_fresh([critical], [a, b])
    assert [e["Service"]["ID"] for e in merged] == [a.id, b.id]
    assert merged[0]["Checks"][0]["Status"] == "critical"
    assert merged[1]["Node"]["Datacenter"] == "dc2"  # the datacenter Consul answers for


# --------------------------------------------------------------------------- DNS answers


def proxy(entries: list[dict[str, Any]], fresh: FreshInstances) -> DnsProxy:
    dns_proxy = DnsProxy(health=lambda service, dc: entries)
    dns_proxy.fresh = fresh
    dns_proxy._scopes = {"10.1.255.254": Scope("shop")}  # what listen() would set
    return dns_proxy


def srv(dns_proxy: DnsProxy, name: str) -> dns.message.Message | None:
    wire = dns_proxy.answer(dns.message.make_query(name, "SRV"), "10.1.255.254")
    return None if wire is None else dns.message.from_wire(wire)


def test_a_name_with_a_fresh_instance_is_answered_with_it_and_consuls_instances():
    registered, new = inst("a"), inst("bb")
    fresh = FreshInstances()
    fresh.add(new)
    msg = srv(proxy([health_entry(registered)], fresh), "api.service.consul")
    assert msg is not None
    assert sorted(srv_endpoints(msg)) == [(registered.address, 8080), (new.address, 8080)]
    tagged = srv(proxy([], fresh), "v1.api.service.consul")
    assert tagged is not None and srv_endpoints(tagged) == [(new.address, 8080)]
    other = srv(proxy([], fresh), "v2.api.service.consul")
    assert other is not None and other.rcode() == dns.rcode.NXDOMAIN


def test_without_fresh_instances_the_name_goes_to_consuls_dns_as_before():
    fresh = FreshInstances()
    fresh.add(inst("a", name="db"))
    assert srv(proxy([], fresh), "api.service.consul") is None  # forwarded
    fresh.add(inst("a"))
    assert srv(proxy([], fresh), "api.service.dc1.consul") is None  # another datacenter's


# --------------------------------------------------------------------------- registering


class SlowAgent:
    """A Consul agent that takes one registration at a time and notes what DNS answered."""

    def __init__(self, fresh: FreshInstances, delay: float = 0.0) -> None:
        self.agent, self.service = self, self
        self.fresh, self.delay = fresh, delay
        self.lock = threading.Lock()
        self.seen_fresh: dict[str, bool] = {}
        self.fail: set[str] = set()

    def register(self, name: str, service_id: str, **_: Any) -> None:
        with self.lock:
            self.seen_fresh[service_id] = any(
                i.id == service_id for i in self.fresh.of("shop", name))
            time.sleep(self.delay)
            if service_id in self.fail:
                raise OSError("agent refused")

    def deregister(self, service_id: str) -> None:
        pass


def test_an_instance_is_fresh_from_its_passing_probe_until_the_agent_has_it():
    fresh = FreshInstances()
    agent = SlowAgent(fresh)
    sync = ServiceSync(agent, fresh)  # type: ignore[arg-type]
    plain, ok, bad, refused = inst("p", check=False), inst("ok"), inst("bad"), inst("nope")
    agent.fail.add(refused.id)

    def ready(instances: list[Instance], register: Any) -> None:
        register(ok, True)
        register(bad, False)
        register(refused, True)

    with pytest.raises(SyncError) as refusal:
        sync.apply(SyncPlan([plain, ok, bad, refused], []), ready)
    assert list(refusal.value.errors) == [refused.id]  # the others were registered
    assert agent.seen_fresh == {plain.id: True, ok.id: True, bad.id: False, refused.id: True}
    assert {i.id for i in fresh.of("shop", "api")} == {plain.id, ok.id}  # until linger
    sync.apply(SyncPlan([], [ok.id]))
    assert {i.id for i in fresh.of("shop", "api")} == {plain.id}


def test_without_a_readiness_gate_nothing_is_announced_early():
    fresh = FreshInstances()
    agent = SlowAgent(fresh)
    ServiceSync(agent, fresh).apply(SyncPlan([inst("ok")], []))  # type: ignore[arg-type]
    assert agent.seen_fresh == {inst("ok").id: False}


def test_probing_never_waits_for_other_instances_registrations():
    """The agent takes no registration until every instance was probed: probing that
    waited for registrations would never finish."""
    instances = [inst(f"c{i}", address=f"10.2.0.{i}") for i in range(40)]
    probed: set[str] = set()
    all_probed = threading.Event()
    fresh = FreshInstances()

    class Agent(SlowAgent):
        def register(self, name: str, service_id: str, **kwargs: Any) -> None:
            assert all_probed.wait(5), f"only {len(probed)} of 40 probed while registering"
            super().register(name, service_id, **kwargs)

    def probe(spec: CheckSpec) -> bool:
        probed.add(spec.target)
        if len(probed) == len(instances):
            all_probed.set()
        return True

    agent = Agent(fresh)
    ServiceSync(agent, fresh).apply(  # type: ignore[arg-type]
        SyncPlan(instances, []), lambda gated, register: register_when_ready(
            gated, register, probe=probe))
    assert agent.seen_fresh == {i.id: True for i in instances}


def test_a_bug_in_a_queued_registration_is_not_swallowed():
    fresh = FreshInstances()

    class Broken(SlowAgent):
        def register(self, name: str, service_id: str, **kwargs: Any) -> None:
            raise ValueError("a bug")

    sync = ServiceSync(Broken(fresh), fresh)  # type: ignore[arg-type]
    try:
        sync.apply(SyncPlan([inst("ok")], []), lambda gated, register: register(gated[0], True))
    except ValueError as exc:
        assert str(exc) == "a bug"
    else:
        raise AssertionError("the registration's error was swallowed")
    assert fresh.of("shop", "api") == []  # not answered: Consul will not have it
