"""The per-host agent behind ``switchboard controller``.

It watches the desired state in Consul KV, plumbs this host's containers, has the os-ken app
program the bridge, and reports per topology whether the host converged.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.compiler import compile_pipeline
from controller.runtime import start_controller
from discovery.health import HealthWatch
from discovery.instances import desired_instances
from discovery.sync import ServiceSync, SyncError
from ovsdb.bridge import Bridge
from ovsdb.plumbing import Plumber
from switchboard.hostplan import TopologyPlan, plan_topology
from switchboard.store import Store, StoredTopology, consul_client

LOG = logging.getLogger("switchboard.daemon")


@dataclass
class DaemonConfig:
    """Where the daemon finds its parts; every field has a command-line option."""

    consul: str = "http://127.0.0.1:8500"
    prefix: str = "switchboard"
    bridge: str = "sb-int"
    of_host: str = "127.0.0.1"
    of_port: int = 6653
    state_dir: Path = Path("/var/lib/switchboard")
    host_id: str = field(default_factory=socket.gethostname)
    resync_seconds: float = 10.0


class Daemon:
    """Reconcile loop: desired topologies -> plumbing -> flows -> status reports."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.store = Store(consul_client(config.consul), config.prefix)
        self.bridge = Bridge(config.bridge)
        self.plumber = Plumber(self.bridge, config.state_dir)
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.desired: dict[str, StoredTopology] | None = None  # None until first read
        self._reported: dict[str, dict[str, Any]] = {}
        self.discovery = ServiceSync(self.store.client)
        self.health = HealthWatch(self.store.client, self.wake.set)
        self._service_topologies: set[str] = set()  # topologies whose services we registered
        self.app: Any = None

    # --- lifecycle -------------------------------------------------------------------------
    def run(self) -> None:
        """Start the controller app and the KV watch, then reconcile until stopped."""
        self.app, _ = start_controller(self.config.of_host, self.config.of_port)
        self.app.wake = self.wake
        self.bridge.ensure(f"tcp:{self.config.of_host}:{self.config.of_port}")
        threading.Thread(target=self._watch, name="kv-watch", daemon=True).start()
        LOG.info("controller for bridge %s on %s:%d, host %s", self.config.bridge,
                 self.config.of_host, self.config.of_port, self.config.host_id)
        while not self.stopping.is_set():
            self.wake.wait(self.config.resync_seconds)
            self.wake.clear()
            if self.desired is not None:
                self.reconcile()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _watch(self) -> None:
        index = None
        while not self.stopping.is_set():
            try:
                new_index, topologies = self.store.read_topologies(index, wait="30s")
            except Exception as exc:  # noqa: BLE001 - Consul down: retry, keep last view
                LOG.warning("cannot read desired state from Consul: %s", exc)
                time.sleep(1)
                continue
            if new_index != index or self.desired is None:
                self.desired = topologies
                self.wake.set()
            index = new_index

    # --- one pass --------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Bring plumbing, flows and reports in line with the desired topologies."""
        desired = dict(self.desired or {})
        plans: list[TopologyPlan] = []
        errors: dict[str, str] = {}
        for name, stored in desired.items():
            try:
                plans.append(plan_topology(stored.topology, stored.allocation))
            except Exception as exc:  # noqa: BLE001 - reported to the user through `up`
                errors[name] = f"cannot plan topology: {exc}"
        try:
            ports = self.plumber.reconcile(plans)
        except Exception as exc:  # noqa: BLE001
            LOG.exception("plumbing failed")
            for plan in plans:
                errors.setdefault(plan.name, f"plumbing failed: {exc}")
            ports = {
                name: port.ofport for name, port in self.bridge.owned_ports().items()
                if port.ofport and port.ofport > 0
            }
        self.health.watch((p.name, s.name) for p in plans for s in p.services)
        compiled = compile_pipeline(plans, ports, self.health.passing())
        pending: dict[str, str] = {}
        if not self.app.connected.is_set():
            for plan in plans:
                pending[plan.name] = (
                    f"waiting for bridge {self.config.bridge} to connect to the controller"
                )
        elif not self.app.program(compiled.flows, compiled.groups):
            for plan in plans:
                errors.setdefault(plan.name, f"bridge {self.config.bridge} refused flows "
                                  "(see the controller log)")
        self._sync_services(desired, errors)
        self._report(desired, plans, ports, errors, pending, len(compiled.flows))

    def _sync_services(self, desired: dict[str, StoredTopology], errors: dict[str, str]) -> None:
        """Register every declared service instance; deregister those of removed topologies."""
        instances = [
            inst for stored in desired.values()
            for inst in desired_instances(stored.topology, stored.allocation)
        ]
        owned = self._service_topologies | set(desired)
        try:
            self.discovery.reconcile(instances, owned, complete=True)
            self._service_topologies = set(desired)
        except SyncError as exc:
            LOG.error("service sync failed: %s", exc.errors)
            for name in desired:
                errors.setdefault(name, f"service registration failed: {exc.errors}")
        except Exception as exc:  # noqa: BLE001 - Consul agent down: retried next pass
            LOG.warning("cannot reach the Consul agent: %s", exc)
            for name in desired:
                errors.setdefault(name, f"cannot reach the Consul agent: {exc}")

    def _report(
        self,
        desired: dict[str, StoredTopology],
        plans: list[TopologyPlan],
        ports: dict[str, int],
        errors: dict[str, str],
        pending: dict[str, str],
        flow_count: int,
    ) -> None:
        host = self.config.host_id
        observed = self.plumber.observe()
        for plan in plans:
            stored = desired[plan.name]
            report = {
                "digest": stored.digest,
                "state": "error" if plan.name in errors else
                         "pending" if plan.name in pending else "converged",
                "error": errors.get(plan.name, "") or pending.get(plan.name, ""),
                "daemon_pid": os.getpid(),
                "bridge": self.config.bridge,
                "flows": flow_count,
                "counters": {
                    "flow_mods": self.app.flow_mods_sent,
                    "bundles": self.app.bundles_sent,
                    "ovsdb_writes": self.bridge.writes,
                    "registrations": self.discovery.registrations,
                    "deregistrations": self.discovery.deregistrations,
                },
                "containers": container_rows(plan, ports, observed),
                "networks": [
                    {"name": n.name, "subnet": str(n.subnet), "gateway": str(n.gateway),
                     "host_ip": str(n.host_leg.ip), "mtu": n.mtu}
                    for n in plan.networks
                ],
            }
            if self._reported.get(plan.name) != report:
                self.store.report(host, plan.name, report)
                self._reported[plan.name] = report
        for name in list(self._reported):
            if name not in desired:
                self.store.clear_report(host, name)
                del self._reported[name]


def container_rows(
    plan: TopologyPlan, ports: dict[str, int], observed: dict[str, Any]
) -> list[dict[str, Any]]:
    """One status row per container interface."""
    rows = []
    for container in plan.containers:
        for ep in container.endpoints:
            seen = observed.get(ep.port, {})
            running = seen.get("running")
            if container.attach_pid is not None:
                state = "attached" if seen.get("netns_exists") else "missing"
            elif container.command is None:
                state = "up" if seen.get("netns_exists") else "missing"
            else:
                state = "running" if running else "stopped"
            rows.append({
                "container": container.name, "network": ep.network, "netns": ep.netns,
                "interface": ep.ifname, "ip": str(ep.ip), "mac": ep.mac, "port": ep.port,
                "ofport": ports.get(ep.port), "state": state,
            })
    return rows
