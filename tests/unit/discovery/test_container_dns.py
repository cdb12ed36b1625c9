"""DNS for containers and discovery, without a network: the forwarder's routing and answers,
containers' resolv.conf files and their plumbing diff, listings, and registering instances
once their checks pass."""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from typing import Any

import dns.flags
import dns.message
import dns.rcode

from controller.daemon.report import service_rows
from discovery.dnsproxy import (
    host_resolvers,
    is_consul_name,
    parse_query,
    parse_server,
    servfail,
    udp_limit,
)
from discovery.instances import CheckSpec, Instance
from discovery.listing import instance_rows, vip_rows
from discovery.lookup import consul_name
from discovery.plan import SyncPlan
from discovery.readiness import register_when_ready
from discovery.sync import ServiceSync
from discovery.upstream import upstream_servers
from plumbing.plan import plan_plumbing
from plumbing.resolvconf import MARK, resolv_conf, wanted_files
from sbcore.model import load_topology
from sbcore.plan.hostplan import plan_topology

SHOP = """
name: shop
networks:
  front: {subnet: 10.10.1.0/24}
  back: {subnet: 10.10.2.0/24}
containers:
  web: {networks: [front, back]}
  api-1: {networks: [back]}
  api-2: {networks: [back]}
  legacy: {attach: {pid: 1}, networks: [back]}
services:
  api: {vip: 10.10.2.100, port: 80}
"""


def shop_plan():
    text = SHOP.replace("  api-1: {networks: [back]}", """  api-1:
    networks: [back]
    services: [{name: api, port: 8080}]""").replace("  api-2: {networks: [back]}", """  api-2:
    networks: [back]
    services: [{name: api, port: 8080}]""")
    return plan_topology(load_topology(text))


# --------------------------------------------------------------------------- forwarder


def test_consul_names_are_the_domain_and_below_it_in_any_case():
    assert is_consul_name("api.service.consul")
    assert is_consul_name("API.Service.Consul.")
    assert is_consul_name("consul")
    assert not is_consul_name("consul.io")
    assert not is_consul_name("notconsul")


def test_host_resolvers_come_from_nameserver_lines_with_glibcs_default():
    text = "# c\nsearch corp.example\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n"
    assert host_resolvers(text) == [("10.0.0.2", 53), ("fe80::1", 53)]
    assert host_resolvers("search x\n") == [("127.0.0.1", 53)]


def test_server_addresses_take_an_optional_port():
    assert parse_server("127.0.0.1:8600") == ("127.0.0.1", 8600)
    assert parse_server("127.0.0.1", 8600) == ("127.0.0.1", 8600)
    assert parse_server("[::1]:53") == ("::1", 53)


def test_upstream_dns_is_a_comma_separated_list_of_servers():
    assert upstream_servers("10.0.0.2, 10.0.0.3:5353,[::1]:53") == [
        ("10.0.0.2", 53), ("10.0.0.3", 5353), ("::1", 53)]
    assert upstream_servers(None) == upstream_servers(" ") == []


def test_only_queries_with_one_question_are_read():
    query = parse_query(dns.message.make_query("api.service.consul", "SRV").to_wire())
    assert query is not None and query.question[0].name.to_text() == "api.service.consul."
    answer = dns.message.make_response(dns.message.make_query("a", "A"))
    assert parse_query(answer.to_wire()) is None
    assert parse_query(b"\x00\x01garbage") is None


def test_servfail_keeps_id_question_and_recursion_flag():
    query = dns.message.make_query("x.example", "A", id=4242)
    msg = dns.message.from_wire(servfail(query))
    assert msg.id == 4242 and msg.rcode() == dns.rcode.SERVFAIL
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.RD
    assert msg.question == query.question


def test_udp_answers_fit_the_askers_edns_size_or_512_bytes():
    assert udp_limit(dns.message.make_query("a", "A")) == 512
    assert udp_limit(dns.message.make_query("a", "A", use_edns=0, payload=4096)) == 4096
    assert udp_limit(dns.message.make_query("a", "A", use_edns=0, payload=100)) == 512


# --------------------------------------------------------------------------- resolv.conf


def test_resolv_conf_keeps_host_search_and_options_and_adds_service_consul():
    host = "domain old.example\nsearch corp.example lab.example\nnameserver 10.255.0.53\n" \
           "options edns0 ndots:2\n"
    text = resolv_conf(IPv4Address("10.10.1.254"), host, "shop/web")
    assert text.startswith(MARK)
    assert text.splitlines()[1:] == [
        "nameserver 10.10.1.254",
        "search corp.example lab.example service.consul",
        "options edns0 ndots:2",
    ]
    assert "search service.consul" in resolv_conf(IPv4Address("10.0.0.1"), "", "t/c")


def test_each_own_container_asks_the_host_address_on_its_first_network():
    files = wanted_files([shop_plan()], "")
    assert set(files) == {"sb-shop-web", "sb-shop-api-1", "sb-shop-api-2"}  # not legacy
    assert "nameserver 10.10.1.254\n" in files["sb-shop-web"]
    assert "nameserver 10.10.2.254\n" in files["sb-shop-api-1"]


def test_plumbing_writes_differing_files_and_removes_those_of_gone_containers():
    plan = shop_plan()
    wanted = wanted_files([plan], "")
    observed = {"sb-shop-web": wanted["sb-shop-web"], "sb-shop-api-1": "stale",
                "sb-shop-old": "gone"}
    result = plan_plumbing([plan], {}, set(), {}, wanted_resolv=wanted,
                           observed_resolv=observed)
    assert result.write_resolv == [("sb-shop-api-1", wanted["sb-shop-api-1"]),
                                   ("sb-shop-api-2", wanted["sb-shop-api-2"])]
    assert result.delete_resolv == ["sb-shop-old"]
    same = plan_plumbing([plan], {}, set(), {}, wanted_resolv=wanted, observed_resolv=wanted)
    assert (same.write_resolv, same.delete_resolv) == ([], [])
    untouched = plan_plumbing([plan], {}, set(), {}, observed_resolv=observed)
    assert (untouched.write_resolv, untouched.delete_resolv) == ([], [])


