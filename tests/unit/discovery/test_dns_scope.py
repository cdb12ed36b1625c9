"""Names scoped to their topology, without a network: which question a name asks, which
instances a topology's containers see, and the answers built for them (dnspython)."""

from __future__ import annotations

from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from discovery.lookup import srv_endpoints
from discovery.scope import (
    Endpoint,
    ServiceQuestion,
    VipQuestion,
    endpoints,
    parse_question,
    scopes_of,
    service_answer,
    to_wire,
    vip_answer,
)
from sbcore.model import load_topology
from sbcore.plan.hostplan import plan_topology

SRV, A = dns.rdatatype.SRV, dns.rdatatype.A


@pytest.mark.parametrize(("name", "qtype", "expected"), [
    ("api.service.consul", A, ServiceQuestion("api")),
    ("API.Service.Consul.", A, ServiceQuestion("api")),
    ("v1.api.service.consul", A, ServiceQuestion("api", "v1")),
    ("a.b.api.service.consul", SRV, ServiceQuestion("api", "a.b")),
    ("api.service.dc1.consul", SRV, ServiceQuestion("api", None, "dc1")),
    ("_api._tcp.service.consul", SRV, ServiceQuestion("api")),
    ("_api._v1.service.consul", SRV, ServiceQuestion("api", "v1")),
    ("_api._tcp.consul", SRV, ServiceQuestion("api")),  # "service" is optional for SRV
    ("api.vip.consul", A, VipQuestion("api")),
    ("api.vip.consul", SRV, VipQuestion("api")),
    ("service.consul", A, None),
    ("consul", A, None),
    ("vm.node.consul", A, None),
    ("0a0a010b.addr.dc1.consul", A, None),
    ("api.query.consul", SRV, None),
    ("api.service.dc1.extra.consul", A, None),
    ("v1.api.vip.consul", A, None),
    ("api.service.example.com", A, None),
])
def test_questions_are_read_the_way_consul_reads_its_names(name, qtype, expected):
    assert parse_question(name, qtype) == expected


def entry(
    address: str, topology: str | None = None, statuses: tuple[str, ...] = ("passing",),
    tags: tuple[str, ...] = (), node_address: str = "127.0.0.1", port: int = 8080,
) -> dict[str, Any]:
    meta = {"switchboard": "1", "switchboard-topology": topology} if topology else {}
    return {"Node": {"Node": "n1", "Address": node_address, "Datacenter": "dc1"},
            "Service": {"ID": f"id-{address}", "Service": "api", "Address": address,
                        "Port": port, "Tags": list(tags), "Meta": meta},
            "Checks": [{"Status": s} for s in statuses]}


def test_a_topology_sees_its_own_instances_and_those_of_no_topology():
    entries = [entry("10.1.0.2", "shop"), entry("10.2.0.2", "other"), entry("10.9.0.9")]
    assert [e.address for e in endpoints(entries, "shop")] == ["10.1.0.2", "10.9.0.9"]
    assert [e.address for e in endpoints(entries, "other")] == ["10.2.0.2", "10.9.0.9"]


def test_critical_instances_are_left_out_and_warning_ones_kept_as_consul_dns_does():
    entries = [entry("10.1.0.2", "shop", ("passing", "critical")),
               entry("10.1.0.3", "shop", ("warning",)), entry("10.1.0.4", "shop", ())]
    assert [e.address for e in endpoints(entries, "shop")] == ["10.1.0.3", "10.1.0.4"]


def test_a_tag_selects_instances_in_any_case_and_node_address_fills_in():
    entries = [entry("10.1.0.2", "shop", tags=("V1",)), entry("", "shop", tags=("v2",))]
    assert endpoints(entries, "shop", "v1") == [Endpoint("10.1.0.2", 8080, "dc1")]
    assert [e.address for e in endpoints(entries, "shop", "v2")] == ["127.0.0.1"]


def ask(name: str, rdtype: str = "A", **kw: Any) -> dns.message.Message:
    return dns.message.make_query(name, rdtype, **kw)


def answered(query: dns.message.Message, found: list[Endpoint], limit: int = 65535) -> Any:
    response, fewer = service_answer(query, found)
    return dns.message.from_wire(to_wire(response, limit, fewer, len(found)))


FOUND = [Endpoint("10.1.0.2", 8080, "dc1"), Endpoint("10.1.0.3", 8081, "dc1")]


