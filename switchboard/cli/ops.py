"""``switchboard graph``, ``switchboard plan`` (and ``up --dry-run``) and ``switchboard logs``:
a picture of a topology, what `up` would change, and a container's command output."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
from pathlib import Path

import click
import consul
import graphviz

from sbcore.model import Topology, TopologyError, load_topology_file
from sbcore.plan import changes
from sbcore.plan.placement import PlacementError
from sbcore.state import reach
from sbcore.state.store import Store
from switchboard.apply import Decision, decide
from switchboard.cli import graph, logs
from switchboard.cli.output import fail as _fail

FORMATS = ("mermaid", "dot", "svg", "png")
_SUFFIXES = {".mmd": "mermaid", ".mermaid": "mermaid", ".md": "mermaid", ".dot": "dot",
             ".gv": "dot", ".svg": "svg", ".png": "png"}
EXIT_CHANGES = 2  # `plan`: something would change



def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _store(ctx: click.Context) -> Store:
    return Store(reach.consul_client(ctx.obj["consul"]), ctx.obj["prefix"])


def _load(file: Path) -> Topology:
    try:
        return load_topology_file(file)
    except TopologyError as exc:
        _fail(f"{file} is not a valid topology; nothing was changed.\n{exc}")
        raise  # unreachable: _fail exits


def _decide(store: Store, topology: Topology, file: Path, allow_unplaced: bool) -> Decision:
    """Admission's decision for ``topology`` on the stored state, as `up` takes it."""
    state = store.snapshot()
    if topology.name in state.invalid:  # `up` replaces it as if it were new
        _warn(f"{state.invalid[topology.name]}; `up` would store {file} in its place")
    try:
        return decide(store, state, topology, allow_unplaced)
    except TopologyError as exc:
        _fail(f"{file} cannot be applied; nothing was changed.\n{exc}")
    except PlacementError as exc:
        _fail(f"{file} cannot be placed; nothing was changed.\n{exc}")
    raise AssertionError  # unreachable: _fail exits


# --- graph -------------------------------------------------------------------------------

@click.command()
@click.argument("name", required=False)
@click.option("-f", "--file", "file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Draw this topology file instead of an applied topology.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output format [default: from the -o file's suffix, else mermaid]; svg "
                   "and png need Graphviz's `dot`.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of standard output.")
@click.pass_context
def graph_cmd(ctx: click.Context, name: str | None, file: Path | None, fmt: str | None,
              output: Path | None) -> None:
    """Draw topology NAME (every applied topology without NAME), or a file with --file:
    networks, routers, containers with their addresses, services and VIPs, policies as
    arrows, and hosts as groups when there are several.

    Mermaid and DOT are text; svg and png are drawn by Graphviz. A file is drawn with the
    addresses and hosts `up` would give it (those it has when it is applied); when Consul
    cannot be asked, with a fresh allocation and only the hosts the file names."""
    if name and file:
        _fail("give a topology NAME or --file, not both")
    if fmt is None:
        fmt = _SUFFIXES.get(output.suffix.lower(), "mermaid") if output else "mermaid"
    if file is not None:
        pictures = [_file_picture(ctx, file)]
    else:
        applied = _store(ctx).applied()
        if name is not None and name not in applied:
            known = ", ".join(sorted(applied)) or "none"
            _fail(f"no topology named {name!r} is applied (applied: {known}); "
                  "to draw a file, use --file")
        chosen = [applied[name]] if name else list(applied.values())
        if not chosen:
            _fail("no topologies applied; to draw a file, use --file FILE")
        pictures = [graph.picture(s.topology, s.allocation, s.placement) for s in chosen]
    text = graph.to_mermaid(pictures) if fmt == "mermaid" else graph.to_dot(pictures)
    data = text.encode()
    if fmt in ("svg", "png"):
        try:
            data = graph.render(text, fmt)
        except graphviz.ExecutableNotFound:
            _fail(f"drawing {fmt} needs Graphviz's `dot`, which is not installed; install it "
                  "(apt-get install graphviz, as scripts/install-deps.sh does) or use "
                  "--format mermaid or dot")
        except graphviz.CalledProcessError as exc:
            _fail(f"Graphviz's `dot` failed: {exc.stderr.decode(errors='replace').strip()}")
    if output is not None:
        output.write_bytes(data)
        click.echo(f"wrote {output} ({fmt})", err=True)
    elif fmt == "png" and sys.stdout.isatty():
        _fail("a PNG is binary: write it to a file with -o FILE.png")
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def _file_picture(ctx: click.Context, file: Path) -> graph.Picture:
    topology = _load(file)
    try:
        store = _store(ctx)
        decision = decide(store, store.snapshot(), topology, allow_unplaced=True)
        return graph.picture(topology, decision.allocation, decision.placement)
    except (reach.Unreachable, consul.ConsulException) as exc:
        _warn(f"{exc}; drawing {file} with fresh addresses and only the hosts it names")
    except (TopologyError, PlacementError) as exc:
        _warn(f"`up` would refuse {file}: {exc}; drawing it with fresh addresses")
    return graph.picture(topology)


