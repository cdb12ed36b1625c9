"""Make the host hold the wanted topologies: observe, diff (plumbing.plan), apply and roll
back (plumbing.apply), and supervise the containers' commands.

State is kept under ``state_dir`` (see plumbing.statefiles). Each container it made also has
``/etc/netns/<name>/resolv.conf`` (see plumbing.resolvconf).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Set
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovsdb.bridge import TOPOLOGY_KEY, Bridge, OwnedPort
from plumbing import images, netns, processes, resolvconf
from plumbing.apply import PlumbingError, apply_plan, command_start
from plumbing.attachments import dead_attachments, pid_netns, without_dead_attachments
from plumbing.exitwatch import ExitWatch
from plumbing.observe import InterfaceReader, ObservedInterfaces
from plumbing.phases import Phases
from plumbing.plan import (
    Command,
    PlumbingPlan,
    Problems,
    plan_plumbing,
    plumbing_problems,
    process_key,
    waiting,
)
from plumbing.runtimeevents import RuntimeEvents
from plumbing.statefiles import StateFiles
from plumbing.supervisor import Supervisor, Wanted, running_commands, wanted_commands
from sbcore.state.private import private_dir

if TYPE_CHECKING:
    from sbcore.plan.hostplan import Endpoint, TopologyPlan

LOG = logging.getLogger(__name__)


@dataclass
class _Observed:
    ports: dict[str, OwnedPort]
    netns: set[str]
    running: dict[str, bool]
    commands: dict[str, str]
    stale: set[str]
    resolv: dict[str, str]
    interfaces: ObservedInterfaces | None  # None: not looked at


class Plumber:
    """Namespaces, veths, bridge ports, host legs and commands of the wanted topologies."""

    def __init__(self, bridge: Bridge, state_dir: Path, ofport_timeout: float = 30.0,
                 netns_prefix: str = netns.PREFIX,
                 on_exit: Callable[[str], None] | None = None,
                 wake: Callable[[], None] | None = None,
                 runtime: str = images.DEFAULT_RUNTIME) -> None:
        """``on_exit(key)``: called (from a watcher thread) as soon as a command exits;
        ``wake()``: called when a command held back by its backoff is due."""
        self.bridge = bridge
        self.netns_prefix = netns_prefix  # the container namespaces this plumber owns
        self.runtime = runtime  # what runs image containers (plumbing.images)
        self._events: dict[str, RuntimeEvents] = {}  # runtime -> its events, when attached
        self._attached_names: dict[str, set[str]] = {}  # runtime -> names attached by name
        self.files = StateFiles(private_dir(state_dir))  # logs and commands: root's only
        self.ofport_timeout = ofport_timeout
        self._lock = threading.Lock()
        self.problems = Problems()  # what the last reconcile left short of the plans
        self.supervisor = Supervisor()
        self.running: dict[str, bool] = {}  # process key -> alive, after the last reconcile
        self.plumbed: list[Endpoint] = []  # interfaces the last reconcile made or set again
        self._wanted: dict[str, Wanted] = {}  # commands of the last reconcile, by key
        self._deferred: list[tuple[Command, bool]] = []  # runtime clients to start, restart?
        self._wake = wake
        self._exits = ExitWatch(lambda key, _pid: on_exit(key)) if on_exit else None

    # -- observing -------------------------------------------------------------------

    def _observe(self, plans: list[TopologyPlan], interfaces: bool = True) -> _Observed:
        """Read what the host holds for ``plans``; ``interfaces``: also read the links inside
        the wanted namespaces and the root namespace's (see :mod:`plumbing.observe`)."""
        wanted = {c.netns: c for topo in plans for c in topo.containers}
        marked = self.files.marked()
        existing = netns.list_namespaces(self.netns_prefix)
        ours = {n for n in existing if n in marked or n in wanted}
        reader = None
        if interfaces:  # netlink on a worker thread while this one reads OVSDB and files
            legs = {net.host_leg.port for topo in plans for net in topo.networks}
            ends = {ep.port for topo in plans for ep in topo.endpoints()}
            reader = InterfaceReader(ours & wanted.keys(), legs | ends).start()
        adopted = {n: wanted[n].topology for n in ours if n not in marked}
        if adopted:  # ours by name and wanted: remember it as ours from now on
            self.files.mark(adopted)
        stale = set()
        for name in ours & wanted.keys():
            source = wanted[name].attach_source
            if source is not None and netns.netns_inode(name) != pid_netns(source):
                stale.add(name)
        running, commands = {}, {}
        for key, path in self.files.pid_files().items():
            running[key] = processes.is_running(path)
            rec = processes.read(path)
            if rec is not None:
                commands[key] = rec.command
        resolv = resolvconf.read(set(marked) | adopted.keys() | wanted.keys())
        ports = self.bridge.owned_ports()
        links = reader.result() if reader is not None else None
        return _Observed(ports, ours, running, commands, stale, resolv, links)

    def observe(self) -> dict[str, dict[str, Any]]:
        """Status of every owned port: kind, topology, container, network, netns, ofport,
        whether its namespace exists and whether its container's command runs (None: none)."""
        existing = netns.list_namespaces(self.netns_prefix)
        pid_files = self.files.pid_files()
        runtime_ids = self._runtime_ids(pid_files)
        status = {}
        for name, port in sorted(self.bridge.owned_ports().items()):
            ids = port.external_ids
            container = ids.get("switchboard-container")
            ns = ids.get("switchboard-netns")
            key = process_key(ids[TOPOLOGY_KEY], container) if container else None
            status[name] = {
                "kind": ids.get("switchboard-kind"),
                "topology": ids[TOPOLOGY_KEY],
                "container": container,
                "network": ids.get("switchboard-network"),
                "ip": ids.get("switchboard-ip"),
                "netns": ns,
                "ofport": port.ofport,
                "netns_exists": ns in existing if ns else None,
                "running": processes.is_running(pid_files[key]) if key in pid_files else None,
            }
            if key in self._wanted and key in pid_files:  # restart policy at work
                status[name]["command"] = self.supervisor.status(
                    pid_files[key], self._wanted[key].policy, bool(status[name]["running"]))
            if ns and status[name]["running"] and key in runtime_ids:
                status[name]["runtime_id"] = runtime_ids[key]
        return status

    def _runtime_ids(self, pid_files: dict[str, Path]) -> dict[str, str | None]:
        """Process key -> the runtime's ID of each image container (None: the runtime has not
        created it yet), from the file its runtime writes it to (asked nothing)."""
        return {key: images.read_cid(processes.cid_path(path))
                for key, path in pid_files.items()
                if (rec := processes.read(path)) is not None and rec.runtime is not None}

    # -- reconciling -----------------------------------------------------------------

    def reconcile(self, plans: list[TopologyPlan], defer_runtime: bool = False
                  ) -> dict[str, int]:
        """Make the host hold exactly ``plans``; port name -> ofport of every wanted port.

        ``defer_runtime``: the image containers' runtime clients are not started here but by
        :meth:`start_deferred`, which the daemon calls once the flows are in: a container
        then starts with its network working, and the runtime's start-up (CPU-heavy, one
        process per container) does not hold the flows back.

        Writes nothing (no OVSDB transaction, no ip command) when the host already matches.
        Every pass compares the interfaces in the namespaces too, and repairs what differs.
        ``self.problems`` is then what is still short of the plans (read again after a repair).
        A container attached to a process that is gone cannot be realised: the rest is, then
        PlumbingError names it.
        """
        plans = images.with_run_commands(plans, self.runtime, self.netns_prefix,
                                         self.files.cid_path)
        plans, pending = self._resolve_names(plans)
        all_plans = plans
        plans, orphans = without_dead_attachments(plans)
        phases = Phases()
        with self._lock:
            self.problems = Problems(containers=dead_attachments(all_plans), pending=pending)
            seen = self._observe(plans)
            phases.lap("observe")
            wanted = wanted_commands(plans, self.files.pid_path)
            review = self.supervisor.review(wanted.values(), seen.running, seen.commands)
            plan = plan_plumbing(
                plans, seen.ports, seen.netns, seen.running,
                observed_commands=seen.commands, stale_netns=seen.stale,
                wanted_resolv=resolvconf.wanted_files(plans, resolvconf.host_text()),
                observed_resolv=seen.resolv, interfaces=seen.interfaces,
                netns_prefix=self.netns_prefix, hold=review.hold,
            )
            unable = self._unable_images(plan, plans)
            later = [cmd for cmd in plan.start_commands
                     if defer_runtime and cmd.runtime is not None]
            plan.start_commands = [cmd for cmd in plan.start_commands if cmd not in later]
            self._deferred = []
            phases.lap("plan")
            try:
                self.plumbed = []
                new_ofports = {} if plan.is_empty() else self._apply(plan, plans)
                self.plumbed = plan.create_endpoints + plan.configure_endpoints
                phases.lap("apply")
                self._supervise(plan, review.exited, wanted, review.due,
                                {cmd.key for cmd in later})
                self._deferred = [(cmd, cmd.key in review.exited) for cmd in later]
                phases.lap("supervise")
            finally:
                self._record_problems(plans, seen, look_again=not plan.is_empty())
                self.problems.containers.update(unable)
                phases.lap("look again")
        if not plan.is_empty():
            LOG.info("plumbing pass took %s", phases)
        if orphans:
            raise PlumbingError("; ".join(orphans))
        wanted = {ep.port for topo in plans for c in topo.containers if not waiting(c)
                  for ep in c.endpoints}
        wanted |= {net.host_leg.port for topo in plans for net in topo.networks}
        ofports = {n: p.ofport for n, p in seen.ports.items() if n in wanted and p.ofport}
        ofports.update(new_ofports)
        return {n: ofports[n] for n in sorted(wanted)}

    def _resolve_names(self, plans: list[TopologyPlan]
                       ) -> tuple[list[TopologyPlan], dict[tuple[str, str], str]]:
        """The plans with each container attached by name given its runtime container's
        PID; one whose container does not run is left out, (topology, name) -> why."""
        by_runtime: dict[str, set[str]] = {}
        for topo in plans:
            for c in topo.containers:
                if c.attach_name is not None:
                    by_runtime.setdefault(c.attach_name[0], set()).add(c.attach_name[1])
        self._attached_names = by_runtime
        if not by_runtime:
            return plans, {}
        pids: dict[str, dict[str, int]] = {}
        errors: dict[str, str] = {}
        for runtime, names in by_runtime.items():
            self._follow(runtime)
            try:
                pids[runtime] = images.running_pids(runtime, names)
            except (images.ImageError, ValueError) as err:
                errors[runtime] = str(err)
        pending, out = {}, []
        for topo in plans:
            kept = []
            for c in topo.containers:
                if c.attach_name is None:
                    kept.append(c)
                    continue
                runtime, name = c.attach_name
                pid = pids.get(runtime, {}).get(name)
                if pid is not None and pid_netns(pid) is not None:  # not gone meanwhile
                    kept.append(replace(c, attach_pid=pid))
                elif c.runtime is not None:  # its command makes it: start that, plug later
                    kept.append(c)
                    pending[(topo.name, c.name)] = errors.get(runtime) or (
                        f"waiting for {runtime} container {name} to run")
                else:
                    pending[(topo.name, c.name)] = errors.get(runtime) or (
                        f"waiting for {runtime} container {name}: it does not exist or is "
                        "not running")
            out.append(replace(topo, containers=tuple(kept)))
        return out, pending

    def _follow(self, runtime: str) -> None:
        """Follow ``runtime``'s events (once), waking the daemon for attached names."""
        if runtime in self._events or self._wake is None:
            return
        events = RuntimeEvents(runtime, lambda: self._attached_names.get(runtime, set()),
                               self._wake)
        self._events[runtime] = events
        events.ensure_started()

    def _unable_images(self, plan: PlumbingPlan, plans: list[TopologyPlan]
                       ) -> dict[tuple[str, str], str]:
        """Take out of ``plan`` the image containers whose image (or runtime) is missing;
        (topology, container) -> why, for each."""
        image_of = {(topo.name, c.name): c.image.image for topo in plans
                    for c in topo.containers if c.image is not None}
        starting = [cmd for cmd in plan.start_commands if cmd.runtime is not None]
        if not starting:
            return {}
        missing = images.missing_images(
            self.runtime, {image_of[(cmd.topology, cmd.container)] for cmd in starting})
        unable = {(cmd.topology, cmd.container): missing[image]
                  for cmd in starting
                  if (image := image_of[(cmd.topology, cmd.container)]) in missing}
        plan.start_commands = [cmd for cmd in plan.start_commands
                               if (cmd.topology, cmd.container) not in unable]
        return unable

    def start_deferred(self) -> None:
        """Start the runtime clients the last :meth:`reconcile` held back (``defer_runtime``),
        record their starts and watch them. One that cannot start is logged; the next pass
        finds it not running and starts it again."""
        with self._lock:
            later, self._deferred = self._deferred, []
            if not later:
                return
            try:
                processes.start_all([command_start(cmd, self.files) for cmd, _ in later])
            except processes.ProcessError as err:
                LOG.error("starting image containers: %s", err)
            for cmd, again in later:
                self.supervisor.started(self.files.pid_path(cmd.topology, cmd.container),
                                        restart_=again)
            self._watch({cmd.key for cmd, _ in later})

    def _supervise(self, plan: PlumbingPlan, exited: set[str], wanted: dict[str, Wanted],
                   due: float | None, later: set[str] = frozenset()) -> None:
        """Record the starts of this pass, wake the daemon when a held command is due, and
        watch every running command for its exit (``later``: keys whose start is deferred,
        counted as running meanwhile)."""
        for cmd in plan.start_commands:
            self.supervisor.started(self.files.pid_path(cmd.topology, cmd.container),
                                    restart_=cmd.key in exited)
        for key in set(plan.stop_commands) - {c.key for c in plan.start_commands}:
            if key not in wanted:
                self.supervisor.forget(self.files.pid_path(*key.split("/", 1)))
        if due is not None and self._wake is not None:
            timer = threading.Timer(max(0.0, due - time.time()) + 0.01, self._wake)
            timer.daemon = True
            timer.start()
        self._wanted = wanted
        self._watch({c.key for c in plan.start_commands}, later)

    def _watch(self, started: set[str], later: Set[str] = frozenset()) -> None:
        """Set ``self.running`` from the pid files (``later``: about to start, as running)
        and watch the running commands and those just ``started`` for their exit."""
        self.running, pids = running_commands(self._wanted.values(), started)
        self.running.update(dict.fromkeys(later, True))
        if self._exits is not None:
            self._exits.track(pids)

    def _record_problems(self, plans: list[TopologyPlan], seen: _Observed,
                         look_again: bool) -> None:
        """Set ``self.problems`` from ``seen``, or (``look_again``: after a repair) from a new
        observation; if that fails, every container is reported as not observed."""
        try:
            if look_again:
                seen = self._observe(plans)
        except Exception as err:  # noqa: BLE001 - an error of the apply itself goes first
            LOG.warning("cannot look at the host after plumbing: %s", err)
            self.problems.containers.update({
                (topo.name, c.name): f"not observed after plumbing: {err}"
                for topo in plans for c in topo.containers})
            return
        assert seen.interfaces is not None
        found = plumbing_problems(plans, seen.ports, seen.netns, seen.interfaces, seen.stale)
        self.problems.containers.update(found.containers)
        self.problems.ports.update(found.ports)
        self.problems.host_legs.update(found.host_legs)

    def remove_topology(self, name: str) -> None:
        """Remove everything of one topology and nothing else (other plans need not be known)."""
        with self._lock:
            seen = self._observe([], interfaces=False)
            marked = self.files.marked()
            ports = {
                n: p for n, p in seen.ports.items() if p.external_ids.get(TOPOLOGY_KEY) == name
            }
            in_ports = {p.external_ids.get("switchboard-netns") for p in ports.values()}
            ns = {n for n in seen.netns if marked.get(n) == name or n in in_ports}
            running = {k: v for k, v in seen.running.items() if k.startswith(f"{name}/")}
            resolv = {n: t for n, t in seen.resolv.items() if marked.get(n) == name}
            plan = plan_plumbing([], ports, ns, running, wanted_resolv={},
                                 observed_resolv=resolv, netns_prefix=self.netns_prefix)
            if not plan.is_empty():
                self._apply(plan, [])
            for key in plan.stop_commands:
                self.supervisor.forget(self.files.pid_path(*key.split("/", 1)))
            self._remove_labelled(name)

    def _remove_labelled(self, topology: str) -> None:
        """Remove what the runtime still holds of ``topology`` by this daemon's labels (a
        container no pid file names any more)."""
        try:
            left = images.owned(self.runtime, self.netns_prefix, topology)
        except (images.ImageError, ValueError) as err:
            LOG.warning("cannot list %s's containers of %s: %s", self.runtime, topology, err)
            return
        images.remove(self.runtime, images.by_name(left))

    def _apply(self, plan: PlumbingPlan, plans: list[TopologyPlan]) -> dict[str, int]:
        return apply_plan(plan, plans, self.bridge, self.files, self.ofport_timeout)
