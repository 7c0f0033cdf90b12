"""Per-source rate limits in front of the CoAP decoder (flood control).

What: :class:`SourceLimiter` decides, for every datagram and *before* it is
decoded, whether its source may be served. The endpoint drops what it refuses
without a reply and without a log line (issue 10 item 11: an unauthenticated
flood from 1,000 source ports at ~118k datagrams/s left 41 of 51 legitimate
REGs unanswered and wrote 377 MB of log in 150 s).

Policy:
    * Every source (IP, port) gets a token bucket: ``burst`` datagrams at once,
      refilled at ``rate`` per second. The sources are keyed by port as well
      as address, so a flood from many ports of one host does not starve a
      legitimate device on the same host (or behind the same NAT).
    * A source whose bucket runs dry is asked about once: the ``is_trusted``
      callback (the MSGin5G transport answers "a UE is registered from this
      address") upgrades it to the trusted bucket (``trusted_rate``,
      ``trusted_burst``), so a registered UE may send thousands of messages per
      second. An untrusted source is asked again at most every ``recheck``
      seconds; in between its excess datagrams are dropped at the cost of a
      dict lookup and a few float operations.
    * The table of sources is bounded: at most ``max_sources`` entries in two
      generations of plain dicts swapped every ``idle`` seconds (an entry not
      used for a whole generation is forgotten, which is the same as a full
      bucket after ``idle`` >= ``burst / rate`` seconds). When the table is
      full, new sources share one overflow bucket (``overflow_rate``), so an
      attacker with spoofed addresses cannot grow the memory or evict the
      state of known sources.

Dropping is silent on purpose: RFC 7252 §4.2/§4.3 lets a receiver ignore a
message it cannot process, a dropped CON looks like loss and the client backs
off exponentially, and an answer (RST or 5.03) would turn the server into a
reflector for spoofed sources.

Sans-I/O: the limiter reads an injected clock and never touches a socket.
"""

from __future__ import annotations

from collections.abc import Callable

from msgin5g.coap.address import Peer

__all__ = ["SourceLimiter", "TrustCheck"]

TrustCheck = Callable[[Peer], bool]
"""Answers whether a source address belongs to an authenticated peer."""

_OVERFLOW: Peer = ("<overflow>", 0)


