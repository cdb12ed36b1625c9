"""The DNS forwarder's fair share: a per-source token bucket and in-flight cap (pure)."""

from __future__ import annotations

from discovery.ratelimit import SourceLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_source_gets_its_burst_then_its_rate_and_others_are_not_affected():
    clock = Clock()
    limiter = SourceLimiter(rate=10, burst=5, in_flight=100, clock=clock)
    admitted = [limiter.admit("10.0.0.2") for _ in range(8)]
    assert admitted == [True] * 5 + [False] * 3
    assert limiter.dropped["10.0.0.2"] == 3
    assert limiter.admit("10.0.0.3")  # another container: its own bucket
    clock.now += 0.2  # 10/s: two more tokens
    assert [limiter.admit("10.0.0.2") for _ in range(3)] == [True, True, False]


def test_queries_in_flight_are_capped_per_source_until_answered():
    limiter = SourceLimiter(rate=1000, burst=1000, in_flight=2, clock=Clock())
    assert limiter.admit("a") and limiter.admit("a")
    assert not limiter.admit("a")
    limiter.done("a")
    assert limiter.admit("a")
    assert limiter.admit("b")


def test_idle_sources_are_forgotten_when_there_are_too_many(monkeypatch):
    from discovery import ratelimit

    monkeypatch.setattr(ratelimit, "_MAX_SOURCES", 3)
    clock = Clock()
    limiter = SourceLimiter(rate=10, burst=1, clock=clock)
    for source in ("a", "b", "c"):
        assert limiter.admit(source)
        limiter.done(source)
    clock.now += 1  # all full again
    assert limiter.admit("d")
    assert len(limiter._buckets) == 1  # noqa: SLF001 - the bound on memory
