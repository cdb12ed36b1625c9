"""The ``switchboard`` command: thin wrappers over the model, the store and the daemon."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import click
import consul
from rich.markup import escape
from rich.table import Table

from sbcore.model import TopologyError, load_topology_file
from sbcore.plan.placement import PlacementError
from sbcore.state import hosts as host_inventory
from sbcore.state import reach
from sbcore.state.store import DEFAULT_CONSUL, Store
from sbcore.state.token import TokenError
from sbcore.state.token import give as give_token
from sbcore.state.token import resolve as resolve_token
from switchboard.apply import ApplyError, apply_topology, remove_topology
from switchboard.cli.output import console, err_console
from switchboard.cli.output import fail as _fail
from switchboard.cli.statusview import host_states, merged_rows


def _store(ctx: click.Context) -> Store:
    return Store(reach.consul_client(ctx.obj["consul"]), ctx.obj["prefix"])



# Commands defined in modules of their own, imported only when run (or listed by --help):
# `up` does not pay for the imports of `services`, `trace` or `lab`.
_LAZY = {
    "controller": "switchboard.cli.controller:controller",
    "hosts": "switchboard.cli.hosts:hosts",
    "trace": "switchboard.cli.trace:trace",
    "services": "switchboard.cli.services:services",
    "resolve": "switchboard.cli.services:resolve",
    "graph": "switchboard.cli.ops:graph_cmd",
    "plan": "switchboard.cli.ops:plan",
    "logs": "switchboard.cli.ops:logs_cmd",
    "events": "switchboard.cli.events:events_cmd",
    "lab": "switchboard.cli.lab:lab",
}


class _Group(click.Group):
    """Every command's "a part is down" failure becomes one error line and exit status 1.
    The commands of ``_LAZY`` are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY and cmd_name not in self.commands:
            module, _, attr = _LAZY[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except reach.Unreachable as exc:
            _fail(str(exc))
        except TokenError as exc:
            _fail(str(exc))
        except consul.ConsulException as exc:
            _fail(reach.consul_refused((ctx.obj or {}).get("consul", DEFAULT_CONSUL), exc,
                                       _token_source()))


def _token_source() -> str:
    try:
        return resolve_token().source
    except TokenError:
        return "no token"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--consul", envvar="SWITCHBOARD_CONSUL", default=DEFAULT_CONSUL,
              show_default=True, help="Consul HTTP address (holds the desired state).")
@click.option("--prefix", envvar="SWITCHBOARD_PREFIX", default="switchboard",
              show_default=True, help="Consul KV prefix of Switchboard's keys.")
@click.option("--lab-host", envvar="SWITCHBOARD_LAB_HOST", default=None,
              help="Run as if on this `switchboard lab` host (enters its network namespace).")
@click.option("--token", default=None, metavar="SECRET",
              help="Consul ACL token [default: SWITCHBOARD_TOKEN, the file in "
                   "SWITCHBOARD_TOKEN_FILE, CONSUL_HTTP_TOKEN, $SWITCHBOARD_STATE/token].")
@click.pass_context
def main(ctx: click.Context, consul: str, prefix: str, lab_host: str | None,
         token: str | None) -> None:
    """Switchboard: container networks on Open vSwitch with Consul service discovery."""
    if lab_host and ctx.invoked_subcommand != "lab":  # before any thread or connection
        from lab.enter import enter_host

        enter_host(lab_host)
    give_token(token)
    ctx.obj = {"consul": consul, "prefix": prefix}


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--timeout", default=120.0, show_default=True,
              help="Seconds to wait for the host to converge.")
@click.option("--no-wait", is_flag=True, help="Write the desired state and return.")
@click.option("--dry-run", is_flag=True,
              help="Change nothing; show what would change, as `switchboard plan` does "
                   "(exit status 0: nothing, 2: changes, 1: an error).")