class SourceLimiter:
    """Token buckets per source address with bounded state.

    Args:
        clock: monotonic seconds (e.g. ``loop.time``).
        rate: datagrams per second refilled for an untrusted source.
        burst: bucket size of an untrusted source.
        trusted_rate: refill for a trusted source (a registered UE).
        trusted_burst: bucket size of a trusted source.
        max_sources: bound on the number of sources remembered.
        overflow_rate: refill of the bucket shared by the sources that do not
            fit in the table (default ``rate * 64``); its size is
            ``overflow_rate`` (one second's worth).
        idle: generation length in seconds; a source silent this long is
            forgotten (at most twice this long).
        recheck: how often an untrusted source with an empty bucket is
            re-checked with ``is_trusted``.
        is_trusted: the trust callback, or None (no source is ever trusted).
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_current",
        "_dropped",
        "_idle",
        "_is_trusted",
        "_max",
        "_overflow_rate",
        "_overflowed",
        "_previous",
        "_rate",
        "_recheck",
        "_rotate_at",
        "_trusted_burst",
        "_trusted_rate",
        "_upgrades",
    )

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        rate: float = 1.0,
        burst: float = 8.0,
        trusted_rate: float = 20_000.0,
        trusted_burst: float = 20_000.0,
        max_sources: int = 65_536,
        overflow_rate: float | None = None,
        idle: float = 30.0,
        recheck: float = 1.0,
        is_trusted: TrustCheck | None = None,
    ) -> None:
        if rate <= 0 or burst < 1 or trusted_rate <= 0 or trusted_burst < 1:
            raise ValueError("rates must be positive and bursts at least 1")
        if max_sources < 2:
            raise ValueError("max_sources must be at least 2")
        self._clock = clock
        self._rate = float(rate)
        self._burst = float(burst)
        self._trusted_rate = float(trusted_rate)
        self._trusted_burst = float(trusted_burst)
        self._max = max_sources
        self._overflow_rate = float(
            overflow_rate if overflow_rate is not None else rate * 64
        )
        self._idle = idle
        self._recheck = recheck
        self._is_trusted = is_trusted
        # source -> [tokens, last refill, rate, burst, next trust check]
        self._current: dict[Peer, list[float]] = {}
        self._previous: dict[Peer, list[float]] = {}
        self._rotate_at = clock() + idle
        self._dropped = 0
        self._overflowed = 0
        self._upgrades = 0

    def set_trust_check(self, is_trusted: TrustCheck | None) -> None:
        """Install (or remove) the trust callback."""
        self._is_trusted = is_trusted

    def allow(self, source: Peer) -> bool:
        """Take one token for a datagram from ``source``.

        Returns:
            True if the datagram may be processed, False to drop it.
        """
        now = self._clock()
        if now >= self._rotate_at:
            self._rotate(now)
        entry = self._current.get(source)
        if entry is None:
            entry = self._previous.pop(source, None)
            if entry is None:
                if len(self._current) + len(self._previous) >= self._max:
                    return self._allow_overflow(now)
                entry = [self._burst, now, self._rate, self._burst, 0.0]
            self._current[source] = entry
        tokens = entry[0] + (now - entry[1]) * entry[2]
        if tokens > entry[3]:  # noqa: PLR1730 (hot path: min() is a call)
            tokens = entry[3]
        entry[1] = now
        if tokens >= 1.0:
            entry[0] = tokens - 1.0
            return True
        entry[0] = tokens
        return self._exhausted(source, entry, now)

    def _exhausted(self, source: Peer, entry: list[float], now: float) -> bool:
        check = self._is_trusted
        if check is not None and entry[2] < self._trusted_rate and now >= entry[4]:
            if check(source):
                self._upgrades += 1
                entry[2] = self._trusted_rate
                entry[3] = self._trusted_burst
                entry[0] = self._trusted_burst - 1.0
                return True
            entry[4] = now + self._recheck
        self._dropped += 1
        return False

    def _allow_overflow(self, now: float) -> bool:
        entry = self._current.get(_OVERFLOW)
        if entry is None:
            entry = self._previous.pop(_OVERFLOW, None)
            if entry is None:
                rate = self._overflow_rate
                entry = [rate, now, rate, rate, float("inf")]
            self._current[_OVERFLOW] = entry
        self._overflowed += 1
        tokens = entry[0] + (now - entry[1]) * entry[2]
        if tokens > entry[3]:  # noqa: PLR1730 (hot path: min() is a call)
            tokens = entry[3]
        entry[1] = now
        if tokens >= 1.0:
            entry[0] = tokens - 1.0
            return True
        entry[0] = tokens
        self._dropped += 1
        return False

    def _rotate(self, now: float) -> None:
        if now >= self._rotate_at + self._idle:
            self._previous = {}
        else:
            self._previous = self._current
        self._current = {}
        self._rotate_at = now + self._idle

    def is_limited(self, source: Peer) -> bool:
        """Whether ``source`` currently has an empty bucket (diagnostics)."""
        entry = self._current.get(source) or self._previous.get(source)
        if entry is None:
            return False
        now = self._clock()
        return entry[0] + (now - entry[1]) * entry[2] < 1.0

    def stats(self) -> dict[str, int]:
        """Counters: sources tracked, datagrams dropped, overflow use, upgrades."""
        return {
            "sources": len(self._current) + len(self._previous),
            "dropped": self._dropped,
            "overflowed": self._overflowed,
            "trusted_upgrades": self._upgrades,
        }

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)
