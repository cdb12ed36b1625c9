"""Applies instance plans to the local Consul agent: the I/O edge of service discovery."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import consul

from discovery.fresh import FreshInstances
from discovery.instances import CheckSpec, Instance, consul_meta
from discovery.plan import SyncPlan, plan_sync

__all__ = ["ReadyGate", "ServiceSync", "SyncError", "consul_check"]

LOG = logging.getLogger("switchboard.discovery")
AGENT_CALLS = 4  # registrations in flight at once (the agent applies them one at a time)

# Given instances with checks and a register(instance, passing) function, calls it for each.
ReadyGate = Callable[[list[Instance], Callable[[Instance, bool], None]], None]


class SyncError(RuntimeError):
    """Some changes of a plan failed; the others were applied. ``errors``: ID -> reason."""

    def __init__(self, plan: SyncPlan, errors: dict[str, str]) -> None:
        self.plan = plan
        self.errors = errors
        super().__init__(
            "; ".join(f"service {sid}: {why}" for sid, why in sorted(errors.items()))
        )


def consul_check(spec: CheckSpec) -> dict[str, Any]:
    """The check definition py-consul sends for a :class:`CheckSpec`."""
    if spec.kind == "http":
        return consul.Check.http(spec.target, spec.interval, timeout=spec.timeout)
    host, _, port = spec.target.rpartition(":")
    return consul.Check.tcp(host, int(port), spec.interval, timeout=spec.timeout)


class ServiceSync:
    """Keeps the local agent's registrations in line with desired instances.

    ``registrations`` and ``deregistrations`` count the agent calls made, so a repeated
    reconcile with the same desired state can be shown to change nothing. ``fresh``, when
    given, holds the instances seen answering until the agent has them (see
    :mod:`discovery.fresh`).
    """

    def __init__(self, client: consul.Consul, fresh: FreshInstances | None = None) -> None:
        self.client = client
        self.fresh = fresh
        self.registrations = 0
        self.deregistrations = 0
        self._count = threading.Lock()  # register() may run on several threads

    def registered(self) -> dict[str, dict[str, Any]]:
        """``/v1/agent/services``: service ID -> entry."""
        return self.client.agent.services() or {}

    def reconcile(
        self, desired: list[Instance], owned_topologies: set[str] | None, complete: bool
    ) -> SyncPlan:
        """Read the agent, plan and apply; the plan applied.

        ``complete`` False means the desired state is not known yet (say, before the first
        read of KV): then missing or changed instances are registered, nothing deregistered.
        Raises :class:`SyncError` after trying every change when some failed.
        """
        plan = self.plan(desired, owned_topologies, complete)
        self.apply(plan)
        return plan

    def plan(
        self, desired: list[Instance], owned_topologies: set[str] | None, complete: bool
    ) -> SyncPlan:
        """Read the agent and plan (see :meth:`reconcile`) without changing anything."""
        plan = plan_sync(desired, self.registered(), owned_topologies)
        if not complete:
            plan = SyncPlan(plan.register, [], plan.conflicts)
        for service_id in plan.conflicts:
            LOG.warning("service ID %s is used by more than one instance; keeping the first",
                        service_id)
        return plan

    def apply(self, plan: SyncPlan, ready: ReadyGate | None = None) -> None:
        """Register and deregister as planned; raise SyncError listing what failed.

        ``ready`` (e.g. :func:`discovery.readiness.register_when_ready`) decides when each
        instance with a check is registered, and with which initial status; the caller
        passes it once the instances' containers are plumbed and their flows are in. Then
        an instance without a check, or whose check passed, is fresh (in the daemon's DNS
        answers) from that moment until Consul has it; the others are registered meanwhile.
        """
        errors: dict[str, str] = {}
        fresh = self.fresh if ready is not None else None

        def call(inst: Instance, passing: bool) -> None:
            try:
                self.register(inst, passing)
            except (consul.ConsulException, OSError) as exc:
                errors[inst.id] = f"cannot register: {exc}"
                if fresh is not None:
                    fresh.drop(inst.id)
                return
            except BaseException:
                if fresh is not None:
                    fresh.drop(inst.id)
                raise
            if fresh is not None:
                fresh.registered(inst.id)

        workers = AGENT_CALLS if ready is not None else 1  # otherwise one by one, in order
        queued: list[Future[None]] = []
        with ThreadPoolExecutor(workers, thread_name_prefix="register") as calls:

            def register(inst: Instance, passing: bool) -> None:  # queued: returns at once
                if fresh is not None and (passing or inst.check is None):
                    fresh.add(inst)
                queued.append(calls.submit(call, inst, passing))

            gated = [i for i in plan.register if i.check is not None] if ready else []
            for inst in plan.register:
                if inst not in gated:
                    register(inst, False)
            if ready is not None and gated:
                ready(gated, register)
        for future in queued:
            future.result()  # a bug in a registration surfaces here, as it did inline
        for service_id in plan.deregister:
            if self.fresh is not None:
                self.fresh.drop(service_id)
            try:
                self.deregister(service_id)
            except (consul.ConsulException, OSError) as exc:
                errors[service_id] = f"cannot deregister: {exc}"
        if errors:
            raise SyncError(plan, errors)

    def register(self, inst: Instance, passing: bool = False) -> None:
        """(Re-)register one instance; its check replaces any check registered before, and
        starts as passing when ``passing`` (the caller saw it pass), else as Consul's default
        (critical)."""
        check = consul_check(inst.check) if inst.check is not None else None
        if check is not None and passing:
            check["Status"] = "passing"
        self.client.agent.service.register(
            inst.name,
            service_id=inst.id,
            address=inst.address,
            port=inst.port,
            tags=list(inst.tags),
            meta=consul_meta(inst),
            check=check,
            replace_existing_checks=True,
        )
        with self._count:
            self.registrations += 1
        LOG.info("registered service %s (%s at %s:%d)", inst.id, inst.name, inst.address,
                 inst.port)

    def deregister(self, service_id: str) -> None:
        """Remove one service (and its checks) from the agent."""
        self.client.agent.service.deregister(service_id)
        with self._count:
            self.deregistrations += 1
        LOG.info("deregistered service %s", service_id)