# --------------------------------------------------------------------------- listings


def test_vip_rows_use_passing_instances_or_all_before_consul_answered():
    plan = shop_plan()
    everyone = service_rows(plan, {})
    assert [b["container"] for b in everyone[0]["backends"]] == ["api-1", "api-2"]
    assert everyone[0] | {"backends": []} == {"name": "api", "vip": "10.10.2.100",
                                              "port": 80, "published": None, "backends": []}
    one = service_rows(plan, {("shop", "api"): frozenset({"api-2"})})
    assert one[0]["backends"] == [{"container": "api-2", "ip": "10.10.2.4", "port": 8080}]
    assert service_rows(plan, {("shop", "api"): frozenset()})[0]["backends"] == []


def _entry(sid: str, name: str, meta: dict, statuses: list[str]) -> dict:
    return {"Node": {"Node": "n1", "Address": "127.0.0.1"},
            "Service": {"ID": sid, "Service": name, "Address": "10.0.0.5", "Port": 80,
                        "Tags": ["t"], "Meta": meta},
            "Checks": [{"CheckID": f"c{i}", "Status": s} for i, s in enumerate(statuses)]}


def test_instance_rows_show_ours_by_container_with_worst_health():
    ours = {"switchboard": "1", "switchboard-topology": "shop", "switchboard-container": "web"}
    reg = {"switchboard": "1", "switchboard-registry": "mine"}
    entries = {"web": [_entry("sb.shop.web.web", "web", ours, ["passing", "critical"])],
               "seed": [_entry("sb-reg-x", "seed", reg, ["passing"])],
               "other": [_entry("o-1", "other", {}, [])]}
    rows = instance_rows(entries)
    assert [(r["service"], r["instance"], r["health"]) for r in rows] == [
        ("seed", "registry:mine", "passing"), ("web", "web", "critical")]
    assert [r["instance"] for r in instance_rows(entries, everything=True)] == [
        "o-1", "registry:mine", "web"]
    assert [r["instance"] for r in instance_rows(entries, topology="shop")] == ["web"]


def test_vip_rows_come_from_every_hosts_report():
    report = {"services": [{"name": "api", "vip": "10.10.2.100", "port": 80,
                            "backends": [{"container": "api-1", "ip": "10.10.2.2",
                                          "port": 8080}]}]}
    rows = vip_rows({("h1", "shop"): report, ("h1", "other"): {}})
    assert rows == [{"service": "api", "topology": "shop", "host": "h1",
                     "vip": "10.10.2.100", "port": 80, "published": None,
                     "backends": report["services"][0]["backends"]}]
    assert vip_rows({("h1", "shop"): report}, topology="other") == []


def test_service_names_become_consul_names():
    assert consul_name("web") == "web.service.consul"
    assert consul_name("v1.web") == "v1.web.service.consul"
    assert consul_name("web.service.consul.") == "web.service.consul"
    assert consul_name("consul") == "consul.service.consul"


# --------------------------------------------------------------------------- readiness


def _instance(name: str, check: bool = True) -> Instance:
    spec = CheckSpec("tcp", f"10.0.0.{len(name)}:80", "1s") if check else None
    return Instance(id=f"sb.t.{name}.svc", name="svc", address="10.0.0.1", port=80, check=spec)


def test_instances_are_registered_passing_as_soon_as_their_check_passes():
    calls: dict[str, int] = {}
    ready_after = {"up": 1, "slow": 3, "never": 10**6}  # names of distinct lengths

    def probe(spec: CheckSpec) -> bool:
        name = next(n for n in ready_after if spec.target.startswith(f"10.0.0.{len(n)}:"))
        calls[name] = calls.get(name, 0) + 1
        return calls[name] >= ready_after[name]

    got: dict[str, bool] = {}
    started = time.monotonic()
    register_when_ready([_instance("up"), _instance("slow"), _instance("never")],
                        lambda inst, passing: got.__setitem__(inst.id.split(".")[2], passing),
                        wait=0.3, every=0.01, probe=probe)
    assert got == {"up": True, "slow": True, "never": False}
    assert calls["up"] == 1 and calls["slow"] == 3
    # "never" was given up on after the wait, not before (and not hours later)
    assert 0.25 <= time.monotonic() - started < 30


def test_sync_registers_with_an_initial_status_only_when_told_it_passes():
    class Agent:
        def __init__(self) -> None:
            self.agent, self.service, self.checks = self, self, {}

        def register(self, name: str, service_id: str, check: Any, **_: Any) -> None:
            self.checks[service_id] = check

    agent = Agent()
    sync = ServiceSync(agent)  # type: ignore[arg-type]
    plain, gated, failing = _instance("plain", check=False), _instance("ok"), _instance("bad")

    def ready(instances: list[Instance], register: Any) -> None:
        assert instances == [gated, failing]  # only instances with checks are gated
        register(gated, True)
        register(failing, False)

    sync.apply(SyncPlan([plain, gated, failing], []), ready)
    assert agent.checks[plain.id] is None
    assert agent.checks[gated.id]["Status"] == "passing"
    assert "Status" not in agent.checks[failing.id]
    assert sync.registrations == 3
