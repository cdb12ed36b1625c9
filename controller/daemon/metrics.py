"""The daemon's Prometheus metrics (official client library), served by controller.daemon.monitor.

Two kinds. Instruments the daemon updates as it works (reconcile passes and their duration,
DNS answers) live in :class:`Instruments`. Everything else is read when Prometheus scrapes,
by :class:`DaemonCollector`: two OpenFlow multipart requests to the bridge (port stats, and
the flow stats of the pipeline's default-drop flows, selected by their owner's cookie bits),
the port names from the OVSDB replica the daemon keeps anyway, and what the daemon already
holds (its reports, the instance health it follows, its connections). A scrape therefore
costs the switch two stats replies and nothing else; the data path never waits for it.

Interface counters are from the container's side: what the container *receives* is what OVS
transmits on its port, and the other way round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller.pipeline.flows import flow
from controller.pipeline.tables import TABLES, table_name
from controller.switch import ofmsg

STATS_TIMEOUT = 2.0  # seconds a scrape waits for the bridge's stats replies
TOPOLOGY_STATES = ("converged", "pending", "error")
INSTANCE_STATUSES = ("passing", "warning", "critical")
_OWNER_BITS = 0x00FFFFFF << 32  # the owner hash in a cookie (controller.pipeline.flows.Flow.cookie)
DROP_COOKIE = flow(next(iter(TABLES)), 0, owner="pipeline/drop").cookie & _OWNER_BITS
_INTERFACE_LABELS = ["topology", "container", "interface", "network"]
# (metric name part, OVS port stats field): from the container's side (see the module doc)
_PORT_FIELDS = (
    ("receive_packets", "tx_packets", "Packets the container received on the interface."),
    ("transmit_packets", "rx_packets", "Packets the container sent on the interface."),
    ("receive_bytes", "tx_bytes", "Bytes the container received on the interface."),
    ("transmit_bytes", "rx_bytes", "Bytes the container sent on the interface."),
    ("receive_dropped_packets", "tx_dropped",
     "Packets for the container that OVS dropped at its port (queue full, port down)."),
    ("transmit_dropped_packets", "rx_dropped",
     "Packets from the container that OVS dropped at its port."),
)


class Instruments:
    """What the daemon counts as it works."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconcile_seconds = Histogram(
            "switchboard_reconcile_duration_seconds", "Duration of one reconcile pass.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry)
        self.reconcile_passes = Counter(
            "switchboard_reconcile_passes", "Reconcile passes, by result (ok: the pass ran "
            "through; failed: it raised, e.g. Consul did not answer).", ["result"],
            registry=registry)
        self.last_pass = Gauge(
            "switchboard_reconcile_last_timestamp_seconds",
            "When the last reconcile pass ended (Unix time).", registry=registry)
        self.dns_queries = Counter(
            "switchboard_dns_queries", "Containers' DNS queries answered by the daemon "
            "(answered: any answer but SERVFAIL, NXDOMAIN included; failed: SERVFAIL).",
            ["result"], registry=registry)
        for result in ("ok", "failed"):
            self.reconcile_passes.labels(result)
        for result in ("answered", "failed"):
            self.dns_queries.labels(result)

    def dns_answer(self, wire: bytes) -> None:
        """Count one DNS response about to be sent (the hook of discovery.dnsproxy)."""
        failed = len(wire) < 4 or wire[3] & 0x0F == 2  # RCODE SERVFAIL
        self.dns_queries.labels("failed" if failed else "answered").inc()


@dataclass
class Sources:
    """Where a scrape reads from (callables: read at scrape time)."""

    app: Callable[[], Any]  # the os-ken app (None until started)
    bridge: Any  # ovsdb.bridge.Bridge
    reports: Callable[[], Mapping[str, Mapping[str, Any]]]  # topology -> this host's report
    consul_up: Callable[[], bool]
    instances: Callable[[], Mapping[tuple[str, str, str], str]]  # (topo, container, svc)
    events: Callable[[], tuple[int, int, int]]  # written, dropped, queued


