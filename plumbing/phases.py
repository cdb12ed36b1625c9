"""Where a pass's time goes: named phases timed one after another, logged as one line."""

from __future__ import annotations

import time


class Phases:
    """Consecutive phases: ``lap(name)`` ends the phase under way and names it."""

    def __init__(self) -> None:
        self.took: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.took[name] = self.took.get(name, 0.0) + now - self._last
        self._last = now

    def total(self) -> float:
        return self._last - self._start

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in self.took.items() if v >= 0.0005)
        return f"{self.total():.3f} s ({parts})"
