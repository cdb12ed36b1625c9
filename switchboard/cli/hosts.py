"""``switchboard hosts``: the hosts as Consul sees them, and ``hosts forget`` for one that has
left the cluster for good (sbcore.state.forget)."""

from __future__ import annotations

import dataclasses
import json

import click
from rich.markup import escape
from rich.table import Table

from sbcore.plan.placement import load_of
from sbcore.state import hosts as host_inventory
from sbcore.state import reach
from sbcore.state.forget import ForgetRefused, forget
from sbcore.state.store import Store
from switchboard.cli.output import console, err_console
from switchboard.cli.output import fail as _fail


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def hosts(ctx: click.Context, as_json: bool) -> None:
    """Show the hosts: address, state as Consul sees it, containers placed there, version.

    A host that has left the cluster for good stays here as down until it is forgotten
    (`switchboard hosts forget NAME`)."""
    if ctx.invoked_subcommand is not None:
        return
    store = Store(reach.consul_client(ctx.obj["consul"]), ctx.obj["prefix"])
    found = host_inventory.read_hosts(store.client, store.prefix)
    load = load_of(s.placement for s in store.applied().values())
    rows = [{**dataclasses.asdict(record), "containers": load.get(name, 0)}
            for name, record in found.items()]
    for key, why in found.skipped.items():
        err_console.print(f"[yellow]warning:[/yellow] {escape(key)} is not a host record "
                          f"({escape(why)}); skipped", highlight=False, soft_wrap=True)
    if as_json:
        click.echo(json.dumps({"hosts": rows, "skipped": found.skipped}, indent=2,
                              sort_keys=True))
        return
    if not rows:
        console.print(f"no host has registered under prefix {store.prefix} (start "
                      f"`switchboard controller` with {reach.START_CONTROLLER})")
        return
    table = Table("NAME", "ADDRESS", "STATE", "CONTAINERS", "VERSION", box=None)
    for row in rows:
        state = "[green]ready[/green]" if row["state"] == "ready" else "[red]down[/red]"
        table.add_row(escape(row["name"]), row["tunnel_ip"] or "-", state,
                      str(row["containers"]), escape(row["version"] or "-"))
    console.print(table)
    for row in rows:
        if row["reason"]:
            console.print(f"  {escape(row['name'])}: {escape(row['reason'])}", highlight=False)


@hosts.command("forget")
@click.argument("name")
@click.pass_context
def forget_cmd(ctx: click.Context, name: str) -> None:
    """Forget host NAME, which has left the cluster for good: its record, the slot it holds,
    its status reports and its events, in one transaction.

    Refused, changing nothing, while the host is up or containers still run on it (they are
    named: those that name no host move once it has been down for the reschedule grace
    period; those pinned with `host: NAME` stay until their topology no longer names it).
    A forgotten host whose daemon starts again registers afresh."""
    store = Store(reach.consul_client(ctx.obj["consul"]), ctx.obj["prefix"])
    try:
        removed = forget(store, name)
    except ForgetRefused as exc:
        _fail(f"cannot forget host {name}; nothing was changed: {exc}")
    console.print(f"forgot host {escape(name)} ({len(removed)} keys and trees removed under "
                  f"{escape(store.prefix)}/)", highlight=False)
