"""Metrics and health without a switch: the collector over fake OpenFlow stats and OVSDB
ports, parsed back with the Prometheus client's own parser; the health verdict; the
--metrics address; the DNS answer counter."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import dns.message
import dns.rcode
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from controller.daemon import metrics
from controller.daemon.monitor import judge
from controller.daemon.startup import StartError, parse_metrics
from controller.pipeline.tables import TABLES
from ovsdb.bridge import OwnedPort


def port_stat(port_no: int, rx: int, tx: int) -> SimpleNamespace:
    return SimpleNamespace(port_no=port_no, rx_packets=rx, tx_packets=tx, rx_bytes=rx * 100,
                           tx_bytes=tx * 100, rx_dropped=1, tx_dropped=2)


class FakeApp:
    """The os-ken app's side a scrape uses: connected, switches, request_stats."""

    def __init__(self, answer: bool = True) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.switches = {1: SimpleNamespace(installed={1, 2, 3}, groups={7: None})}
        self.answer = answer
        self.requests: list[str] = []

    def request_stats(self, make, timeout: float) -> list:
        dp = SimpleNamespace(ofproto=SimpleNamespace(OFPP_ANY=0xFFFFFFFF, OFPTT_ALL=0xFF,
                                                     OFPG_ANY=0xFFFFFFFF),
                             ofproto_parser=SimpleNamespace(
                                 OFPPortStatsRequest=lambda *a: ("ports", a),
                                 OFPFlowStatsRequest=lambda *a: ("flows", a),
                                 OFPMatch=lambda: None))
        kind, args = make(dp)
        self.requests.append(kind)
        if not self.answer:
            raise TimeoutError("no reply")
        if kind == "ports":
            return [port_stat(5, rx=10, tx=20), port_stat(6, rx=3, tx=4), port_stat(9, 1, 1)]
        cookie, mask = args[5], args[6]
        assert cookie == metrics.DROP_COOKIE and mask == 0x00FFFFFF << 32
        return [SimpleNamespace(table_id=TABLES["classifier"], priority=0, packet_count=42,
                                byte_count=4200)]


class FakeBridge:
    def connected(self) -> bool:
        return True

    def owned_ports(self) -> dict[str, OwnedPort]:
        ids = {"switchboard-topology": "shop", "switchboard-kind": "container",
               "switchboard-network": "back", "switchboard-ifname": "eth0"}
        return {
            "p5": OwnedPort("p5", {**ids, "switchboard-container": "api-1"}, 5),
            "p6": OwnedPort("p6", {**ids, "switchboard-container": "api-2"}, 6),
            "leg": OwnedPort("leg", {"switchboard-topology": "shop",
                                     "switchboard-kind": "host-leg"}, 9),
        }


def scrape(app: FakeApp | None) -> dict:
    registry = CollectorRegistry()
    reports = {"shop": {"state": "converged", "containers": [
        {"container": "api-1", "state": "running"}, {"container": "api-2", "state": "backoff"}],
        "services": [{"name": "api", "backends": [{"container": "api-1"}]}]}}
    registry.register(metrics.DaemonCollector(metrics.Sources(
        app=lambda: app, bridge=FakeBridge(), reports=lambda: reports,
        consul_up=lambda: True,
        instances=lambda: {("shop", "api-1", "api"): "passing",
                           ("shop", "api-2", "api"): "critical"},
        events=lambda: (5, 1, 2))))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_interface_counters_are_from_the_containers_side_and_skip_host_legs() -> None:
    found = scrape(FakeApp())
    api1 = (("container", "api-1"), ("interface", "eth0"), ("network", "back"),
            ("topology", "shop"))
    assert found[("switchboard_interface_transmit_packets_total", api1)] == 10  # OVS rx
    assert found[("switchboard_interface_receive_packets_total", api1)] == 20  # OVS tx
    assert found[("switchboard_interface_receive_bytes_total", api1)] == 2000
    assert found[("switchboard_interface_receive_dropped_packets_total", api1)] == 2
    assert not any(dict(labels).get("container") == "" for _, labels in found)


def test_default_drops_per_stage_and_the_daemons_own_state() -> None:
    found = scrape(FakeApp())
    assert found[("switchboard_pipeline_dropped_packets_total",
                  (("stage", "classifier"),))] == 42
    assert found[("switchboard_openflow_flows", ())] == 3
    assert found[("switchboard_openflow_groups", ())] == 1
    assert found[("switchboard_topology_state", (("state", "converged"),
                                                 ("topology", "shop")))] == 1
    assert found[("switchboard_topology_state", (("state", "error"), ("topology", "shop")))] == 0
    assert found[("switchboard_vip_backends", (("service", "api"), ("topology", "shop")))] == 1
    assert found[("switchboard_service_instances", (("service", "api"), ("status", "critical"),
                                                    ("topology", "shop")))] == 1
    assert found[("switchboard_events_dropped_total", ())] == 1
    assert found[("switchboard_ovs_stats_up", ())] == 1


def test_a_bridge_that_does_not_answer_leaves_the_rest_of_the_scrape() -> None:
    found = scrape(FakeApp(answer=False))
    assert found[("switchboard_ovs_stats_up", ())] == 0
    assert found[("switchboard_consul_up", ())] == 1
    assert not any(name.startswith("switchboard_interface_") for name, _ in found)


def test_before_the_app_runs_nothing_is_asked_of_the_switch() -> None:
    found = scrape(None)
    assert found[("switchboard_ovs_connected", (("channel", "openflow"),))] == 0
    assert found[("switchboard_openflow_flows", ())] == 0


def test_dns_answers_are_counted_answered_or_failed_by_their_rcode() -> None:
    registry = CollectorRegistry()
    instruments = metrics.Instruments(registry)
    query = dns.message.make_query("api.service.consul", "A")
    for rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL):
        reply = dns.message.make_response(query)
        reply.set_rcode(rcode)
        instruments.dns_answer(reply.to_wire())
    assert registry.get_sample_value("switchboard_dns_queries_total",
                                     {"result": "answered"}) == 2
    assert registry.get_sample_value("switchboard_dns_queries_total",
                                     {"result": "failed"}) == 1


def test_healthy_needs_ovs_consul_and_a_recent_pass_and_says_what_is_missing() -> None:
    assert judge(True, True, True, True, 1.0, 30.0) == (True, [])
    healthy, problems = judge(False, True, True, True, 45.0, 30.0)
    assert not healthy
    assert problems == ["the bridge is not connected to the controller (OpenFlow)",
                        "the last reconcile pass ended 45 s ago (more than 30 s)"]
    assert judge(True, True, False, False, None, 30.0)[1] == [
        "the Consul agent does not answer", "no reconcile pass has ended yet"]
    assert judge(True, True, True, False, 1.0, 30.0)[1] == ["the Consul cluster has no leader"]


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:9469", ("127.0.0.1", 9469)), ("0.0.0.0:1", ("0.0.0.0", 1)),
    ("[::1]:9469", ("::1", 9469)), ("off", None), ("", None),
])
def test_metrics_addresses(text: str, expected) -> None:
    assert parse_metrics(text) == expected


@pytest.mark.parametrize("text", ["9469", "localhost:9469", "127.0.0.1:", "1.2.3.4:70000",
                                  "::1:9469"])
def test_a_bad_metrics_address_is_refused_naming_it(text: str) -> None:
    with pytest.raises(StartError, match="--metrics") as caught:
        parse_metrics(text)
    assert repr(text) in str(caught.value)