# --- plan --------------------------------------------------------------------------------

@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def plan(ctx: click.Context, file: Path, as_json: bool) -> None:
    """Validate FILE as `up` does and show what `up FILE` would change, writing nothing:
    networks, routers, policies, containers and services added, changed and removed, the
    addresses it would allocate, and the containers that would restart.

    Exit status: 0 nothing would change, 2 something would, 1 an error (an invalid file,
    a conflict with another topology, a container that cannot be placed)."""
    topology = _load(file)
    decision = _decide(_store(ctx), topology, file, allow_unplaced=False)
    found = changes.diff(decision.previous, decision)
    source = str(file.resolve())
    note = ""
    if decision.previous is not None and decision.previous.source != source:
        note = f"it was applied from {decision.previous.source}"
    if as_json:
        click.echo(json.dumps({**found.to_json(), "digest": decision.digest,
                               "stored_digest": decision.previous.digest
                               if decision.previous else None}, indent=2, sort_keys=True))
    else:
        click.echo("\n".join(changes.render(found, note)))
    sys.exit(0 if found.is_empty() else EXIT_CHANGES)


# --- logs --------------------------------------------------------------------------------

@click.command("logs")
@click.argument("container")
@click.option("-t", "--topology", default=None,
              help="The topology of CONTAINER (needed when several have one by that name).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until Ctrl-C.")
@click.option("-n", "--lines", default=50, show_default=True, type=int,
              help="How many of the last lines to print (-1: all).")
@click.option("--state-dir", envvar="SWITCHBOARD_STATE", default="/var/lib/switchboard",
              show_default=True, type=click.Path(path_type=Path),
              help="The controller's state directory on this host (where logs are).")
@click.option("--host-id", envvar="SWITCHBOARD_HOST_ID", default=None,
              help="This host's name [default: the one this host's controller registered "
                   "in the local Consul agent, else the host name].")
@click.pass_context
def logs_cmd(ctx: click.Context, container: str, topology: str | None, follow: bool,
             lines: int, state_dir: Path, host_id: str | None) -> None:
    """Show the output of CONTAINER's command (on the host that runs it)."""
    store = _store(ctx)
    try:
        stored = logs.find(store.applied(), container, topology)
        logs.check_here(stored, container, host_id or _this_host(store))
    except logs.LogsError as exc:
        _fail(str(exc))
    from plumbing.processes import log_path

    path = log_path(state_dir, stored.topology.name, container)
    if not path.exists() and not follow:
        _fail(f"container {container!r} has no output on this host yet ({path} does not "
              "exist); is its controller running here? (see `switchboard status`)")
    out = sys.stdout.buffer
    start = 0
    if path.exists():
        data, start = logs.last_lines(path, lines)
        out.write(data)
        out.flush()
    if not follow:
        return

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends it, as tail -f
        logs.follow(path, write, start)


def _this_host(store: Store) -> str:
    """The host this command runs on: the name its controller registered in the local
    Consul agent, else the host name."""
    from controller.daemon.registration import owner_of
    from sbcore.state.hosts import service_id

    try:
        return owner_of(store.client, service_id(store.prefix)) or socket.gethostname()
    except consul.ConsulException:
        return socket.gethostname()
