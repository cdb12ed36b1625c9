"""Fair share of the DNS forwarder: a per-source token bucket and a cap on each source's
queries in flight, so that one container flooding its resolver cannot starve the others.

Pure apart from the clock it is given; thread-safe (the forwarder's listener thread admits,
its workers release).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

RATE = 200.0  # queries per second each source may sustain
BURST = 400  # queries a quiet source may send at once
IN_FLIGHT = 16  # queries of one source being answered at a time
_MAX_SOURCES = 4096  # buckets kept before idle ones are forgotten


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    busy: int = 0


class SourceLimiter:
    """``admit(source)`` says whether a query from ``source`` may be answered now (and takes
    a token and an in-flight slot); ``done(source)`` gives the slot back. ``dropped`` counts
    the refused queries per source."""

    def __init__(self, rate: float = RATE, burst: int = BURST, in_flight: int = IN_FLIGHT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.in_flight, self.clock = rate, burst, in_flight, clock
        self.dropped: Counter[str] = Counter()
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def admit(self, source: str) -> bool:
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(source)
            if bucket is None:
                if len(self._buckets) >= _MAX_SOURCES:
                    self._forget_idle(now)
                bucket = self._buckets[source] = _Bucket(float(self.burst), now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens < 1 or bucket.busy >= self.in_flight:
                self.dropped[source] += 1
                return False
            bucket.tokens -= 1
            bucket.busy += 1
            return True

    def done(self, source: str) -> None:
        with self._lock:
            bucket = self._buckets.get(source)
            if bucket is not None and bucket.busy > 0:
                bucket.busy -= 1

    def _forget_idle(self, now: float) -> None:
        """Drop the buckets of sources with nothing in flight and a full bucket by now."""
        for source, bucket in list(self._buckets.items()):
            full = bucket.tokens + (now - bucket.stamp) * self.rate >= self.burst
            if bucket.busy == 0 and full:
                del self._buckets[source]