def test_a_question_gets_every_instance_address_with_ttl_0():
    msg = answered(ask("api.service.consul"), FOUND)
    assert msg.rcode() == dns.rcode.NOERROR and msg.flags & dns.flags.AA
    assert {r.address for r in msg.answer[0]} == {"10.1.0.2", "10.1.0.3"}
    assert msg.answer[0].ttl == 0


def test_srv_targets_are_consuls_addr_names_with_their_addresses_alongside():
    msg = answered(ask("api.service.consul", "SRV"), FOUND)
    assert sorted(srv_endpoints(msg)) == [("10.1.0.2", 8080), ("10.1.0.3", 8081)]
    targets = {r.target.to_text() for r in msg.answer[0]}
    assert targets == {"0a010002.addr.dc1.consul.", "0a010003.addr.dc1.consul."}


def test_no_instance_left_is_nxdomain_with_the_domains_soa():
    msg = answered(ask("api.service.consul"), [])
    assert msg.rcode() == dns.rcode.NXDOMAIN and not msg.answer
    assert msg.authority[0].rdtype == dns.rdatatype.SOA


def test_a_type_the_instances_have_no_record_of_is_an_empty_answer_not_nxdomain():
    msg = answered(ask("api.service.consul", "AAAA"), FOUND)
    assert msg.rcode() == dns.rcode.NOERROR and not msg.answer and msg.authority


def test_an_instance_registered_by_host_name_is_a_cname():
    msg = answered(ask("db.service.consul"), [Endpoint("db.example.org", 5432, "dc1")])
    assert msg.answer[0].rdtype == dns.rdatatype.CNAME
    assert msg.answer[0][0].target.to_text() == "db.example.org."
    srv = answered(ask("db.service.consul", "SRV"), [Endpoint("db.example.org", 5432, "dc1")])
    assert srv_endpoints(srv) == [("db.example.org", 5432)]


def test_a_udp_answer_too_big_keeps_the_instances_that_fit_and_sets_tc():
    many = [Endpoint(f"10.1.{i // 250}.{i % 250 + 1}", 8080, "dc1") for i in range(100)]
    small = answered(ask("api.service.consul", "SRV"), many, limit=512)
    assert small.flags & dns.flags.TC
    kept = srv_endpoints(small)
    assert 1 <= len(kept) < 100 and set(kept) <= {(e.address, 8080) for e in many}
    assert len(small.to_wire()) <= 512
    whole = answered(ask("api.service.consul", "SRV"), many)
    assert not whole.flags & dns.flags.TC and len(srv_endpoints(whole)) == 100


def test_answers_are_shuffled_so_clients_spread_over_instances():
    firsts = {answered(ask("api.service.consul"), FOUND * 4).answer[0][0].address
              for _ in range(40)}
    assert firsts == {"10.1.0.2", "10.1.0.3"}


def test_a_vip_name_answers_the_vip_and_its_port():
    a = dns.message.from_wire(to_wire(vip_answer(ask("api.vip.consul"), ("10.1.0.100", 80)),
                                      512))
    assert [r.address for r in a.answer[0]] == ["10.1.0.100"]
    srv = vip_answer(ask("api.vip.consul", "SRV"), ("10.1.0.100", 80))
    assert srv_endpoints(srv) == [("10.1.0.100", 80)]
    assert vip_answer(ask("nope.vip.consul"), None).rcode() == dns.rcode.NXDOMAIN


SHOP = """
name: shop
networks:
  front: {subnet: 10.10.1.0/24}
  back: {subnet: 10.10.2.0/24}
containers:
  web: {networks: [front]}
  api-1:
    networks: [back]
    services: [{name: api, port: 8080}]
services:
  api: {vip: 10.10.2.100, port: 80}
"""


def test_each_host_address_of_a_topology_answers_for_that_topology_with_its_vips():
    shop = load_topology(SHOP)
    other = load_topology(SHOP.replace("name: shop", "name: other").replace(
        "services: [{name: api, port: 8080}]", "services: [{name: api, port: 8080}, "
        "{name: db, port: 5432}]"))
    scopes = scopes_of([plan_topology(shop)], [shop, other])
    assert set(scopes) == {"10.10.1.254", "10.10.2.254"}
    assert scopes["10.10.1.254"] == scopes["10.10.2.254"]
    assert scopes["10.10.1.254"].topology == "shop"
    assert scopes["10.10.1.254"].vips == {"api": ("10.10.2.100", 80)}
    assert scopes["10.10.1.254"].shared == {"api", "db"}  # what the other topology declares
    assert scopes_of([plan_topology(shop)], [shop])["10.10.1.254"].shared == frozenset()
