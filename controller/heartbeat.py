"""The daemon's heartbeat in Consul KV: ``<prefix>/controllers/<host>``, rewritten every few
seconds, so ``switchboard up`` can tell at once whether any controller is alive.

The value is ``{"pid", "bridge", "of_port", "started", "heartbeat", "interval"}`` (times in
seconds since the epoch). A heartbeat older than :data:`STALE_AFTER` intervals is a dead
daemon. Writing it never holds the reconcile loop: it runs in its own thread, and a failed
write (Consul down) is retried on the next beat.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import consul

LOG = logging.getLogger("switchboard.heartbeat")
INTERVAL = 5.0  # seconds between beats
STALE_AFTER = 3  # intervals without a beat: the daemon is gone
GRACE = 5.0  # seconds `up` waits for a first beat (a daemon started a moment ago)


def key(prefix: str, host: str) -> str:
    return f"{prefix.strip('/')}/controllers/{host}"


def start(
    client: consul.Consul, prefix: str, host: str, info: dict[str, Any],
    stopping: threading.Event, interval: float = INTERVAL,
) -> threading.Thread:
    """Beat until ``stopping`` is set; the thread (a daemon thread, already started)."""
    started = time.time()

    def beat() -> None:
        failing = False
        while not stopping.is_set():
            value = {**info, "started": started, "heartbeat": time.time(), "interval": interval}
            try:
                client.kv.put(key(prefix, host), json.dumps(value, sort_keys=True))
                failing = False
            except Exception as exc:  # noqa: BLE001 - Consul down: beat again later
                if not failing:
                    LOG.debug("cannot write the heartbeat: %s", exc)
                failing = True
            stopping.wait(interval)

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    return thread


def live(client: consul.Consul, prefix: str, now: float | None = None) -> dict[str, Any]:
    """Host -> heartbeat of each controller that beat recently (a Consul error propagates)."""
    now = time.time() if now is None else now
    _, entries = client.kv.get(f"{prefix.strip('/')}/controllers/", recurse=True)
    alive = {}
    for entry in entries or []:
        try:
            value = json.loads(entry["Value"])
            fresh = now - float(value["heartbeat"]) < STALE_AFTER * float(value["interval"])
        except (TypeError, ValueError, KeyError):
            continue
        if fresh:
            alive[entry["Key"].rsplit("/", 1)[-1]] = value
    return alive


def wait_live(client: consul.Consul, prefix: str, grace: float = GRACE) -> dict[str, Any]:
    """:func:`live`, polled for up to ``grace`` seconds until some controller beats."""
    deadline = time.monotonic() + grace
    while not (alive := live(client, prefix)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return alive