def _counter(name: str, doc: str, labels: list[str] | None = None) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class DaemonCollector(Collector):
    """Reads everything but the instruments at scrape time."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        app = self.sources.app()
        connected = bool(app is not None and app.connected.is_set())
        stats_ok = connected
        if connected:
            try:
                yield from self._interfaces(app)
                yield from self._drops(app)
            except TimeoutError:
                stats_ok = False
        ovs = _gauge("switchboard_ovs_connected", "1 when the daemon's connection to OVS is "
                     "up (channel openflow: the bridge; ovsdb: ovsdb-server).", ["channel"])
        ovs.add_metric(["openflow"], int(connected))
        ovs.add_metric(["ovsdb"], int(self.sources.bridge.connected()))
        yield ovs
        up = _gauge("switchboard_ovs_stats_up", "1 when this scrape read the bridge's port "
                    "and flow statistics (0: not connected, or no reply in time).")
        up.add_metric([], int(stats_ok))
        yield up
        took = _gauge("switchboard_ovs_stats_duration_seconds",
                      "How long this scrape took to read the bridge's statistics.")
        took.add_metric([], time.perf_counter() - started)
        yield took
        yield from self._openflow(app)
        consul = _gauge("switchboard_consul_up", "1 when the daemon's last Consul calls "
                        "succeeded (the local agent answers).")
        consul.add_metric([], int(self.sources.consul_up()))
        yield consul
        yield from self._topologies(self.sources.reports())
        yield from self._instances(self.sources.instances())
        written, dropped, queued = self.sources.events()
        for name, doc, value in (
            ("written", "Events this daemon wrote to Consul.", written),
            ("dropped", "Events lost because Consul did not answer for too long.", dropped),
        ):
            family = _counter(f"switchboard_events_{name}", doc)
            family.add_metric([], value)
            yield family
        waiting = _gauge("switchboard_events_queued", "Events waiting to be written.")
        waiting.add_metric([], queued)
        yield waiting

    def _interfaces(self, app: Any) -> Iterator[Metric]:
        stats = app.request_stats(ofmsg.port_stats_request, STATS_TIMEOUT)
        by_ofport = {
            port.ofport: port for port in self.sources.bridge.owned_ports().values()
            if port.ofport and port.external_ids.get("switchboard-kind") == "container"
        }
        families = [
            (_counter(f"switchboard_interface_{name}", doc, _INTERFACE_LABELS), field)
            for name, field, doc in _PORT_FIELDS
        ]
        for stat in stats:
            port = by_ofport.get(stat.port_no)
            if port is None:
                continue
            ids = port.external_ids
            labels = [ids.get("switchboard-topology", ""), ids.get("switchboard-container", ""),
                      ids.get("switchboard-ifname", ""), ids.get("switchboard-network", "")]
            for family, field in families:
                family.add_metric(labels, getattr(stat, field))
        for family, _ in families:
            yield family

    def _drops(self, app: Any) -> Iterator[Metric]:
        stats = app.request_stats(
            lambda dp: ofmsg.flow_stats_by_cookie(dp, DROP_COOKIE, _OWNER_BITS), STATS_TIMEOUT)
        packets = _counter("switchboard_pipeline_dropped_packets", "Packets dropped by a "
                           "pipeline stage's default (table-miss) flow.", ["stage"])
        octets = _counter("switchboard_pipeline_dropped_bytes", "Bytes dropped by a "
                          "pipeline stage's default (table-miss) flow.", ["stage"])
        for stat in sorted(stats, key=lambda s: s.table_id):
            if stat.priority == 0:
                packets.add_metric([table_name(stat.table_id)], stat.packet_count)
                octets.add_metric([table_name(stat.table_id)], stat.byte_count)
        yield packets
        yield octets

    @staticmethod
    def _openflow(app: Any) -> Iterator[Metric]:
        switches = list(app.switches.values()) if app is not None else []
        flows = _gauge("switchboard_openflow_flows", "Flows installed on the bridge.")
        flows.add_metric([], sum(len(s.installed) for s in switches))
        groups = _gauge("switchboard_openflow_groups", "Groups (VIP select groups) installed "
                        "on the bridge.")
        groups.add_metric([], sum(len(s.groups) for s in switches))
        yield flows
        yield groups

    @staticmethod
    def _topologies(reports: Mapping[str, Mapping[str, Any]]) -> Iterator[Metric]:
        state = _gauge("switchboard_topology_state", "1 for the state this host reports for "
                       "its part of a topology (converged, pending, error), 0 for the others.",
                       ["topology", "state"])
        containers = _gauge("switchboard_topology_containers", "Container interfaces this "
                            "host runs for a topology, by state.", ["topology", "state"])
        backends = _gauge("switchboard_vip_backends", "Instances a VIP service's new "
                          "connections are balanced over (passing ones).",
                          ["topology", "service"])
        for name, report in sorted(reports.items()):
            for each in TOPOLOGY_STATES:
                state.add_metric([name, each], int(report.get("state") == each))
            counts: dict[str, int] = {}
            for row in report.get("containers") or []:
                counts[str(row.get("state"))] = counts.get(str(row.get("state")), 0) + 1
            for each, count in sorted(counts.items()):
                containers.add_metric([name, each], count)
            for svc in report.get("services") or []:
                backends.add_metric([name, str(svc.get("name"))], len(svc.get("backends") or []))
        yield state
        yield containers
        yield backends

    @staticmethod
    def _instances(statuses: Mapping[tuple[str, str, str], str]) -> Iterator[Metric]:
        family = _gauge("switchboard_service_instances", "Service instances this host runs, "
                        "by their Consul health.", ["topology", "service", "status"])
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for (topology, _container, service), status in statuses.items():
            per = counts.setdefault((topology, service), dict.fromkeys(INSTANCE_STATUSES, 0))
            per[status] = per.get(status, 0) + 1
        for (topology, service), per in sorted(counts.items()):
            for status, count in per.items():
                family.add_metric([topology, service, status], count)
        yield family