@click.pass_context
def up(ctx: click.Context, file: Path, timeout: float, no_wait: bool, dry_run: bool) -> None:
    """Validate FILE, store it as desired state and wait until every host it is placed on
    has converged."""
    if dry_run:
        ctx.invoke(ctx.parent.command.get_command(ctx, "plan"), file=file)
    try:
        topology = load_topology_file(file)
    except TopologyError as exc:
        _fail(f"{file} is not a valid topology; nothing was changed.\n{exc}", 2)
    store = _store(ctx)
    if not no_wait and (missing := _no_controller(ctx, store)):
        raise missing  # before anything is written
    with console.status(f"waiting for the hosts to converge on {topology.name}") as status:
        def progress(reports: dict[Any, dict[str, Any]], hosts: list[str]) -> None:
            by_host = {host: report for (host, _), report in reports.items()}
            parts = []
            for host in hosts or sorted(by_host):
                report = by_host.get(host)
                if report is None:
                    parts.append(f"{host}: no report yet")
                    continue
                rows = report.get("containers", [])
                ready = sum(1 for r in rows if r["state"] in ("running", "up", "attached"))
                note = f" ({report['error']})" if report.get("state") == "pending" else ""
                parts.append(f"{host}: {ready}/{len(rows)} interfaces ready, "
                             f"{report.get('flows', 0)} flows{note}")
            if parts:
                status.update("; ".join(parts))
        try:
            digest, report = apply_topology(store, topology, str(file.resolve()), timeout,
                                            not no_wait, progress)
        except TopologyError as exc:
            _fail(f"{file} cannot be applied; nothing was changed.\n{exc}", 2)
        except PlacementError as exc:
            _fail(f"{file} cannot be placed; nothing was changed.\n{exc}", 2)
        except ApplyError as exc:
            _fail(str(exc))
    if report is None:
        console.print(f"topology [bold]{topology.name}[/bold] stored ({digest})")
        return
    for host, containers in report.get("waiting", {}).items():
        err_console.print(f"[yellow]warning:[/yellow] host {escape(host)} is down: "
                          f"{escape(', '.join(containers))} wait for it (or move, unless they "
                          "name their host; see `switchboard status`)", highlight=False,
                          soft_wrap=True)
    if report.get("waiting") and not report["containers"]:
        console.print(f"topology [bold]{topology.name}[/bold] stored ({digest}); no host it "
                      "is placed on is ready")
        return
    count = len({r["container"] for r in report["containers"]})
    hosts = sorted({r.get("host") for r in report["containers"] if r.get("host")})
    on = f" on {len(hosts)} hosts" if len(hosts) > 1 else ""
    console.print(f"topology [bold]{topology.name}[/bold] is up: "
                  f"{len(topology.networks)} networks, {count} containers{on}")


def _no_controller(
    ctx: click.Context, store: Store, hint: str = reach.NO_CONTROLLER_HINT, grace: bool = True
) -> reach.Unreachable | None:
    """What to say when no host is ready under the prefix (after a few seconds' grace for
    a daemon that is starting); else None."""
    found = host_inventory.wait_ready(store.client, store.prefix,
                                      host_inventory.GRACE if grace else 0)
    if found.ready():
        return None
    return reach.no_controller(ctx.obj["consul"], store.prefix, host_inventory.describe(found),
                               hint)


