"""Run an instance's check once from the host, as Consul would, before registering it.

Consul runs a new check for the first time at a random moment within its interval, and DNS
leaves the instance out until it passes: an instance that already serves would stay
invisible for up to a whole interval. So the daemon runs the check itself just before
registering and registers the instance with the status it saw (Consul's ``Status`` field,
the initial state of a check). An instance whose check does not pass yet is tried again
every 50 ms for up to a second (its command may still be starting), then registered with
Consul's default (critical) and left to Consul's own checks.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from discovery.instances import CheckSpec, Instance

__all__ = ["check_passes", "register_when_ready"]

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


def register_when_ready(
    instances: Iterable[Instance],
    register: Callable[[Instance, bool], None],
    wait: float = 1.0,
    every: float = 0.05,
    probe: Callable[[CheckSpec], bool] = check_passes,
    workers: int = 16,
) -> None:
    """Call ``register(instance, passing)`` for each instance with a check: with True as soon
    as its check passes, with False once ``wait`` seconds have gone by without. Instances
    are probed and registered in parallel (``workers`` at a time), so ``register`` must be
    safe to call from several threads."""
    pending = [inst for inst in instances if inst.check is not None]
    if not pending:
        return
    deadline = time.monotonic() + wait

    def one(inst: Instance) -> None:
        assert inst.check is not None
        while not probe(inst.check):
            if time.monotonic() + every > deadline:
                register(inst, False)
                return
            time.sleep(every)
        register(inst, True)

    with ThreadPoolExecutor(min(workers, len(pending)), thread_name_prefix="ready") as pool:
        for future in [pool.submit(one, inst) for inst in pending]:
            future.result()
