"""A name Consul's catalog does not hold is answered without reading the health API, and at
once on the listener; checks tried while the flows go in publish nothing before them."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import dns.message
import dns.rcode

from discovery.catalognames import CatalogNames
from discovery.dnsproxy import DnsProxy
from discovery.fresh import FreshInstances, health_entry
from discovery.instances import CheckSpec, Instance, topology_meta
from discovery.lookup import srv_endpoints
from discovery.readiness import EarlyChecks, register_when_ready
from discovery.scope import Scope
from tests.harness import wait_until

ASKED_ON = "10.1.255.254"


def inst(container: str, name: str = "api", address: str = "10.1.0.5") -> Instance:
    return Instance(id=f"sb.shop.{container}.{name}", name=name, address=address, port=8080,
                    meta=tuple(topology_meta("shop", container).items()),
                    check=CheckSpec("tcp", f"{address}:8080", "1s"))


class Catalog:
    """Consul's ``/v1/catalog/services`` as a blocking query: answers at once when the index
    moved, otherwise waits (briefly) for a change."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.index = 1
        self.reads = 0
        self.fail = False
        self.changed = threading.Condition()

    def set(self, names: list[str]) -> None:
        with self.changed:
            self.names, self.index = list(names), self.index + 1
            self.changed.notify_all()

    def __call__(self, index: str | None, wait: str) -> tuple[str, Mapping[str, Any]]:
        with self.changed:
            self.reads += 1
            if index == str(self.index):
                self.changed.wait(0.2)
            if self.fail:
                raise OSError("connection refused")
            return str(self.index), {name: [] for name in self.names}


def follow(catalog: Catalog) -> CatalogNames:
    names = CatalogNames(catalog, min_interval=0.0)
    names.start()
    assert wait_for(lambda: not names.lacks("consul") and names.lacks("nothing"))
    return names


def wait_for(condition: Any, timeout: float = 2.0) -> bool:
    return wait_until(condition, timeout, interval=0.005)


# --------------------------------------------------------------------------- the set


def test_a_name_is_absent_only_while_the_set_is_current():
    catalog = Catalog(["consul", "API"])
    names = CatalogNames(catalog, min_interval=0.0)
    assert not names.lacks("web")  # not read yet: unknown, never "absent"
    names.start()
    assert wait_for(lambda: names.lacks("web"))
    assert not names.lacks("api") and not names.lacks("Api")  # names in any case
    catalog.set(["consul", "api", "web"])
    assert wait_for(lambda: not names.lacks("web"))
    catalog.fail = True
    catalog.set(["consul"])
    assert wait_for(lambda: not names.lacks("nothing"))  # a failed read: unknown again
    catalog.fail = False
    assert wait_for(lambda: names.lacks("web"), 3.0)  # read again after the retry
    names.stop()
    assert not names.lacks("web")


def test_odd_data_from_consul_makes_the_set_unknown_not_empty():
    reads: list[str | None] = []

    def odd(index: str | None, wait: str) -> tuple[str, Any]:
        reads.append(index)
        return "1", ["not", "a", "mapping"] if len(reads) > 1 else {"consul": []}

    names = CatalogNames(odd, min_interval=0.0)
    names.start()
    assert wait_for(lambda: len(reads) >= 3)  # read, then odd data (and the retry after it)
    assert not names.lacks("anything")
    names.stop()


# --------------------------------------------------------------------------- answers


def proxy(catalog: CatalogNames | None, entries: list[dict[str, Any]],
          fresh: FreshInstances) -> tuple[DnsProxy, list[str]]:
    reads: list[str] = []

    def health(service: str, dc: str | None) -> list[dict[str, Any]]:
        reads.append(service)
        return entries

    dns_proxy = DnsProxy(health=health)
    dns_proxy.fresh = fresh
    dns_proxy.catalog = catalog
    dns_proxy._scopes = {ASKED_ON: Scope("shop", shared=frozenset({"db"}))}
    return dns_proxy, reads


def query(name: str) -> dns.message.Message:
    return dns.message.make_query(name, "SRV")


