"""``switchboard lab``: the click commands. Thin: each calls one function and turns a
LabError into one line on stderr and exit status 1."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from lab import lifecycle, power, state, status
from lab.config import CONTROL_SUBNET, NAME_ENV, TUNNEL_SUBNET, Lab, LabError
from lab.hosts import host_environ, in_netns
from switchboard.cli.output import console, fail


def _say(message: str) -> None:
    console.print(escape(message), soft_wrap=True, highlight=False)


def _errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LabError as exc:
            fail(str(exc))
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--name", envvar=NAME_ENV, default="sblab", show_default=True,
              help="The lab's name: prefix of its namespaces and directories.")
@click.pass_context
def lab(ctx: click.Context, name: str) -> None:
    """Several simulated Switchboard hosts on this machine (like `kind`).

    Each host hK is a network namespace <name>-hK with its own ovsdb-server, ovs-vswitchd,
    Consul agent and switchboard controller; the namespace <name>-ul joins them."""
    ctx.obj = {**(ctx.obj or {}), "lab": name}
    os.environ[NAME_ENV] = name  # what `switchboard --lab-host` in a child will look up


@lab.command()
@click.option("--hosts", "count", default=3, show_default=True, help="How many hosts.")
@click.option("--control-subnet", default=CONTROL_SUBNET, show_default=True,
              help="Underlay subnet of the hosts' control addresses (Consul binds here).")
@click.option("--tunnel-subnet", default=TUNNEL_SUBNET, show_default=True,
              help="Underlay subnet of the hosts' tunnel (VXLAN) addresses.")
@click.option("--reschedule-after", type=click.FloatRange(min=0), default=None,
              help="Seconds a host stays down before its containers move (the controllers' "
                   "--reschedule-after; default: theirs, 30).")
@click.pass_context
@_errors
def up(ctx: click.Context, count: int, control_subnet: str, tunnel_subnet: str,
       reschedule_after: float | None) -> None:
    """Make the lab and wait until every host's Consul has a leader and its controller runs."""
    made = lifecycle.up(ctx.obj["lab"], count, _say, control_subnet, tunnel_subnet,
                        reschedule_after)
    _print_hosts(made)
    first = made.hosts[0].name
    _say(f"\nRun a command on a host:  switchboard lab exec {first} -- switchboard status")
    _say(f"Or for a whole shell:     export SWITCHBOARD_LAB_HOST={first}   "
         "(every `switchboard` command then runs on that host)")
    _say("Logs: " + made.hosts[0].log_dir.replace(f"/{first}/", "/hK/") + "/; "
         "`switchboard lab down` removes everything")


def _print_hosts(made: Lab) -> None:
    table = Table(title=f"lab {made.name} ({made.datapath} datapath)")
    for column in ("host", "role", "namespace", "control", "tunnel"):
        table.add_column(column)
    for h in made.hosts:
        table.add_row(h.name, "server" if h.server else "client", h.netns, h.control_ip,
                      h.tunnel_ip)
    console.print(table)


@lab.command()
@click.pass_context
@_errors
def down(ctx: click.Context) -> None:
    """Remove every namespace, process, veth, bridge, directory and file of the lab."""
    if not lifecycle.down(ctx.obj["lab"], _say):
        _say(f"no lab {ctx.obj['lab']}: nothing to remove")


@lab.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
@_errors
def exec_(ctx: click.Context, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in HOST's network namespace, with its environment (exit status passed on).

    Example: switchboard lab exec h1 -- switchboard up topologies/shop.yaml"""
    if os.geteuid() != 0:
        raise LabError("switchboard lab needs root (it enters network namespaces); "
                       "run it with sudo")
    target = state.require(ctx.obj["lab"]).host(host)
    args = in_netns(target, *command)
    sys.stdout.flush()
    try:
        os.execvpe(args[0], args, host_environ(target))
    except OSError as exc:
        raise LabError(f"cannot run nsenter: {exc}") from None


ONLY = click.Choice(sorted(power.PART_GROUPS))


@lab.command()
@click.argument("host")
@click.option("--only", type=ONLY, default=None,
              help="Kill just this part (its links stay plugged in), like a crash.")
@click.pass_context
@_errors
def kill(ctx: click.Context, host: str, only: str | None) -> None:
    """SIGKILL every process of HOST at once and unplug it, like a power cut."""
    power.kill(ctx.obj["lab"], host, _say, only)


@lab.command()
@click.argument("host")
@click.pass_context
@_errors
def start(ctx: click.Context, host: str) -> None:
    """Bring a killed HOST back (links up, the same start script, its state kept), or start
    the parts of it that do not run."""
    power.start(ctx.obj["lab"], host, _say)


@lab.command()
@click.argument("host")
@click.option("--only", type=ONLY, default=None, help="Restart just this part.")
@click.pass_context
@_errors
def restart(ctx: click.Context, host: str, only: str | None) -> None:
    """Stop HOST's software (SIGTERM) and start it again, as an operator's restart does."""
    power.restart(ctx.obj["lab"], host, _say, only)


@lab.command()
@click.argument("host")
@click.pass_context
@_errors
def unplug(ctx: click.Context, host: str) -> None:
    """Unplug HOST's links while its software runs on: a network partition."""
    power.unplug(ctx.obj["lab"], host, _say)


@lab.command()
@click.argument("host")
@click.pass_context
@_errors
def plug(ctx: click.Context, host: str) -> None:
    """Plug an unplugged HOST's links back in (the partition heals)."""
    power.unplug(ctx.obj["lab"], host, _say, plug=True)


@lab.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_errors
def status_(ctx: click.Context, as_json: bool) -> None:
    """The hosts, their addresses, and which of their processes run."""
    data = status.lab_status(ctx.obj["lab"])
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"lab {data['name']} ({data['datapath']} datapath)")
    for column in ("host", "state", "role", "control", "tunnel", "ovsdb-server",
                   "ovs-vswitchd", "consul", "controller", "leader"):
        table.add_column(column)
    for row in data["hosts"]:
        pids = [str(p) if p else "[red]-[/red]" for p in row["processes"].values()]
        color = {"running": "green", "killed": "red"}.get(row["state"], "yellow")
        table.add_row(row["host"], f"[{color}]{row['state']}[/{color}]", row["role"],
                      row["control_ip"], row["tunnel_ip"], *pids,
                      (row["consul_leader"] or "-").split(":")[0])
    console.print(table)
