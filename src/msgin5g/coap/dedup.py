"""The RFC 7252 duplicate-detection cache (§4.5), bounded by time, entries and bytes.

What: :class:`DedupCache` remembers, per (peer, Message ID), what a request we
received became: the encoded reply to replay for a duplicate CON (``bytes``),
or one of the small ``int`` states below while the request is processed or
after it was answered in a way that leaves nothing to replay. The message
layer (:mod:`msgin5g.coap.exchange`) owns one for received requests and a
second, smaller one for the NON notifications it sent ((peer, Message ID) ->
token, so that an RST answering one can be recognised, RFC 7641 §3.6).

RFC clauses:
    * §4.5: duplicates are detected on (sender endpoint, Message ID) for
      EXCHANGE_LIFETIME; a duplicate CON gets the cached reply again.
    * §4.4: a Message ID is never re-used with the same endpoint within
      EXCHANGE_LIFETIME, which is why NON entries may live as long as CON ones.

Design choices (``../shared/PERFORMANCE.md``):
    * Two generations of plain dicts, ``current`` and ``previous``; every
      lifetime ``previous`` is dropped and ``current`` becomes ``previous``, so
      an entry lives between one and two lifetimes, with no per-entry timer and
      O(1) bulk expiry. Values are the encoded reply or a small ``int``; no
      message objects are kept.
    * When ``current`` holds half of ``max_entries`` or half of ``max_bytes``
      (encoded replies plus :data:`ENTRY_OVERHEAD` per entry) the rotation
      happens early: the memory bound wins over the lifetime. The byte bound is
      what the cache can cost in RSS, whatever the load.
    * A reply that would grow ``previous`` beyond half the byte bound (it
      answers a request that was in flight at the swap) is sent but not kept
      (:data:`ANSWERED`): its duplicates are ignored, like those of a request
      still being processed, and the client's retransmission times out.
    * Never evict entry by entry (``del d[next(iter(d))]`` in a loop went
      quadratic at 4-10k requests/s). A dropped generation is not released in
      one statement either: 100,000 entries took ~7 ms to free, a loop stall;
      :class:`~msgin5g.runtime.reaper.Reaper` empties it a few entries per put
      (``popitem``, O(1)).
"""

from __future__ import annotations

from msgin5g.coap.address import Peer
from msgin5g.runtime.reaper import Reaper

__all__ = [
    "ANSWERED",
    "DEFAULT_DEDUP_BYTES",
    "ENTRY_OVERHEAD",
    "NON_DONE",
    "PROCESSING",
    "SEPARATE",
    "SEPARATE_DONE",
    "DedupCache",
]

DEFAULT_DEDUP_BYTES = 32 * 1024 * 1024
"""Default byte bound of the duplicate-detection cache (32 MiB)."""

ENTRY_OVERHEAD = 160
"""Bytes charged per entry besides the encoded reply: the dict slot, the (peer,
Message ID) key tuple and its share of the peer tuple (measured ~155 B on
CPython 3.11)."""

# States of a request we received (``bytes`` = the final reply to replay).
PROCESSING = 0
"""Dispatched to the application; duplicates are ignored."""
SEPARATE = 1
"""Acknowledged with an empty ACK; the separate response is still to come."""
SEPARATE_DONE = 2
"""Empty ACK sent and nothing (more) to send; duplicates get the empty ACK."""
NON_DONE = 3
"""A NON request that was answered; duplicates are ignored."""
ANSWERED = 4
"""Answered, reply not kept (byte bound); duplicates are ignored."""

Key = tuple[Peer, int]
Value = bytes | int | None


class DedupCache:
    """Two generations of dicts keyed on (peer, Message ID); see the module docstring.

    Args:
        lifetime: how long an entry lives at least (seconds; at most twice).
        max_entries: bound on the entries of both generations together.
        now: the clock's current value (starts the first generation).
        max_bytes: bound on the bytes charged to both generations (None: none).
    """

    __slots__ = (
        "current",
        "half",
        "half_bytes",
        "lifetime",
        "nbytes",
        "prev_bytes",
        "previous",
        "reaper",
        "rotate_at",
    )

    def __init__(
        self,
        lifetime: float,
        max_entries: int,
        now: float,
        max_bytes: int | None = None,
    ) -> None:
        self.current: dict[Key, bytes | int] = {}
        self.previous: dict[Key, bytes | int] = {}
        self.lifetime = lifetime
        self.half = max(1, max_entries // 2)
        self.half_bytes = (
            max(ENTRY_OVERHEAD, max_bytes // 2) if max_bytes else float("inf")
        )
        self.nbytes = 0
        self.prev_bytes = 0
        self.rotate_at = now + lifetime
        # a dropped generation is emptied a few entries per put (no loop stall)
        self.reaper = Reaper()

    def get(self, key: Key) -> Value:
        """The reply or state kept for ``key``, or None."""
        value = self.current.get(key)
        if value is None:
            value = self.previous.get(key)
        return value

    def expire(self, now: float) -> None:
        """Rotate the generations if a lifetime has passed."""
        if now >= self.rotate_at:
            self.reaper.bury(self.previous)
            if now >= self.rotate_at + self.lifetime:
                self.reaper.bury(self.current)
                self.previous = {}
                self.prev_bytes = 0
            else:
                self.previous = self.current
                self.prev_bytes = self.nbytes
            self.current = {}
            self.nbytes = 0
            self.rotate_at = now + self.lifetime

    def _swap(self) -> None:
        self.reaper.bury(self.previous)
        self.previous = self.current
        self.prev_bytes = self.nbytes
        self.current = {}
        self.nbytes = 0

    def put(self, key: Key, value: bytes | int) -> None:
        """Add a new entry (rotating early when ``current`` is half full)."""
        if len(self.current) >= self.half or self.nbytes >= self.half_bytes:
            self._swap()
        self.reaper.reap()
        self.current[key] = value
        self.nbytes += (
            ENTRY_OVERHEAD + len(value) if isinstance(value, bytes) else ENTRY_OVERHEAD
        )

    def pop(self, key: Key) -> Value:
        """Remove and return the entry of ``key``, or None."""
        value = self.current.pop(key, None)
        if value is None:
            value = self.previous.pop(key, None)
        return value

    def update(self, key: Key, value: bytes | int) -> None:
        """Replace the entry of ``key`` (a state becomes the reply), within the bounds."""
        size = len(value) if isinstance(value, bytes) else 0
        if key in self.current:
            if not size or self.nbytes + size <= self.half_bytes:
                self.current[key] = value
                self.nbytes += size
                return
            self._swap()  # the entry is now in ``previous``
        if key in self.previous:
            if size and self.prev_bytes + size > self.half_bytes:
                value = ANSWERED
            else:
                self.prev_bytes += size
            self.previous[key] = value
        else:
            self.put(key, value)

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)

    def __bool__(self) -> bool:
        return bool(self.current or self.previous)

    @property
    def bytes(self) -> int:
        """The bytes charged to both generations."""
        return self.nbytes + self.prev_bytes
