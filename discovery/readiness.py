"""Run an instance's check once, as Consul would, before registering it.

Consul runs a new check for the first time at a random moment within its interval, and DNS
leaves the instance out until it passes: an instance that already serves would stay
invisible for up to a whole interval. So the daemon runs the check itself just before
registering and registers the instance with the status it saw (Consul's ``Status`` field,
the initial state of a check). An instance whose check does not pass yet is tried again
every 50 ms for up to a second (its command may still be starting), then registered with
Consul's default (critical) and left to Consul's own checks.

The daemon asks only once the instance's container is plumbed and the switch has its
flows, and runs the check inside the container's network namespace (same address and
port): what it learns is whether the command answers. From the host, each check's
connection would go through the userspace switch first, whose slow path takes new
connections a few at a time (100 of them took 0.3 s here, and more at once failed).
Consul's own checks still run from the host.

The checks need no flows (they run inside the namespace), so when a pass is about to program
flows for new instances, :class:`EarlyChecks` tries each instance's check once meanwhile;
those that passed are registered (and are in this host's DNS answers) the moment the flows
are in, instead of waiting their turn among the workers then (100 instances at once took
160 ms after their flows were in). Nothing is published before the flows are in.

``register`` is expected to return at once (:class:`discovery.sync.ServiceSync` queues the
agent call): the agent takes registrations one at a time, and an instance's probe must not
wait for other instances' registrations.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from discovery.instances import CONTAINER_KEY, TOPOLOGY_KEY, CheckSpec, Instance
from plumbing.netns import NETNS_DIR, NetnsError, enter_netns
from sbcore.model import naming

__all__ = [
    "EarlyChecks",
    "check_passes",
    "container_netns",
    "passes_in_netns",
    "register_when_ready",
]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def check_passes(spec: CheckSpec, timeout: float = 0.25) -> bool:
    """Whether the check passes now: TCP connects, or HTTP GET answers 2xx (Consul's rule)."""
    try:
        if spec.kind == "tcp":
            host, _, port = spec.target.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        with _OPENER.open(spec.target, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (OSError, ValueError, urllib.error.URLError):
        return False


def passes_in_netns(netns: str, spec: CheckSpec, timeout: float = 0.25) -> bool:
    """:func:`check_passes` from inside the named network namespace: the calling thread
    enters it (setns), makes the check's connection there and comes back; False when the
    namespace is gone."""
    try:
        target = os.open(NETNS_DIR / netns, os.O_RDONLY)
    except OSError:
        return False
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            enter_netns(target, f"namespace {netns}")
        except NetnsError:
            return False
        try:
            return check_passes(spec, timeout)
        finally:  # never left in a container's namespace: NetnsError if it cannot leave
            enter_netns(home, "the root namespace")
    finally:
        os.close(target)
        os.close(home)


def container_netns(prefix: str) -> Callable[[Instance], str | None]:
    """The network namespace of a topology instance's container (None: not a container's)."""

    def netns(inst: Instance) -> str | None:
        meta = inst.meta_dict
        if TOPOLOGY_KEY not in meta or CONTAINER_KEY not in meta:
            return None
        return naming.netns_name(meta[TOPOLOGY_KEY], meta[CONTAINER_KEY], prefix)

    return netns


def _checker(
    probe: Callable[[CheckSpec], bool], netns: Callable[[Instance], str | None] | None
) -> Callable[[Instance], bool]:
    """Runs an instance's check once: in its namespace when ``netns`` names one, else with
    ``probe``."""

    def passes(inst: Instance) -> bool:
        assert inst.check is not None
        where = netns(inst) if netns is not None else None
        return passes_in_netns(where, inst.check) if where else probe(inst.check)

    return passes


class EarlyChecks:
    """Each instance's check tried once, in parallel, from now on (while the caller programs
    the flows); :meth:`passed` then says which passed, without waiting for the others."""

    def __init__(
        self,
        instances: Iterable[Instance],
        probe: Callable[[CheckSpec], bool] = check_passes,
        workers: int = 16,
        netns: Callable[[Instance], str | None] | None = None,
    ) -> None:
        pending = [inst for inst in instances if inst.check is not None]
        passes = _checker(probe, netns)
        self._pool = ThreadPoolExecutor(max(1, min(workers, len(pending))),
                                        thread_name_prefix="early-check")
        self._tries = {inst.id: self._pool.submit(passes, inst) for inst in pending}

    def passed(self) -> set[str]:
        """IDs of the instances whose check has passed; the tries not made yet are dropped."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        return {sid for sid, future in self._tries.items()
                if future.done() and not future.cancelled() and future.exception() is None
                and future.result()}


def register_when_ready(
    instances: Iterable[Instance],
    register: Callable[[Instance, bool], None],
    wait: float = 1.0,
    every: float = 0.05,
    probe: Callable[[CheckSpec], bool] = check_passes,
    workers: int = 16,
    netns: Callable[[Instance], str | None] | None = None,
    early: EarlyChecks | None = None,
) -> None:
    """Call ``register(instance, passing)`` for each instance with a check: with True as soon
    as its check passes, with False once ``wait`` seconds have gone by without. Instances
    are probed in parallel (``workers`` at a time), so ``register`` must be safe to call
    from several threads. ``netns`` names an instance's namespace: its check is run there
    (:func:`passes_in_netns`); otherwise, and for instances it gives None for, ``probe``.
    Those ``early`` saw pass are registered first, at once, without another try."""
    pending = [inst for inst in instances if inst.check is not None]
    passed = early.passed() if early is not None else set()
    for inst in [inst for inst in pending if inst.id in passed]:
        register(inst, True)
    pending = [inst for inst in pending if inst.id not in passed]
    if not pending:
        return
    deadline = time.monotonic() + wait
    passes = _checker(probe, netns)

    def one(inst: Instance) -> None:
        while not passes(inst):
            if time.monotonic() + every > deadline:
                register(inst, False)
                return
            time.sleep(every)
        register(inst, True)

    with ThreadPoolExecutor(min(workers, len(pending)), thread_name_prefix="ready") as pool:
        for future in [pool.submit(one, inst) for inst in pending]:
            future.result()