def test_a_fresh_name_consul_lacks_is_answered_without_a_read_and_at_once():
    fresh = FreshInstances()
    fresh.add(inst("api-1"))
    names = follow(Catalog(["consul"]))
    dns_proxy, reads = proxy(names, [], fresh)
    wire = dns_proxy.answer_at_once(query("api.service.consul"), ASKED_ON)
    assert wire is not None
    assert srv_endpoints(dns.message.from_wire(wire)) == [("10.1.0.5", 8080)]
    assert reads == []
    shared = dns_proxy.answer_at_once(query("db.service.consul"), ASKED_ON)  # declared
    assert shared is not None  # elsewhere, held nowhere: no instance, no read
    assert dns.message.from_wire(shared).rcode() == dns.rcode.NXDOMAIN
    assert reads == []
    names.stop()


def test_a_name_consul_holds_is_read_by_a_worker_with_consuls_instances():
    fresh = FreshInstances()
    fresh.add(inst("api-1"))
    other = inst("api-9", address="10.1.0.9")
    names = follow(Catalog(["consul", "api"]))
    dns_proxy, reads = proxy(names, [health_entry(other)], fresh)
    assert dns_proxy.answer_at_once(query("api.service.consul"), ASKED_ON) is None
    assert reads == []  # left to a worker: the listener never waits for Consul
    wire = dns_proxy.answer(query("api.service.consul"), ASKED_ON)
    assert wire is not None
    assert sorted(srv_endpoints(dns.message.from_wire(wire))) == [("10.1.0.5", 8080),
                                                                 ("10.1.0.9", 8080)]
    assert reads == ["api"]
    names.stop()


def test_without_a_current_catalog_every_answer_reads_consul():
    fresh = FreshInstances()
    fresh.add(inst("api-1"))
    catalog = Catalog(["consul"])
    catalog.fail = True
    names = CatalogNames(catalog, min_interval=0.0)
    names.start()
    for candidate in (None, names):
        dns_proxy, reads = proxy(candidate, [], fresh)
        assert dns_proxy.answer_at_once(query("api.service.consul"), ASKED_ON) is None
        assert dns_proxy.answer(query("api.service.consul"), ASKED_ON) is not None
        assert reads == ["api"]
    names.stop()


def test_another_datacenters_name_is_never_answered_from_this_catalog():
    fresh = FreshInstances()
    fresh.add(inst("api-1"))
    names = follow(Catalog(["consul"]))
    dns_proxy, reads = proxy(names, [], fresh)
    assert dns_proxy.answer_at_once(query("db.service.dc2.consul"), ASKED_ON) is None
    names.stop()


# --------------------------------------------------------------------------- early checks


def test_checks_that_passed_early_are_registered_at_once_and_not_tried_again():
    tries: dict[str, int] = {}
    answering = {"10.1.0.1", "10.1.0.2"}

    def probe(spec: CheckSpec) -> bool:
        address = spec.target.split(":")[0]
        tries[address] = tries.get(address, 0) + 1
        return address in answering

    instances = [inst(f"api-{i}", address=f"10.1.0.{i}") for i in (1, 2, 3)]
    early = EarlyChecks(instances, probe=probe)
    assert wait_for(lambda: sum(tries.values()) == 3)
    registered: list[tuple[str, bool]] = []
    answering.add("10.1.0.3")  # api-3 answers by the time the flows are in
    register_when_ready(instances, lambda i, ok: registered.append((i.address, ok)),
                        wait=0.5, every=0.01, probe=probe, early=early)
    assert registered[:2] == [("10.1.0.1", True), ("10.1.0.2", True)]  # first, at once
    assert registered[2:] == [("10.1.0.3", True)]
    assert tries == {"10.1.0.1": 1, "10.1.0.2": 1, "10.1.0.3": 2}


def test_an_early_check_not_done_when_the_flows_are_in_is_tried_as_usual():
    calls: list[str] = []
    release = threading.Event()

    def probe(spec: CheckSpec) -> bool:
        calls.append(spec.target)
        if len(calls) == 1:
            release.wait(2.0)  # the early try hangs (say, a slow connect)
        return True

    instance = inst("api-1")
    early = EarlyChecks([instance], probe=probe)  # tries; registers nothing itself
    assert wait_for(lambda: calls)
    registered: list[bool] = []
    register_when_ready([instance], lambda i, ok: registered.append(ok), wait=0.5,
                        every=0.01, probe=probe, early=early)
    release.set()
    assert registered == [True] and len(calls) == 2