@main.command()
@click.argument("name")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds to wait for every host to let go of it.")
@click.pass_context
def down(ctx: click.Context, name: str, timeout: float) -> None:
    """Remove topology NAME: its containers, ports, flows, keys and services."""
    store = _store(ctx)
    if store.reports(name) and (missing := _no_controller(
        ctx, store, f"start it with {reach.START_CONTROLLER}: it removes what the topology "
        "created; nothing was changed",
    )):
        raise missing
    with console.status(f"removing {name}"):
        try:
            removed = remove_topology(store, name, timeout)
        except ApplyError as exc:
            _fail(str(exc))
    if not removed:
        _fail(f"no topology named {name!r} is applied (see `switchboard status`)")
    console.print(f"topology [bold]{name}[/bold] removed")


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def status(ctx: click.Context, name: str | None, as_json: bool) -> None:
    """Show topologies, their networks and containers, as each host reports them."""
    store = _store(ctx)
    _, state = store.read_topologies()
    applied = state.topologies
    reports = store.reports(name, state.skipped)
    for key, why in sorted(state.skipped.items()):  # foreign or corrupted keys
        err_console.print(f"[yellow]warning:[/yellow] {escape(key)} skipped: {escape(why)}",
                          highlight=False, soft_wrap=True)
    topologies = []
    try:
        down = {h: r.reason for h, r in host_inventory.read_hosts(store.client,
                                                                  store.prefix).items()
                if not r.ready}
    except Exception:  # noqa: BLE001 - no health to judge by: show the reports as they are
        down = {}
    for topo_name, stored in sorted(applied.items()):
        if name and topo_name != name:
            continue
        hosts = {host: r for (host, t), r in reports.items() if t == topo_name}
        containers = merged_rows(hosts, stored.placement, down, frozenset(
            c for c, spec in stored.topology.containers.items() if spec.host))
        added = state.cni.get(topo_name, {})
        for row in containers:  # where each container comes from: its file or CNI
            record = added.get(str(row["container"]))
            row["source"] = "cni" if record else "file"
            if record:
                row["container_id"] = record["container_id"]
        topologies.append({
            "name": topo_name, "digest": stored.digest, "source": stored.source,
            "hosts": hosts, "placement": stored.placement,
            "down_hosts": {h: why for h, why in down.items() if h in hosts
                           or h in stored.placement.values()},
            "containers": containers,
        })
    if name and not topologies:
        _fail(f"no topology named {name!r} is applied")
    if topologies and (missing := _no_controller(
        ctx, store, f"the reports shown are its last; start it with {reach.START_CONTROLLER}",
        grace=False,
    )):
        err_console.print(f"[yellow]warning:[/yellow] {escape(str(missing))}",
                          highlight=False, soft_wrap=True)
    if as_json:
        click.echo(json.dumps({"topologies": topologies, "skipped": state.skipped}, indent=2,
                              sort_keys=True))
        return
    if not topologies:
        console.print("no topologies applied")
        return
    for topo in topologies:
        _print_topology(topo)


def _print_topology(topo: dict[str, Any]) -> None:
    states = host_states(topo["hosts"], topo["digest"], topo["down_hosts"]) or [
        "no host has reported yet"]
    console.print(f"[bold]{topo['name']}[/bold]  {', '.join(states)}  ({topo['source']})")
    networks: dict[str, dict[str, Any]] = {}
    for host, report in sorted(topo["hosts"].items()):
        if report.get("error"):
            console.print(f"  [red]{host}: {report['error']}[/red]")
        for n in report.get("networks", []):
            networks.setdefault(n["name"], {**n, "host_ips": []})["host_ips"].append(
                n["host_ip"] if len(topo["hosts"]) == 1 else f"{host} {n['host_ip']}")
    nets = Table("network", "subnet", "gateway", "host address", "mtu", box=None)
    for n in networks.values():
        nets.add_row(n["name"], n["subnet"], n["gateway"], ", ".join(n["host_ips"]),
                     str(n["mtu"]))
    console.print(nets)
    rows = Table("container", "host", "network", "namespace", "if", "ip", "mac", "ovs port",
                 "ofport", "state", "restarts", "from", box=None)
    for r in topo["containers"]:
        rows.add_row(r["container"], r["host"], r["network"], r["netns"], r["interface"],
                     r["ip"], r["mac"], r["port"], str(r["ofport"] or "-"), r["state"],
                     str(r.get("restarts", "-")), r.get("source", "file"))
    console.print(rows)
    for r in topo["containers"]:
        for entry in r.get("published") or []:  # HOSTPORT:PORT/PROTO
            host_port, rest = entry.split(":", 1)
            console.print(f"  {r['container']}: host port {host_port}/{rest.split('/')[1]} -> "
                          f"{r['ip']}:{rest}", highlight=False)
    imaged = {r["container"]: r for r in topo["containers"] if r.get("image")}
    for name, r in sorted(imaged.items()):  # image containers: the runtime's side
        ident = r.get("runtime_id") or "no container running"
        console.print(f"  {escape(name)}: image {escape(r['image'])}, {escape(ident)}",
                      highlight=False, soft_wrap=True)
    noted = set()
    for r in topo["containers"]:
        if r.get("problem"):  # what keeps it from working as planned
            console.print(f"  [red]{r['container']}: {r['problem']}[/red]", highlight=False)
        elif r.get("note") and r["container"] not in noted:  # a command that exited
            noted.add(r["container"])
            console.print(f"  [yellow]{escape(r['container'])}: {r['state']}: "
                          f"{escape(r['note'])}[/yellow]", highlight=False, soft_wrap=True)
