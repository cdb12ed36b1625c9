"""``switchboard controller``: the per-host daemon started in the foreground, after the checks
that it can run (one daemon per bridge, ovsdb-server answering, its ports free)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import click
from rich.markup import escape

from switchboard.cli.output import err_console
from switchboard.cli.output import fail as _fail


@click.command()
@click.option("--bridge", envvar="SWITCHBOARD_BRIDGE", default="sb-int", show_default=True,
              help="OVS bridge the containers are plugged into.")
@click.option("--of-port", envvar="SWITCHBOARD_OF_PORT", default=6653, show_default=True,
              help="OpenFlow listen port (on loopback only).")
@click.option("--state-dir", envvar="SWITCHBOARD_STATE", default="/var/lib/switchboard",
              show_default=True, type=click.Path(path_type=Path),
              help="Where container logs and PID files live.")
@click.option("--host-id", envvar="SWITCHBOARD_HOST_ID", default=None,
              help="Name this host reports under (default: the host name).")
@click.option("--ovsdb", envvar="SWITCHBOARD_OVSDB", default=None,
              help="ovsdb-server's address, unix:PATH or tcp:HOST:PORT "
                   "[default: unix:/var/run/openvswitch/db.sock].")
@click.option("--run-dir", envvar="SWITCHBOARD_RUN", default="/run/switchboard",
              show_default=True, type=click.Path(path_type=Path),
              help="Where the per-bridge lock (one daemon per bridge) lives.")
@click.option("--tunnel-ip", envvar="SWITCHBOARD_TUNNEL_IP", default=None,
              help="This host's underlay address for the VXLAN overlay to other hosts "
                   "(default: none; a host alone needs no tunnel).")
@click.option("--netns-prefix", envvar="SWITCHBOARD_NETNS_PREFIX", default="sb-",
              show_default=True,
              help="Prefix of the container namespaces this daemon owns (`switchboard lab` "
                   "gives each simulated host its own).")
@click.option("--reschedule-after", envvar="SWITCHBOARD_RESCHEDULE_AFTER", default=30.0,
              show_default=True, type=click.FloatRange(min=0),
              help="Seconds a host must stay down before its containers that name no host "
                   "are moved to ready hosts (decided by one daemon of the cluster).")
@click.option("--metrics", envvar="SWITCHBOARD_METRICS", default="127.0.0.1:9469",
              show_default=True,
              help="IP:PORT of the HTTP server for Prometheus metrics (/metrics) and the "
                   "daemon's health (/healthz), or off.")
@click.option("--upstream-dns", envvar="SWITCHBOARD_UPSTREAM_DNS", default=None,
              help="DNS servers for the containers' names outside Consul, HOST[:PORT] "
                   "separated by commas, asked in turn (default: the host's own, from "
                   "/etc/resolv.conf, read again when it changes).")
@click.option("--runtime", envvar="SWITCHBOARD_RUNTIME", default="podman", show_default=True,
              type=click.Choice(["podman", "docker"]),
              help="The container runtime that runs image containers (`image:` in a file).")
@click.option("-v", "--verbose", is_flag=True, help="Log every change made.")
@click.pass_context
def controller(
    ctx: click.Context, bridge: str, of_port: int, state_dir: Path, host_id: str | None,
    ovsdb: str | None, run_dir: Path, tunnel_ip: str | None, netns_prefix: str,
    reschedule_after: float, metrics: str, upstream_dns: str | None, runtime: str,
    verbose: bool,
) -> None:
    """Run the per-host daemon: os-ken app, plumbing and status reports (foreground).

    It refuses to start (exit status 1) when another daemon holds the bridge, ovsdb-server
    does not answer, or the OpenFlow port or the metrics address is taken."""
    from controller.daemon.startup import (
        DEFAULT_OVSDB,
        StartError,
        check_metrics,
        consul_warning,
        preflight,
        underlay_mtu,
    )

    ovsdb = ovsdb or DEFAULT_OVSDB
    try:
        mtu = underlay_mtu(tunnel_ip) if tunnel_ip else None
        ctx.obj["lock"] = preflight(bridge, ovsdb, "127.0.0.1", of_port, run_dir)
        check_metrics(metrics)
    except StartError as exc:
        _fail(str(exc))
    if warning := consul_warning(ctx.obj["consul"]):
        err_console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False,
                          soft_wrap=True)
    from controller.daemon.daemon import Daemon, DaemonConfig

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("switchboard").setLevel(logging.INFO)
    config = DaemonConfig(consul=ctx.obj["consul"], prefix=ctx.obj["prefix"], bridge=bridge,
                          of_port=of_port, state_dir=state_dir, ovsdb=ovsdb,
                          tunnel_ip=tunnel_ip, netns_prefix=netns_prefix, underlay_mtu=mtu,
                          reschedule_after=reschedule_after, metrics=metrics,
                          upstream_dns=upstream_dns, runtime=runtime)
    if host_id:
        config.host_id = host_id
    daemon = Daemon(config)

    def terminate(*_: object) -> None:  # stops for good: the host's egress settings go
        daemon.stop()

        def _bounded() -> None:  # a pass under way may take long: do not wait for it
            time.sleep(3)
            daemon.hostnat.shutdown()
            os._exit(0)
        threading.Thread(target=_bounded, daemon=True).start()

    signal.signal(signal.SIGTERM, terminate)
    try:
        daemon.run()
    except KeyboardInterrupt:
        daemon.stop()
        daemon.hostnat.shutdown()
    os._exit(0)  # os-ken's threads do not stop on their own
