"""``switchboard events``: what the daemons did, in order, cluster-wide (sbcore.state.events)."""

from __future__ import annotations

import json
import sys

import click

from sbcore.state import events as ev
from sbcore.state import reach


def _show(event: ev.Event, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(event.to_json(), sort_keys=True))
    else:
        click.echo(ev.line(event))


@click.command("events")
@click.option("-f", "--follow", is_flag=True,
              help="Keep printing events as the daemons write them (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: time (Unix seconds), host, kind, topology, "
                   "container, message, details.")
@click.option("-n", "--lines", default=50, show_default=True, type=click.IntRange(min=0),
              help="How many of the latest events to print first (0: all kept).")
@click.option("-t", "--topology", default=None, help="Only this topology's events.")
@click.option("--host", "host", default=None, help="Only the events of this host's daemon.")
@click.pass_context
def events_cmd(ctx: click.Context, follow: bool, as_json: bool, lines: int,
               topology: str | None, host: str | None) -> None:
    """What the daemons did, in order, cluster-wide: containers started, stopped, exited,
    restarted and moved; instances passing and critical; VIP backends added and removed;
    hosts up and down; controllers started; reconcile passes failed and recovered.

    Each daemon keeps its last 256 events in Consul KV (P/events/HOST/), so the history is
    bounded. Times are the writing host's clock."""
    client = reach.consul_client(ctx.obj["consul"])
    prefix = ctx.obj["prefix"]

    def wanted(event: ev.Event) -> bool:
        return (topology is None or event.topology == topology) and \
            (host is None or event.host == host)

    index, found = ev.read_events(client, prefix)
    shown = [event for _, event in found if wanted(event)]
    for event in shown[-lines:] if lines else shown:
        _show(event, as_json)
    if not follow:
        if not shown and not as_json:
            click.echo("no events" + (" for that filter" if topology or host else ""),
                       err=True)
        return
    try:
        for event in ev.follow(client, prefix, index, (key for key, _ in found)):
            if wanted(event):
                _show(event, as_json)
                sys.stdout.flush()
    except KeyboardInterrupt:
        return
