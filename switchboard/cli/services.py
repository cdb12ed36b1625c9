"""``switchboard services`` and ``switchboard resolve``: service discovery as a user sees it."""

from __future__ import annotations

import json
import socket
from typing import Any

import click
import dns.rcode
from rich.table import Table

from discovery import lookup
from discovery.dnsproxy import parse_server
from discovery.listing import health_entries, instance_rows, vip_rows
from sbcore.state import reach
from sbcore.state.store import Store
from switchboard.cli.output import console
from switchboard.cli.output import fail as _fail

HEALTH_STYLE = {"passing": "green", "warning": "yellow", "critical": "red"}



def _endpoint(address: str, port: int | None) -> str:
    return f"{address}:{port}" if port else address


def _backends(row: dict[str, Any]) -> str:
    if not row["backends"]:
        return "(none passing: connections are refused)"
    return ", ".join(f"{b['container']} {b['ip']}:{b['port']}" for b in row["backends"])


@click.command()
@click.option("-t", "--topology", help="Only the services of this topology.")
@click.option("-a", "--all", "everything", is_flag=True,
              help="Also list services Switchboard did not register.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def services(ctx: click.Context, topology: str | None, everything: bool, as_json: bool) -> None:
    """List service instances with their health (Consul's health API) and the VIPs in
    front of them with the instances each switch currently uses."""
    client = reach.consul_client(ctx.obj["consul"])  # down: the group says so in one line
    instances = instance_rows(health_entries(client), topology, everything)
    vips = vip_rows(Store(client, ctx.obj["prefix"]).reports(), topology)
    if as_json:
        click.echo(json.dumps({"instances": instances, "vips": vips}, indent=2,
                              sort_keys=True))
        return
    if not instances and not vips:
        where = f" in topology {topology}" if topology else ""
        console.print(f"no services registered{where}")
        return
    table = Table("service", "instance", "topology", "address:port", "tags", "health",
                  box=None)
    for row in instances:
        style = HEALTH_STYLE.get(row["health"], "red")
        table.add_row(row["service"], row["instance"], row["topology"] or "-",
                      _endpoint(row["address"], row["port"]), ",".join(row["tags"]) or "-",
                      f"[{style}]{row['health']}[/{style}]")
    console.print(table)
    if vips:
        console.print()
        vip_table = Table("service", "topology", "vip:port", "published", "backends", "host",
                          box=None)
        for row in vips:
            published = f"host port {row['published']}" if row.get("published") else "-"
            vip_table.add_row(row["service"], row["topology"],
                              _endpoint(row["vip"], row["port"]), published, _backends(row),
                              row["host"])
        console.print(vip_table)


def _outside_consul(name: str) -> bool:
    """Surely a name outside Consul: not under ``.consul``, and fully qualified
    (``example.com.``) or with two dots or more (``web`` and ``v1.web`` are services)."""
    if name.rstrip(".").endswith(".consul"):
        return False
    return name.endswith(".") or name.count(".") >= 2


def _maybe_outside_consul(name: str) -> bool:
    """``example.com`` could be tag ``example`` of a service ``com``: outside Consul only
    when no such instance answers."""
    return "." in name and not name.rstrip(".").endswith(".consul")


def _resolve_upstream(name: str, server: tuple[str, int], report: dict[str, Any],
                      timeout: float) -> None:
    """A name outside Consul, as the topology's containers get it: the path, then the
    addresses (or the error the forwarder answers)."""
    upstream = report.get("upstream_dns") or "the daemon's upstream servers"
    click.echo(f"{name}: not under .consul: the forwarder at {server[0]}:{server[1]} asks "
               f"{upstream}")
    try:
        answer = lookup.query(name, "A", server, timeout)
    except lookup.DNSError as exc:
        _fail(f"{name}: {exc}")
    except ValueError as exc:
        _fail(f"cannot resolve {name!r}: {exc}", 2)
    found = [r.address for rrset in answer.answer for r in rrset if hasattr(r, "address")]
    if not found:
        _fail(f"{name}: no address ({dns.rcode.to_text(answer.rcode())})")
    for address in found:
        click.echo(address)


def local_forwarder(store: Store, topology: str) -> tuple[str, int]:
    """The daemon's DNS forwarder for ``topology``'s containers on this host: the first of
    the host addresses in the topology's reports that is configured here, port 53."""
    return local_report(store, topology)[0]


def local_report(store: Store, topology: str) -> tuple[tuple[str, int], dict[str, Any]]:
    """``local_forwarder`` and the report of this host it comes from."""
    for (_, _), report in sorted(store.reports(topology).items()):
        for network in report.get("networks") or []:
            address = str(network.get("host_ip") or "")
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.bind((address, 0))  # succeeds only for an address of this host
            except (OSError, ValueError, OverflowError):
                continue
            return (address, 53), report
    _fail(f"topology {topology} has no network on this host; is it up? "
          f"(`switchboard status {topology}`)")
    raise AssertionError  # _fail exits


@click.command()
@click.argument("name")
@click.option("-t", "--topology",
              help="Resolve as this topology's containers do: ask the daemon's forwarder "
                   "(its instances and those of no topology; NAME.vip.consul for a VIP).")
@click.option("--dns", "server", envvar="SWITCHBOARD_CONSUL_DNS", default="127.0.0.1:8600",
              show_default=True, help="Consul's DNS interface (HOST:PORT).")
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for DNS.")
@click.pass_context
def resolve(
    ctx: click.Context, name: str, topology: str | None, server: str, timeout: float
) -> None:
    """Resolve service NAME (``web``, ``v1.web``, ``web.service.consul``) through DNS, SRV
    then A, and print ADDRESS:PORT per instance. Without --topology: Consul's DNS on the
    host (every topology's instances); with it: what that topology's containers get, also
    for a name outside Consul (``example.com``): the path it takes, then its addresses."""
    if topology:
        client = reach.consul_client(ctx.obj["consul"])
        dns_server, report = local_report(Store(client, ctx.obj["prefix"]), topology)
        if _outside_consul(name):
            _resolve_upstream(name, dns_server, report, timeout)
            return
    else:
        try:
            dns_server = parse_server(server, 8600)
        except ValueError as exc:
            _fail(f"--dns {server}: {exc}", 2)
    try:
        found = lookup.resolve(name, dns_server, timeout)
    except lookup.DNSError as exc:
        if topology:
            _fail(f"{exc}; is the controller running on this host?")
        unreachable = reach.dns_unreachable(dns_server, exc)
        if unreachable is not None:
            raise unreachable from None
        _fail(f"{exc}; is Consul's DNS interface at {server}? (set --dns)")
    except ValueError as exc:
        _fail(f"cannot resolve {name!r}: {exc}", 2)
    if not found and topology and _maybe_outside_consul(name):
        _resolve_upstream(name, dns_server, report, timeout)
        return
    if not found:
        where = f" in topology {topology}" if topology else ""
        _fail(f"{lookup.consul_name(name)}: no passing instance{where} "
              "(see `switchboard services`)")
    for address, port in found:
        click.echo(f"{address}:{port}")
