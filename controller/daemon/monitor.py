"""The daemon's own observability: Prometheus metrics and ``/healthz`` on one HTTP address
(``switchboard controller --metrics``, loopback by default), and its event log.

:class:`Monitor` is the one object the daemon holds for all of it; it wires the hooks
(the rescheduler's events, the DNS server's answer counter) and runs the threads: the HTTP
server, the event writer (controller.daemon.events) and the instance health follower. The daemon
calls :meth:`Monitor.pass_timer` around each reconcile pass and :meth:`Monitor.reported`
with its reports; neither waits for anything.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, disable_created_metrics, make_wsgi_app
from prometheus_client.process_collector import ProcessCollector

from controller.daemon.events import EventLog, InstanceHealth
from controller.daemon.metrics import DaemonCollector, Instruments, Sources
from controller.daemon.startup import parse_metrics
from sbcore.state.store import consul_client

if TYPE_CHECKING:
    from controller.daemon.config import DaemonConfig
    from controller.daemon.failover import Rescheduler
    from discovery.dnsproxy import DnsProxy
    from ovsdb.bridge import Bridge
    from sbcore.state.store import Store


LOG = logging.getLogger("switchboard.monitor")


class DaemonParts(Protocol):
    """What the monitor reads and hooks on the daemon that holds it (so that the
    monitor does not import the daemon, which imports the monitor)."""

    _outage: bool
    app: Any
    bridge: Bridge
    config: DaemonConfig
    dns: DnsProxy
    rescheduler: Rescheduler
    store: Store


def judge(openflow: bool, ovsdb: bool, consul: bool, leader: bool,
          pass_age: float | None, max_age: float) -> tuple[bool, list[str]]:
    """Healthy or not, and why not: OVS connected (OpenFlow and OVSDB), the Consul agent
    answers, and a reconcile pass ended less than ``max_age`` seconds ago. Pure."""
    problems = []
    if not openflow:
        problems.append("the bridge is not connected to the controller (OpenFlow)")
    if not ovsdb:
        problems.append("ovsdb-server is not connected")
    if not consul:
        problems.append("the Consul agent does not answer")
    elif not leader:
        problems.append("the Consul cluster has no leader")
    if pass_age is None:
        problems.append("no reconcile pass has ended yet")
    elif pass_age > max_age:
        problems.append(f"the last reconcile pass ended {pass_age:.0f} s ago "
                        f"(more than {max_age:.0f} s)")
    return not problems, problems


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Scrapes and health checks are not logged."""


class Monitor:
    """Metrics, health and events of one daemon."""

    def __init__(self, daemon: DaemonParts, address: str | None) -> None:
        self.daemon = daemon
        self.address = parse_metrics(address) if address else None
        config = daemon.config
        self.max_age = max(3 * config.resync_seconds, 15.0)
        disable_created_metrics()  # no *_created series: counters start with the daemon
        self.registry = CollectorRegistry()
        self.instruments = Instruments(self.registry)
        self._metrics_app = make_wsgi_app(self.registry)
        ProcessCollector(registry=self.registry)
        self.events = EventLog(daemon.store, config.host_id)
        self.instances = InstanceHealth(daemon.store.client, self.events, self._owned)
        self.registry.register(DaemonCollector(Sources(
            app=lambda: daemon.app, bridge=daemon.bridge, reports=self._reports,
            consul_up=lambda: not daemon._outage, instances=lambda: self.instances.statuses,
            events=lambda: (self.events.written, self.events.dropped, self.events.pending()),
        )))
        daemon.rescheduler.events = self.events  # container.moved, host.up/down
        daemon.dns.on_answer = self.instruments.dns_answer
        self._latest: dict[str, Any] = {}
        self._observed = False
        self.last_pass: float | None = None  # monotonic end of the last pass
        self._failing = False
        self._consul = consul_client(config.consul)
        self._consul.http.connections_timeout = 1.0
        self._server: _Server | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Serve HTTP (when an address is set) and start the event threads."""
        if self.address is not None:
            host, port = self.address
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server_class = type("Server", (_Server,), {"address_family": family})
            try:
                self._server = make_server(host, port, self.wsgi, server_class, _Quiet)
            except OSError as exc:
                LOG.error("metrics and health: cannot listen on %s:%d: %s", host, port,
                          exc.strerror)
            else:
                threading.Thread(target=self._server.serve_forever, name="metrics-http",
                                 daemon=True).start()
                LOG.info("metrics on http://%s/metrics, health on /healthz",
                         _hostport(host, port))
        self.events.start()
        self.instances.start()
        self.events.emit("controller.started", f"controller started (pid {os.getpid()}, "
                         f"bridge {self.daemon.config.bridge})")

    def stop(self) -> None:
        self.instances.stop()
        self.events.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- hooks of the reconcile loop -------------------------------------------------------
    @contextlib.contextmanager
    def pass_timer(self) -> Iterator[None]:
        """Time one reconcile pass; a pass that raises is counted failed (and an event when
        the passes before it went through)."""
        started = time.perf_counter()
        try:
            yield
        except Exception as exc:
            self._ended(started, "failed")
            if not self._failing:
                self.events.emit("reconcile.failed", f"reconcile pass failed: {exc}")
            self._failing = True
            raise
        self._ended(started, "ok")
        if self._failing:
            self.events.emit("reconcile.recovered", "reconcile passes go through again")
        self._failing = False

    def _ended(self, started: float, result: str) -> None:
        took = time.perf_counter() - started
        self.instruments.reconcile_seconds.observe(took)
        self.instruments.reconcile_passes.labels(result).inc()
        self.instruments.last_pass.set(time.time())
        self.last_pass = time.monotonic()

    def reported(self, reports: dict[str, Any]) -> None:
        """This host's reports after a pass (topology -> report)."""
        if reports != self._latest or not self._observed:
            self._observed = True
            self._latest = dict(reports)
            self.events.observe(self._latest)
            self.instances.refresh()

    def _reports(self) -> dict[str, Any]:
        return self._latest

    def _owned(self) -> set[tuple[str, str]]:
        return {(topology, str(row.get("container")))
                for topology, report in self._latest.items()
                for row in report.get("containers") or []}

    # --- HTTP ----------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """The health document of ``/healthz``."""
        app = self.daemon.app
        openflow = bool(app is not None and app.connected.is_set())
        ovsdb = self.daemon.bridge.connected()
        try:
            leader = bool(self._consul.status.leader())
            consul = True
        except Exception:  # noqa: BLE001 - any failure: the agent does not answer
            consul = leader = False
        age = None if self.last_pass is None else time.monotonic() - self.last_pass
        healthy, problems = judge(openflow, ovsdb, consul, leader, age, self.max_age)
        return healthy, {
            "healthy": healthy, "problems": problems, "host": self.daemon.config.host_id,
            "ovs": {"openflow": openflow, "ovsdb": ovsdb, "bridge": self.daemon.config.bridge},
            "consul": {"reachable": consul, "leader": leader},
            "reconcile": {"last_pass_age_seconds": None if age is None else round(age, 3),
                          "max_age_seconds": self.max_age, "failing": self._failing},
        }

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/healthz", "/health"):
            healthy, doc = self.health()
            body = json.dumps(doc, indent=2).encode() + b"\n"
            start_response("200 OK" if healthy else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]
        if path in ("/metrics", "/"):
            return self._metrics_app(environ, start_response)
        body = b"not found: try /metrics or /healthz\n"
        start_response("404 Not Found", [("Content-Type", "text/plain"),
                                          ("Content-Length", str(len(body)))])
        return [body]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
