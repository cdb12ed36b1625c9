"""Failover without waiting for a check: what the daemon does when a container's command exits.

The moment the exit watch (plumbing.exitwatch) reports an exit, the container is *down*:

- its instances leave every VIP's backends on this host, at the next pass (which the exit
  wakes at once): :meth:`ExitFailover.adjust` takes them out of the passing sets;
- each of its instances is put in maintenance in the local Consul agent
  (``/v1/agent/service/maintenance``), which adds a critical check to it at once. Consul's
  health API, hence DNS and the other hosts' VIPs, leave it out without waiting for its own
  check. (``/v1/agent/check/fail`` only works on TTL checks, and an instance's check is
  an HTTP or TCP one.)

It stays down until its command runs again and its check passes when run from the host
(as :mod:`discovery.readiness` does), or for at most :data:`PROBE_FOR` seconds, after which
Consul's own check decides. Then the maintenance is lifted. A check that passed from the
host is also made passing in Consul at once: Consul keeps a check's status when a service is
registered again, so its check is removed, then the instance registered again with the
status the daemon saw (under the maintenance, so it is never seen passing too early); a
check that ran while the command was dead would otherwise hold it out for an interval.
A daemon that starts lifts the maintenance an earlier one left on instances whose command
runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import consul

from discovery.instances import CONTAINER_KEY, TOPOLOGY_KEY, Instance
from discovery.readiness import check_passes
from sbcore.plan.hostplan import TopologyPlan

LOG = logging.getLogger("switchboard.exits")

REASON = "switchboard: the command of container {} exited"
MAINTENANCE = "_service_maintenance:"  # Consul's ID prefix of a service's maintenance check
PROBE_FOR = 30.0  # seconds a restarted command's check is probed before Consul decides
PROBE_EVERY = 0.05

Passing = Mapping[tuple[str, str], frozenset[str]]


class ExitFailover:
    """The containers of this host whose command exited, and their instances' maintenance."""

    def __init__(self, client: consul.Consul, wake: Callable[[], None],
                 probe: Callable[..., bool] = check_passes,
                 register: Callable[[Instance, bool], None] | None = None) -> None:
        """``register(instance, passing)``: registers an instance in the local agent (the
        daemon's :meth:`discovery.sync.ServiceSync.register`)."""
        self.client = client
        self.register = register
        self.wake = wake
        self.probe = probe
        self._lock = threading.Lock()
        self._down: dict[str, int] = {}  # process key -> generation (bumped at each exit)
        self._generation = 0
        self._probing: set[str] = set()
        self._instances: dict[str, list[Instance]] = {}  # process key -> its instances
        self._cleaned = False
        self._news = False  # an exit since take_news() last looked

    # --- what the daemon tells it ------------------------------------------------------------
    def know(self, instances: Iterable[Instance]) -> None:
        """This host's instances (each pass); the first time, lift stale maintenance."""
        found: dict[str, list[Instance]] = {}
        for inst in instances:
            meta = inst.meta_dict
            if TOPOLOGY_KEY in meta and CONTAINER_KEY in meta:
                found.setdefault(f"{meta[TOPOLOGY_KEY]}/{meta[CONTAINER_KEY]}", []).append(inst)
        with self._lock:
            self._instances = found
        if not self._cleaned:
            self._lift_stale()

    def exited(self, key: str, wake: bool = True) -> None:
        """The command of ``key`` (``topology/container``) exited: down now."""
        with self._lock:
            self._generation += 1
            self._down[key] = self._generation
            self._news = True
            instances = list(self._instances.get(key, []))
        if wake:
            self.wake()
        for inst in instances:
            self._maintenance(inst.id, True, REASON.format(key.split("/", 1)[1]))

    def settle(self, running: Mapping[str, bool]) -> None:
        """After a plumbing pass (``running``: key -> alive, for every wanted command): the
        commands found not running are down; a down one that runs again is probed."""
        with self._lock:
            for key in set(self._down) - running.keys():  # no longer wanted here
                del self._down[key]
            fresh = [k for k, alive in running.items() if not alive and k not in self._down]
            again = [(k, self._down[k]) for k, alive in running.items()
                     if alive and k in self._down and k not in self._probing]
            self._probing.update(k for k, _ in again)
        for key in fresh:
            self.exited(key, wake=False)
        for key, generation in again:
            threading.Thread(target=self._come_back, args=(key, generation), daemon=True,
                             name=f"probe-{key}").start()

    def take_news(self) -> bool:
        """Whether a command exited since the last call (the daemon then programs the
        switch first thing in its pass)."""
        with self._lock:
            news, self._news = self._news, False
            return news

    def adjust(self, plans: Iterable[TopologyPlan], passing: Passing) -> dict[
            tuple[str, str], frozenset[str]]:
        """``passing`` without the down containers (a service Consul has not answered for
        yet: all its instances but the down ones)."""
        with self._lock:
            down = {tuple(key.split("/", 1)) for key in self._down}
        result = dict(passing)
        if not down:
            return result
        for plan in plans:
            gone = {c for t, c in down if t == plan.name}
            for svc in plan.services:
                members = frozenset(b.container for b in svc.backends)
                if not gone & members:
                    continue
                alive = passing.get((plan.name, svc.name))
                result[(plan.name, svc.name)] = (members if alive is None else alive) - gone
        return result

    def down(self) -> set[str]:
        with self._lock:
            return set(self._down)

    # --- inside ------------------------------------------------------------------------------
    def _come_back(self, key: str, generation: int) -> None:
        """Probe a restarted command's checks; once they pass, it is up again."""
        try:
            deadline = time.monotonic() + PROBE_FOR
            passed = False
            while time.monotonic() < deadline:
                with self._lock:
                    if self._down.get(key) != generation:
                        return  # it exited again (or went away): a later pass probes again
                    checks = [i.check for i in self._instances.get(key, []) if i.check]
                if all(self.probe(check) for check in checks):
                    passed = True
                    break
                time.sleep(PROBE_EVERY)
            with self._lock:
                if self._down.get(key) != generation:
                    return
                del self._down[key]
                instances = list(self._instances.get(key, []))
            LOG.info("%s runs again: back in its services", key)
            for inst in instances:
                if passed:
                    self._passing_now(inst)
                self._maintenance(inst.id, False)
            self.wake()
        finally:
            with self._lock:
                self._probing.discard(key)

    def _passing_now(self, inst: Instance) -> None:
        """Make the instance's own check passing in the agent (its check passed from here)."""
        if inst.check is None or self.register is None:
            return
        try:
            self.client.agent.check.deregister(f"service:{inst.id}")
            self.register(inst, True)
        except Exception as exc:  # noqa: BLE001 - Consul's own check decides, then
            LOG.warning("cannot mark %s passing: %s", inst.id, exc)

    def _maintenance(self, service_id: str, enable: bool, reason: str | None = None) -> None:
        try:
            self.client.agent.service.maintenance(service_id, enable, reason)
        except Exception as exc:  # noqa: BLE001 - Consul's own check still catches it
            LOG.warning("cannot %s maintenance of %s: %s", "set" if enable else "lift",
                        service_id, exc)

    def _lift_stale(self) -> None:
        """Lift the maintenance an earlier daemon set on instances that are not down."""
        try:
            checks = self.client.agent.checks() or {}
        except Exception as exc:  # noqa: BLE001 - tried again on the next pass
            LOG.warning("cannot read the agent's checks: %s", exc)
            return
        self._cleaned = True
        with self._lock:
            ours = {inst.id: key for key, insts in self._instances.items() for inst in insts}
            down = set(self._down)
        prefix = REASON.split("{}")[0]
        for check_id, check in checks.items():
            service_id = check_id.removeprefix(MAINTENANCE)
            if (check_id.startswith(MAINTENANCE) and service_id in ours
                    and ours[service_id] not in down
                    and str(check.get("Notes") or "").startswith(prefix)):
                self._maintenance(service_id, False)
