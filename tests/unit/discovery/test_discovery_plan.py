"""Service discovery, pure parts: desired instances, sync plans, registry helpers, reading
DNS answers."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import dns.message
import pytest

from discovery.catalog import endpoint_from_health, worst_status
from discovery.dnsproxy import parse_query
from discovery.instances import (
    CHECK_KEY,
    CheckSpec,
    Instance,
    consul_meta,
    desired_instances,
    instance_from_agent,
)
from discovery.lookup import query, srv_endpoints
from discovery.plan import plan_sync
from discovery.registry import parse_port, registry_instance, registry_service_id
from discovery.sync import ServiceSync, consul_check
from sbcore.model import load_topology
from sbcore.model.ipam import allocate

SHOP = """
name: shop
networks:
  front: {subnet: 10.10.1.0/24}
  back: {subnet: 10.10.2.0/24}
containers:
  web:
    networks: {front: {ip: 10.10.1.10}}
    services:
      - {name: web, port: 80, tags: [v1], check: {http: /health, interval: 2s, timeout: 1s}}
  api-1:
    networks: [back, front]
    services:
      - {name: api, port: 8080, check: {tcp: 8081, interval: 1s}}
      - {name: admin, port: 9000, network: front}
"""


def shop() -> list[Instance]:
    topology = load_topology(SHOP)
    return desired_instances(topology, allocate(topology))


def agent_entry(inst: Instance) -> dict[str, Any]:
    """What /v1/agent/services returns for an instance registered by ServiceSync."""
    return {
        "ID": inst.id, "Service": inst.name, "Tags": list(inst.tags), "Meta": consul_meta(inst),
        "Port": inst.port, "Address": inst.address, "EnableTagOverride": False,
        "Weights": {"Passing": 1, "Warning": 1},
    }


def registered(*instances: Instance) -> dict[str, dict[str, Any]]:
    return {i.id: agent_entry(i) for i in instances}


def foreign(service_id: str, meta: dict[str, str] | None = None) -> dict[str, Any]:
    return {"ID": service_id, "Service": "x", "Tags": [], "Meta": meta or {}, "Port": 1,
            "Address": "10.0.0.1"}


# --------------------------------------------------------------------------- instances


def test_desired_instances_one_per_declared_service() -> None:
    web, api, admin = shop()
    assert web == Instance(
        id="sb.shop.web.web", name="web", address="10.10.1.10", port=80,
        tags=("v1", "topology-shop"),
        meta={"switchboard": "1", "switchboard-topology": "shop",
              "switchboard-container": "web"},
        check=CheckSpec("http", "http://10.10.1.10:80/health", "2s", "1s"),
    )
    assert (api.id, api.address, api.check) == (
        "sb.shop.api-1.api", "10.10.2.2", CheckSpec("tcp", "10.10.2.2:8081", "1s"),
    )
    assert (admin.address, admin.check, admin.topology) == ("10.10.1.2", None, "shop")


def test_instance_normalises_meta_and_tags() -> None:
    a = Instance("i", "n", "1.2.3.4", 1, ["t"], {"b": "2", "a": "1"})  # type: ignore[arg-type]
    b = Instance("i", "n", "1.2.3.4", 1, ("t",), (("a", "1"), ("b", "2")))
    assert a == b and hash(a) == hash(b) and a.meta_dict == {"a": "1", "b": "2"}


def test_check_definition_is_kept_in_meta_and_read_back() -> None:
    web = shop()[0]
    meta = consul_meta(web)
    assert CheckSpec.decode(meta[CHECK_KEY]) == web.check
    assert instance_from_agent(agent_entry(web)) == web
    long = CheckSpec("http", "http://h:1/" + "x" * 600, "1s")
    assert long.encode().startswith("sha256:") and len(long.encode()) < 512
    assert CheckSpec.decode(long.encode()) is None


def test_consul_check_definitions() -> None:
    web, api, _ = shop()
    assert consul_check(web.check) == {  # type: ignore[arg-type]
        "http": "http://10.10.1.10:80/health", "interval": "2s", "timeout": "1s"}
    assert consul_check(api.check) == {"tcp": "10.10.2.2:8081", "interval": "1s"}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- plan


def test_missing_instances_are_registered() -> None:
    desired = shop()
    plan = plan_sync(desired, {}, {"shop"})
    assert plan.register == desired and plan.deregister == []


def test_identical_registration_changes_nothing() -> None:
    desired = shop()
    assert plan_sync(desired, registered(*desired), {"shop"}).empty


@pytest.mark.parametrize(
    "change",
    [
        {"port": 81},
        {"tags": ("v2",)},
        {"tags": ()},
        {"address": "10.10.1.11"},
        {"name": "www"},
        {"check": CheckSpec("http", "http://10.10.1.10:80/other", "2s", "1s")},
        {"check": CheckSpec("http", "http://10.10.1.10:80/health", "5s", "1s")},
        {"check": None},
    ],
)
def test_changed_instance_is_registered_again(change: dict[str, Any]) -> None:
    desired = shop()
    old = replace(desired[0], **change)
    plan = plan_sync(desired, registered(old, *desired[1:]), {"shop"})
    assert plan.register == [desired[0]] and plan.deregister == []


def test_changed_meta_or_lost_check_meta_is_registered_again() -> None:
    desired = shop()
    entries = registered(*desired)
    del entries["sb.shop.web.web"]["Meta"][CHECK_KEY]
    entries["sb.shop.api-1.admin"]["Meta"]["switchboard-container"] = "other"
    assert [i.id for i in plan_sync(desired, entries, {"shop"}).register] == [
        "sb.shop.web.web", "sb.shop.api-1.admin"]


def test_undesired_instance_of_owned_topology_is_deregistered() -> None:
    web, api, admin = shop()
    plan = plan_sync([web, api], registered(web, api, admin), {"shop"})
    assert plan.register == [] and plan.deregister == ["sb.shop.api-1.admin"]
    assert plan_sync([], registered(web, api, admin), {"shop"}).deregister == sorted(
        [web.id, api.id, admin.id])


def test_services_that_are_not_ours_are_never_deregistered() -> None:
    entries = {
        "plain": foreign("plain"),
        "no-meta": {"ID": "no-meta", "Service": "x"},
        "other-owner": foreign("other-owner", {"switchboard": "0",
                                               "switchboard-topology": "shop"}),
        "sb.shop.web.web": foreign("sb.shop.web.web", {"switchboard-topology": "shop"}),
    }
    assert plan_sync([], entries, None).empty
    assert plan_sync([], entries, {"shop"}).empty


def test_other_topologies_and_registry_instances_are_untouched() -> None:
    web = shop()[0]
    other = replace(web, id="sb-other-web-web",
                    meta={"switchboard": "1", "switchboard-topology": "other",
                          "switchboard-container": "web"})
    reg = registry_instance("shop", "web", "10.0.0.9", 80)  # a registry named like a topology
    entries = registered(web, other, reg)
    assert plan_sync([], entries, {"shop"}).deregister == [web.id]
    assert plan_sync([], entries, set()).empty
    assert plan_sync([], entries, None).deregister == sorted([web.id, other.id])


def test_foreign_service_holding_a_desired_id_is_taken_over() -> None:
    web = shop()[0]
    plan = plan_sync([web], {web.id: foreign(web.id)}, {"shop"})
    assert plan.register == [web] and plan.deregister == []


def test_duplicate_desired_ids_keep_the_first_and_are_reported() -> None:
    web = shop()[0]
    twin = replace(web, port=81)
    plan = plan_sync([web, twin, web], {}, {"shop"})
    assert plan.register == [web] and plan.conflicts == [web.id]


# --------------------------------------------------------------------------- ServiceSync


class FakeAgent:
    """The part of consul.Consul that ServiceSync uses, in memory."""

    def __init__(self, entries: dict[str, dict[str, Any]]) -> None:
        self.entries = entries
        self.agent = self
        self.service = self

    def services(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.entries.items()}

    def register(self, name: str, service_id: str, address: str, port: int, tags: list[str],
                 meta: dict[str, str], check: Any, replace_existing_checks: bool) -> None:
        assert replace_existing_checks
        self.entries[service_id] = {"ID": service_id, "Service": name, "Address": address,
                                    "Port": port, "Tags": tags, "Meta": meta}

    def deregister(self, service_id: str) -> None:
        del self.entries[service_id]


def test_incomplete_desired_state_never_deregisters() -> None:
    web, api, admin = shop()
    agent = FakeAgent(registered(api, admin))
    sync = ServiceSync(agent)  # type: ignore[arg-type]
    plan = sync.reconcile([web], {"shop"}, complete=False)
    assert plan.register == [web] and plan.deregister == []
    assert set(agent.entries) == {web.id, api.id, admin.id}
    assert (sync.registrations, sync.deregistrations) == (1, 0)


def test_reconcile_converges_and_then_changes_nothing() -> None:
    web, api, admin = shop()
    agent = FakeAgent(registered(admin) | {"plain": foreign("plain")})
    sync = ServiceSync(agent)  # type: ignore[arg-type]
    sync.reconcile([web, api], {"shop"}, complete=True)
    assert set(agent.entries) == {web.id, api.id, "plain"}
    assert (sync.registrations, sync.deregistrations) == (2, 1)
    assert sync.reconcile([web, api], {"shop"}, complete=True).empty
    assert (sync.registrations, sync.deregistrations) == (2, 1)


# --------------------------------------------------------------------------- registry helpers


@pytest.mark.parametrize("port, expected", [(80, 80), ("8080", 8080), (" 443 ", 443)])
def test_parse_port_accepts_numbers(port: Any, expected: int) -> None:
    assert parse_port(port) == expected


@pytest.mark.parametrize("port", ["my-port", "", "80a", 0, 65536, "70000", True, 8.5, None])
def test_parse_port_rejects_the_rest_naming_the_value(port: Any) -> None:
    with pytest.raises(ValueError, match=repr(port).replace("(", r"\(").replace(".", r"\.")):
        parse_port(port)


def test_registry_instance_shape() -> None:
    inst = registry_instance("my registry", "my-service", "db.example.com", "5432", ["a"],
                             {"tcp": 5432, "interval": "3s"})
    assert inst.id == "sb-reg-my-registry-my-service-db.example.com-5432"
    assert inst.meta_dict == {"switchboard": "1", "switchboard-registry": "my registry"}
    assert inst.topology is None
    assert inst.check == CheckSpec("tcp", "db.example.com:5432", "3s")
    assert registry_service_id("r", "s/x", "::1", 80) == "sb-reg-r-s-x--1-80"
    v6 = registry_instance("r", "s", "fd00::1", 80, check={"http": "/"})
    assert v6.check is not None and v6.check.target == "http://[fd00::1]:80/"
    with pytest.raises(ValueError, match="address"):
        registry_instance("r", "s", "", 80)
    with pytest.raises(ValueError, match="service name"):
        registry_instance("r", "bad name", "h", 80)


def test_health_entries_become_endpoints() -> None:
    entry = {
        "Node": {"Node": "vm", "Address": "192.0.2.1"},
        "Service": {"ID": "a-1", "Service": "a", "Tags": ["t"], "Address": "", "Port": 7},
        "Checks": [{"Status": "passing"}, {"Status": "warning"}],
    }
    ep = endpoint_from_health(entry)
    assert (ep.address, ep.port, ep.tags, ep.status, ep.passing) == (
        "192.0.2.1", 7, ("t",), "warning", False)
    assert worst_status([]) == "passing"
    assert worst_status(["passing", "critical", "warning"]) == "critical"


# --------------------------------------------------------------------------- DNS


def srv_message(*records: str, additional: tuple[str, ...] = ()) -> dns.message.Message:
    text = "\n".join(["id 7", "opcode QUERY", "rcode NOERROR", "flags QR AA RD",
                      ";QUESTION", "web.service.consul. IN SRV", ";ANSWER", *records,
                      ";ADDITIONAL", *additional])
    return dns.message.from_text(text)


def test_srv_endpoints_take_target_addresses_from_the_additional_section() -> None:
    msg = srv_message(
        "web.service.consul. 0 IN SRV 1 1 80 0a0a010a.addr.dc1.consul.",
        "web.service.consul. 0 IN SRV 1 1 81 vm.node.dc1.consul.",
        additional=("0a0a010a.addr.dc1.consul. 0 IN A 10.10.1.10",
                    "VM.node.dc1.consul. 30 IN AAAA fd00::1",
                    "vm.node.dc1.consul. 30 IN TXT \"x\""),
    )
    back = dns.message.from_wire(msg.to_wire())  # through the wire format (compression)
    assert sorted(srv_endpoints(back)) == [("10.10.1.10", 80), ("fd00::1", 81)]


def test_srv_endpoints_keep_a_target_without_an_address_as_its_name() -> None:
    msg = srv_message("web.service.consul. 0 IN SRV 1 1 8080 backend.consul.")
    assert srv_endpoints(msg) == [("backend.consul", 8080)]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01",  # short header
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\x05ab",  # truncated label
        struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c",  # pointer loop
        dns.message.make_response(dns.message.make_query("a.consul", "A")).to_wire(),  # answer
    ],
)
def test_the_forwarder_drops_what_is_not_a_query(data: bytes) -> None:
    assert parse_query(data) is None


def test_a_name_that_is_not_a_dns_name_is_refused_before_asking() -> None:
    with pytest.raises(ValueError, match="not a DNS name"):
        query("a" * 64 + ".service.consul", "SRV", ("127.0.0.1", 9))
