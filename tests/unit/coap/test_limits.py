"""SourceLimiter: per-source token buckets with bounded state (fake clock)."""

from __future__ import annotations

import pytest

from msgin5g.coap.limits import SourceLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


A = ("127.0.0.1", 40001)
B = ("127.0.0.1", 40002)


def test_burst_then_rate() -> None:
    clock = FakeClock()
    limiter = SourceLimiter(clock, rate=2.0, burst=5.0)
    assert [limiter.allow(A) for _ in range(8)] == [True] * 5 + [False] * 3
    # another port of the same host has its own bucket
    assert limiter.allow(B)
    clock.now += 1.0  # two tokens back
    assert [limiter.allow(A) for _ in range(3)] == [True, True, False]
    clock.now += 100.0  # refills to the burst, not beyond
    assert sum(limiter.allow(A) for _ in range(20)) == 5
    assert limiter.stats()["dropped"] == 3 + 1 + 15


def test_trusted_source_is_upgraded_once_its_bucket_is_empty() -> None:
    clock = FakeClock()
    asked: list[object] = []

    def is_trusted(peer: object) -> bool:
        asked.append(peer)
        return peer == A

    limiter = SourceLimiter(
        clock,
        rate=0.1,
        burst=2.0,
        trusted_rate=1000.0,
        trusted_burst=500.0,
        is_trusted=is_trusted,
    )
    assert sum(limiter.allow(A) for _ in range(502)) == 502
    assert asked == [A]  # asked only when the small bucket ran dry
    assert not limiter.allow(A)  # the trusted bucket is finite too
    assert sum(limiter.allow(B) for _ in range(100)) == 2
    # B was asked once; it is asked again only after `recheck` (1 s)
    assert asked == [A, B]
    clock.now += 0.5
    limiter.allow(B)
    assert asked == [A, B]
    clock.now += 0.6
    limiter.allow(B)
    assert asked == [A, B, B]
    assert limiter.stats()["trusted_upgrades"] == 1


def test_table_is_bounded_and_overflow_is_shared() -> None:
    clock = FakeClock()
    limiter = SourceLimiter(clock, rate=1.0, burst=3.0, max_sources=100)
    allowed = 0
    for port in range(10_000):  # a flood from 10,000 ports
        allowed += limiter.allow(("10.0.0.1", port))
    assert len(limiter) <= 101  # the table plus the overflow bucket
    # 99 sources got their burst of 1 datagram each; the rest shared 64/s
    assert allowed <= 100 * 3 + 64
    assert limiter.stats()["overflowed"] > 9_000
    # a known source keeps its own bucket while the table is full
    assert limiter.allow(("10.0.0.1", 5))


def test_idle_sources_are_forgotten_in_bulk() -> None:
    clock = FakeClock()
    limiter = SourceLimiter(clock, rate=1.0, burst=2.0, idle=10.0, max_sources=1000)
    for port in range(500):
        limiter.allow(("10.0.0.1", port))
    assert len(limiter) == 500
    clock.now += 10.0
    limiter.allow(A)  # rotation: the 500 move to the previous generation
    assert len(limiter) == 501
    clock.now += 10.0
    limiter.allow(A)  # second rotation: they are gone
    assert len(limiter) == 1
    clock.now += 25.0
    limiter.allow(B)  # idle longer than two generations: all dropped at once
    assert len(limiter) == 1


def test_a_source_in_the_previous_generation_keeps_its_state() -> None:
    clock = FakeClock()
    limiter = SourceLimiter(clock, rate=0.01, burst=2.0, idle=10.0)
    assert limiter.allow(A) and limiter.allow(A)
    clock.now += 10.0
    assert not limiter.allow(A)  # moved forward, still empty
    assert limiter.is_limited(A)


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0}, {"burst": 0.5}, {"trusted_rate": 0}, {"max_sources": 1}],
)
def test_invalid_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        SourceLimiter(FakeClock(), **kwargs)  # type: ignore[arg-type]
