"""A fixed-bucket histogram cheap enough for the hot path (one bisect, two adds).

What: :class:`Histogram` counts observations (seconds) in cumulative-ready
buckets; the Prometheus collector (:mod:`msgin5g.server.metrics`) reads it at
scrape time. Why not prometheus-client's own ``Histogram``: a call into it per
message takes a lock and walks label dictionaries (docs/PERFORMANCE lessons:
the hot path increments plain numbers, the scrape does the work).
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["LATENCY_BUCKETS", "Histogram"]

LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
"""Upper bounds in seconds (a CoAP CON that needs every retransmission takes
up to ~93 s with the defaults)."""


class Histogram:
    """Observation counts per bucket (not cumulative), their sum and count.

    Args:
        buckets: increasing upper bounds; one more bucket holds the rest (+Inf).
    """

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation of ``value``."""
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Observations so far."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs as Prometheus wants them, ``+Inf`` last."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, count in zip(
            (*(repr(b) for b in self.buckets), "+Inf"), self.counts, strict=True
        ):
            total += count
            out.append((bound, total))
        return out
