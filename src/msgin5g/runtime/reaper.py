"""Dropping a large dict a few entries at a time, so the event loop never stalls on it.

What: the duplicate caches (:mod:`msgin5g.coap.dedup`, :mod:`msgin5g.service.dedup`)
keep two generations of dicts and drop the older one whole when they rotate. At
10,000 messages/s a generation holds 50,000-200,000 entries, and releasing it in
one statement stalled the event loop for 3-14 ms (the keys' and values'
deallocation), a stall every few seconds that every message arriving meanwhile
waits out. :class:`Reaper` takes such a dict instead and deletes a few entries on
each call of :meth:`Reaper.reap`, which the caches make once per insertion.

Design choices:
    * ``dict.popitem()`` removes the last entry in O(1) (CPython shortens the
      entry table from the end; no dummy entries to scan, unlike deleting from
      the front with ``next(iter(d))``, which went quadratic).
    * :data:`PER_REAP` entries per insertion drain a generation long before the
      next rotation (a generation fills one insertion at a time), so in a steady
      state at most one dict waits; a dict of :data:`AT_ONCE` entries or fewer is
      simply released, and beyond :data:`MAX_WAITING` waiting dicts (rotations
      faster than insertions, i.e. by time on an idle server) the oldest is
      released whole: memory stays bounded by a generation or two.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AT_ONCE", "MAX_WAITING", "PER_REAP", "Reaper"]

AT_ONCE = 2048
"""Dicts this small are released at once (well under a millisecond)."""

PER_REAP = 8
"""Entries deleted per :meth:`Reaper.reap` call."""

MAX_WAITING = 2
"""Dicts waiting at most; beyond, the oldest is released whole."""


class Reaper:
    """Dicts waiting to be emptied a few entries at a time."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[dict[Any, Any]] = []

    def bury(self, old: dict[Any, Any]) -> None:
        """Take ``old`` (no longer used by its owner) to be emptied gradually."""
        if len(old) <= AT_ONCE:
            return  # released by the caller's reference going away
        waiting = self._waiting
        waiting.append(old)
        if len(waiting) > MAX_WAITING:
            del waiting[0]

    def reap(self) -> None:
        """Delete up to :data:`PER_REAP` entries of the dict waiting last."""
        waiting = self._waiting
        if not waiting:
            return
        old = waiting[-1]
        for _ in range(PER_REAP):
            if not old:
                waiting.pop()
                return
            old.popitem()

    def __len__(self) -> int:
        """Entries still waiting to be deleted."""
        return sum(len(old) for old in self._waiting)
