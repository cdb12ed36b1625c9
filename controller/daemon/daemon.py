"""The per-host agent behind ``switchboard controller``.

It watches the desired state in Consul KV, plumbs this host's containers, has the os-ken app
program the bridge, keeps their services in the local Consul agent, answers their DNS
queries, and reports per topology whether the host converged.

No Consul call can hold the loop for long: every call has a timeout, a failed pass is retried
after a second until Consul answers again, and the agent coming back (the KV watch recovers)
triggers a pass at once, which re-registers whatever the agent lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import partial
from typing import Any

from controller.daemon import registration
from controller.daemon import report as rows_of
from controller.daemon.cluster import HostsWatch, site_of, tunnel_peers
from controller.daemon.config import DaemonConfig
from controller.daemon.exits import ExitFailover
from controller.daemon.failover import Rescheduler, session_check_id
from controller.daemon.forwarding import ForwardingCheck
from controller.daemon.monitor import Monitor
from controller.daemon.realisable import log_skipped, realisable
from controller.pipeline.compiler import compile_pipeline
from controller.switch.runtime import start_controller
from discovery.catalognames import CatalogNames, consul_services
from discovery.dnsproxy import DnsProxy, consul_health, parse_server
from discovery.fresh import FreshInstances
from discovery.health import HealthWatch, ServiceKey
from discovery.instances import CONTAINER_KEY, desired_instances
from discovery.plan import SyncPlan
from discovery.readiness import EarlyChecks, container_netns, register_when_ready
from discovery.scope import scopes_of
from discovery.sync import ReadyGate, ServiceSync, SyncError
from discovery.upstream import describe_upstreams, upstream_servers
from ovsdb.bridge import Bridge, detect_datapath
from plumbing.hostnat import HostNat
from plumbing.phases import Phases
from plumbing.plumber import Plumber
from sbcore.model.desired import DesiredState
from sbcore.model.naming import datapath_id
from sbcore.plan.hostplan import Site, TopologyPlan, plan_topology
from sbcore.state import hosts as host_inventory
from sbcore.state.store import Store, StoredTopology, consul_client

LOG = logging.getLogger("switchboard.daemon")
__all__ = ["Daemon", "DaemonConfig", "realisable", "tunnel_peers"]


class Daemon:
    """Reconcile loop: desired topologies -> services out, plumbing, DNS, flows, services in
    -> status reports."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        client = consul_client(config.consul)
        client.http.connections_timeout = config.consul_timeout
        self.store = Store(client, config.prefix)
        self.bridge = Bridge(config.bridge, config.ovsdb, detect_datapath())
        self.wake = threading.Event()
        self.failover = ExitFailover(  # a command exits: out of VIPs and Consul at once
            client, self.wake.set,
            register=lambda inst, passing: self.discovery.register(inst, passing))
        self._ports: dict[str, int] | None = None  # port name -> ofport, of the last pass
        self.plumber = Plumber(self.bridge, config.state_dir, netns_prefix=config.netns_prefix,
                               on_exit=self.failover.exited, wake=self.wake.set,
                               runtime=config.runtime)
        self.stopping = threading.Event()
        self.hosts = HostsWatch(self.store.client, config.prefix, self.wake.set, self.stopping)
        self.desired: DesiredState | None = None  # None until first read
        self._refused: set[str] = set()  # desired topologies this host does not realise
        self._reported: dict[str, dict[str, Any]] = {}
        self._earlier_reports_read = False  # reports an earlier daemon left (see _report)
        self.fresh = FreshInstances(self.failover.down)  # seen answering, not in Consul yet
        self.discovery = ServiceSync(self.store.client, self.fresh)
        self._ready = partial(register_when_ready, netns=container_netns(config.netns_prefix))
        self._early = partial(EarlyChecks, netns=container_netns(config.netns_prefix))
        self.health = HealthWatch(self.store.client, self.wake.set)
        self._service_topologies: set[str] = set()  # topologies whose services we registered
        upstreams = self.upstreams = upstream_servers(config.upstream_dns)
        self.dns = DnsProxy(parse_server(config.consul_dns, 8600), port=config.dns_port,
                            health=consul_health(config.consul, config.consul_timeout),
                            upstreams=(lambda: upstreams) if upstreams else None)
        self.dns.fresh = self.fresh
        self.dns.catalog = CatalogNames(consul_services(self.store.client))
        self.consul_ok = True  # False once a Consul call of the current pass failed
        self._outage = False  # Consul calls have been failing (logged once per outage)
        self.app: Any = None
        self.rescheduler = Rescheduler(
            self.store, config.host_id, session_check_id(host_inventory.service_id(config.prefix)),
            config.reschedule_after, self.stopping)
        self.monitor = Monitor(self, config.metrics)  # metrics, /healthz, events
        self.hostnat = HostNat(config.bridge, config.state_dir)  # the host's part of egress
        self.forwarding = ForwardingCheck()  # interfaces not yet seen forwarding

    # --- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        """Start the controller app and the KV watch, then reconcile until stopped."""
        self.monitor.start()
        c = self.config
        registration.start(self.store.client, c.prefix, c.host_id, {
            "pid": os.getpid(), "bridge": c.bridge, "of_port": c.of_port,
            "tunnel_ip": c.tunnel_ip, "datapath": self.bridge.datapath,
            "underlay_mtu": c.underlay_mtu}, self.stopping)
        self.app, _ = start_controller(c.of_host, c.of_port, datapath_id(c.bridge))
        self.app.wake = self.wake
        self.bridge.ensure(f"tcp:{c.of_host}:{c.of_port}")
        if c.tunnel_ip:
            self.bridge.ensure_tunnel(c.tunnel_ip)
        threading.Thread(target=self._watch, name="kv-watch", daemon=True).start()
        self.hosts.start()
        self.dns.catalog.start()
        self.rescheduler.start()
        self.hostnat.start()
        LOG.info("controller for bridge %s on %s:%d, host %s", c.bridge, c.of_host, c.of_port,
                 c.host_id)
        while not self.stopping.is_set():
            wait = self.config.resync_seconds if self.consul_ok else self.config.retry_seconds
            self.wake.wait(wait)
            self.wake.clear()
            if self.desired is not None:
                self.consul_ok = True  # until a call of this pass fails
                try:
                    with self.monitor.pass_timer():
                        self.reconcile()
                except Exception:  # noqa: BLE001 - a bug or an outage: log, retry soon
                    LOG.exception("reconcile failed; retrying")
                    self.consul_ok = False
                if self.consul_ok and self._outage:
                    LOG.warning("the Consul agent answers again")
                    self._outage = False
        self.hostnat.shutdown()  # stopped for good: the host's egress settings go

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.dns.close()
        self.monitor.stop()

    def _consul_failed(self, what: str, exc: Exception) -> None:
        if not self._outage:
            LOG.warning("%s: %s (retrying every %.0f s)", what, exc, self.config.retry_seconds)
        self._outage = True
        self.consul_ok = False

    def _watch(self) -> None:
        index = None
        failing = False
        while not self.stopping.is_set():
            try:
                new_index, topologies = self.store.read_topologies(index, wait="30s")
            except Exception as exc:  # noqa: BLE001 - Consul down: retry, keep last view
                if not failing:
                    LOG.warning("cannot read desired state from Consul: %s", exc)
                failing = True
                time.sleep(0.5)
                continue
            if failing:  # the agent answers again: resync now (it may have lost services)
                LOG.info("Consul answers again; resyncing")
                failing = False
                self.wake.set()
            if new_index != index or self.desired is None:
                log_skipped(self.desired, topologies)
                self.desired = topologies
                self.wake.set()
            index = new_index

    def site(self) -> Site | None:
        """This host's place in the cluster; None until its own host record is in KV."""
        return site_of(self.hosts.records, self.config.host_id, self.config.netns_prefix,
                       self.bridge.datapath == "netdev" and bool(self.config.tunnel_ip))

    # --- one pass --------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Bring plumbing, flows, DNS, services and reports in line with the desired state.

        Instances that are no longer wanted leave Consul before their containers go; new or
        changed ones are registered once their containers are plumbed and the flows are in.
        """
        site = self.site()
        if site is None:  # registration claims this host's slot: wait for it
            return self._retry()
        phases = Phases()
        desired, refused = realisable(self.desired or DesiredState())
        plans: list[TopologyPlan] = []
        errors: dict[str, str] = {}
        for name, stored in desired.items():
            try:
                plans.append(plan_topology(stored.topology, stored.allocation,
                                           stored.placement, site))
            except Exception as exc:  # noqa: BLE001 - reported to the user through `up`
                errors[name] = f"cannot plan topology: {exc}"
        if self.failover.take_news():  # a command exited: out of its VIPs before the rest
            self._program_now(plans)
        services = self._plan_services(desired, errors, site)
        removed = services is not None and self._apply_services(
            SyncPlan([], services.deregister), desired, errors
        )
        local = [plan.local_view() for plan in plans]  # the containers this host runs
        phases.lap("plan")
        try:
            ports = self.plumber.reconcile(local, defer_runtime=True)  # started below
        except Exception as exc:  # noqa: BLE001
            LOG.exception("plumbing failed")
            for plan in plans:
                errors.setdefault(plan.name, f"plumbing failed: {exc}")
            ports = {
                name: port.ofport for name, port in self.bridge.owned_ports().items()
                if port.ofport and port.ofport > 0
            }
        self._ports = ports
        phases.lap("plumbing")
        self.failover.settle(self.plumber.running)
        self._serve_dns(plans, errors)
        plans = self.hostnat.sync(plans, ports, errors)
        self.health.watch((p.name, s.name) for p in plans for s in p.services)
        passing = self.failover.adjust(plans, self.health.passing())
        tunnel_port = self._tunnel_port()
        compiled = compile_pipeline(plans, ports, passing, tunnel_port)
        phases.lap("dns, nat, compile")
        self.app.tunnel_peers = (tunnel_peers(site, tunnel_port)
                                 if self.bridge.datapath == "netdev" else None)
        early = self._early(services.register) if services is not None else None
        pending: dict[str, str] = {}
        self.forwarding.plumbed(self.plumber.plumbed)
        if not self.app.connected.is_set():
            for plan in plans:
                pending[plan.name] = f"waiting for bridge {self.config.bridge} to connect"
        elif not self.app.program(compiled.flows, compiled.groups):
            for plan in plans:
                errors.setdefault(plan.name, f"bridge {self.config.bridge}: "
                                  f"{self.app.failure or 'flows not applied'}")
        elif forwarding := self.forwarding.check(local):  # `up` waits until they forward
            pending.update((name, why) for name, why in forwarding.items() if name not in errors)
            self._retry()
        phases.lap("flows")
        self.plumber.start_deferred()  # image containers: once their flows are in
        if services is not None:  # instances with checks: once they pass, or after 1 s
            added = self._apply_services(SyncPlan(services.register, []), desired, errors,
                                         ready=partial(self._ready, early=early))
            if removed and added:
                self._service_topologies = set(desired)
        phases.lap("services")
        self._report(desired, local, ports, errors, pending, len(compiled.flows), passing)
        self._report_refused(refused)
        self.monitor.reported(self._reported)
        phases.lap("report")
        (LOG.info if phases.total() > 0.5 else LOG.debug)("pass took %s", phases)

    def _retry(self) -> None:
        """Another pass in ``retry_seconds``."""
        retry = threading.Timer(self.config.retry_seconds, self.wake.set)
        retry.daemon = True
        retry.start()

    def _program_now(self, plans: list[TopologyPlan]) -> None:
        """Program the flows with the ports of the last pass and without the instances whose
        command exited: the VIPs let them go without waiting for the plumbing."""
        if self._ports is not None and self.app.connected.is_set():
            plans = self.hostnat.usable(plans)
            passing = self.failover.adjust(plans, self.health.passing())
            compiled = compile_pipeline(plans, self._ports, passing, self._tunnel_port())
            self.app.program(compiled.flows, compiled.groups)

    def _tunnel_port(self) -> int | None:
        """The bridge's tunnel port number when this host has a tunnel address."""
        return self.bridge.tunnel_ofport() if self.config.tunnel_ip else None

    def _plan_services(
        self, desired: dict[str, StoredTopology], errors: dict[str, str], site: Site
    ) -> SyncPlan | None:
        """What to change in the local agent; None when it cannot be read."""
        instances = [  # each host registers the instances it runs, with its own agent
            inst for stored in desired.values()
            for inst in desired_instances(stored.topology, stored.allocation)
            if site.host_of(inst.meta_dict.get(CONTAINER_KEY, ""), stored.placement) == site.host
        ]
        self.failover.know(instances)
        owned = self._service_topologies | set(desired)
        try:
            return self.discovery.plan(instances, owned, complete=True)
        except Exception as exc:  # noqa: BLE001 - Consul agent down: retried in a second
            self._consul_failed("cannot reach the Consul agent", exc)
            for name in desired:
                errors.setdefault(name, f"cannot reach the Consul agent: {exc}")
            return None

    def _apply_services(
        self, plan: SyncPlan, desired: dict[str, StoredTopology], errors: dict[str, str],
        ready: ReadyGate | None = None,
    ) -> bool:
        """Apply part of a sync plan; False (and the reason in ``errors``) when some failed."""
        try:
            self.discovery.apply(plan, ready)
            return True
        except SyncError as exc:
            self._consul_failed("service sync failed", exc)
            for name in desired:
                errors.setdefault(name, f"service registration failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - Consul agent down: retried in a second
            self._consul_failed("cannot reach the Consul agent", exc)
            for name in desired:
                errors.setdefault(name, f"cannot reach the Consul agent: {exc}")
        return False

    def _serve_dns(self, plans: list[TopologyPlan], errors: dict[str, str]) -> None:
        """Answer DNS on the host's address on every network (containers' nameserver)."""
        topology_of = {str(n.host_leg.ip): p.name for p in plans for n in p.networks}
        every = (self.desired or DesiredState()).topologies.values()  # who declares what
        failed = self.dns.listen(scopes_of(plans, (s.topology for s in every)))
        for address, why in failed.items():
            LOG.error("DNS for containers: %s", why)
            errors.setdefault(topology_of[address], f"containers cannot resolve names: {why} "
                              f"(is another DNS server bound to port {self.config.dns_port} "
                              "on every address of this host?)")

    def _report(
        self, desired: dict[str, StoredTopology], plans: list[TopologyPlan],
        ports: dict[str, int], errors: dict[str, str], pending: dict[str, str],
        flow_count: int,
        passing: dict[ServiceKey, frozenset[str]],
    ) -> None:
        host = self.config.host_id
        if not self._earlier_reports_read:  # a daemon killed mid-`down` left its report
            try:
                _, keys = self.store.client.kv.get(self.store.status_key(host, ""), keys=True)
                for key in keys or []:
                    self._reported.setdefault(key.rsplit("/", 1)[-1], {})
                self._earlier_reports_read = True
            except Exception as exc:  # noqa: BLE001 - read on the next pass
                self._consul_failed("cannot read earlier status reports", exc)
        observed = self.plumber.observe()
        problems = self.plumber.problems
        for plan in plans:  # this host's part of each topology
            stored = desired[plan.name]
            rows = [{**row, "host": host}
                    for row in rows_of.container_rows(plan, ports, observed, problems)]
            short = rows_of.data_path_problem(plan, rows, problems)
            if short and plan.name not in errors and plan.name not in pending:
                errors[plan.name] = short  # repaired on the next pass, which comes soon
                self._retry()
            report = {
                "digest": stored.digest,
                "state": "error" if plan.name in errors else
                         "pending" if plan.name in pending else "converged",
                "error": errors.get(plan.name, "") or pending.get(plan.name, ""),
                "daemon_pid": os.getpid(), "bridge": self.config.bridge,
                "upstream_dns": describe_upstreams(self.upstreams),  # for `resolve`
                "flows": flow_count,
                "counters": {
                    "flow_mods": self.app.flow_mods_sent, "bundles": self.app.bundles_sent,
                    "ovsdb_writes": self.bridge.writes,
                    "registrations": self.discovery.registrations,
                    "deregistrations": self.discovery.deregistrations,
                },
                "containers": rows, "networks": rows_of.network_rows(plan),
                "services": rows_of.service_rows(plan, passing),
            }
            if self._reported.get(plan.name) != report:
                try:
                    self.store.report(host, plan.name, report)
                except Exception as exc:  # noqa: BLE001 - written on the next pass
                    self._consul_failed("cannot write the status report", exc)
                    continue
                self._reported[plan.name] = report
        for name in list(self._reported):
            if name not in desired and name not in self._refused:
                try:
                    self.store.clear_report(host, name)
                except Exception as exc:  # noqa: BLE001 - cleared on the next pass
                    self._consul_failed("cannot clear a status report", exc)
                    continue
                del self._reported[name]

    def _report_refused(self, refused: dict[str, tuple[str, str]]) -> None:
        """Report each desired topology this host does not realise as ``error``, with why."""
        host = self.config.host_id
        for name, (digest, why) in refused.items():
            report = rows_of.refused(digest, why, self.config.bridge)
            if self._reported.get(name) == report:
                continue
            if name not in self._refused:
                LOG.error("not realising topology %s: %s", name, why)
            try:
                self.store.report(host, name, report)
            except Exception as exc:  # noqa: BLE001 - written on the next pass
                self._consul_failed("cannot write the status report", exc)
                continue
            self._reported[name] = report
        self._refused = set(refused)
