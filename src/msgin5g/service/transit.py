"""Delivered before written: the transit path of a message that asks for no storage.

Issue 13. On the ordinary path every accepted message is written (item and
duplicate-detection record, one transaction) *before* its sender gets
``DELY_ACCEPTED`` and before delivery starts, and removed again once the
recipient acknowledged it: three writer operations and a commit per message,
about a third of the server's CPU, for a message that lives a millisecond.

The transit path serves a message that does not ask for storage
(``storeAndForwardFlag`` absent or false), wants no delivery report route, and
goes to a UE registered directly at this server, reachable, with nothing queued
and no other transit delivery in flight. Delivery starts at once; the durable
write is **held** for ``delivery.transit_hold`` seconds. The sender's answer
waits for whichever comes first:

* the recipient acknowledges the delivery: the write is dropped and never
  reaches storage; the answer is sent;
* the hold ends, or the delivery fails so that it must be retried: the write
  goes to storage exactly as on the ordinary path, and the answer follows its
  commit (a retry then goes through the recipient's mailbox).

So a message that was answered is delivered or durable, as before, and a
``kill -9`` loses nothing that was answered. What a crash can cost a transit
message: if the server dies after the recipient got it but before the sender's
answer left, the sender retransmits to the restarted server, which has no
durable duplicate-detection record of it (the in-memory cache died with the
process) and delivers it a second time (at least once, never zero times). A
message that was never written is also not deduplicated across restarts beyond
the in-memory cache's window (docs/design.md "Transit path").

Ordering: the second message to a recipient while one transit delivery is in
flight takes the ordinary path (written first, then the mailbox), so delivery
to one recipient stays one at a time in arrival order, except that a transit
message whose delivery fails is retried after any ordinary message already in
the recipient's mailbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from msgin5g.model.queue import QueuedItem
from msgin5g.runtime import Clock, Supervisor, Timer
from msgin5g.storage.base import DedupRecord, MessageQueue

__all__ = ["DELIVERED", "FAILED", "RETRY", "Held", "Transit"]

DELIVERED = 1
"""The recipient acknowledged the delivery."""
FAILED = 2
"""The recipient refused it for good (no retry)."""
RETRY = 3
"""Unreachable or cancelled: the mailbox path must retry it (needs storage)."""

_HELD = 0
_WRITING = 1
_WRITTEN = 2
_DUPLICATE = 3  # the write found a stored copy of the same message: not written


class Held:
    """One transit message: its pending write and the sender's answer."""

    __slots__ = ("answer", "deadline", "dedup", "item", "now", "outcome", "state")

    def __init__(
        self,
        item: QueuedItem,
        dedup: DedupRecord,
        now: float,
        deadline: float,
        answer: asyncio.Future[DedupRecord | None],
    ) -> None:
        self.item = item
        self.dedup = dedup
        self.now = now
        self.deadline = deadline
        self.answer = answer
        self.state = _HELD
        self.outcome = 0  # 0 while the delivery is in flight, else DELIVERED...


class Transit:
    """The held writes of transit messages, oldest first, and one timer.

    ``push`` hands a written item whose delivery must be retried to the
    recipient's mailbox; ``done`` is called once for a written-or-not item that
    left the server's storage accounting (delivered, refused, or found to be a
    duplicate of a stored message).
    """

    def __init__(
        self,
        backend: MessageQueue,
        clock: Clock,
        hold: float,
        tasks: Supervisor,
        *,
        push: Callable[[QueuedItem], None],
        done: Callable[[QueuedItem], None],
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._hold = hold
        self._tasks = tasks
        self._push = push
        self._done = done
        self._held: dict[Held, None] = {}  # insertion order = deadline order
        self._timer: Timer | None = None
        self._closing = False
        self.recipients: set[str] = set()
        """Recipients with a transit delivery in flight (one at a time each)."""
        self.unwritten = 0
        """Messages delivered without ever being written."""
        self.written = 0
        """Transit messages whose hold ended (or whose delivery failed) first."""

    def __len__(self) -> int:
        return len(self._held)

    def start(self, item: QueuedItem, dedup: DedupRecord, now: float) -> Held:
        """Hold the write of ``item`` (its delivery is started by the caller)."""
        answer: asyncio.Future[DedupRecord | None] = (
            asyncio.get_running_loop().create_future()
        )
        entry = Held(item, dedup, now, self._clock.monotonic() + self._hold, answer)
        self._held[entry] = None
        self.recipients.add(item.recipient)
        if self._timer is None:
            self._timer = self._clock.call_later(self._hold, self._expire)
        return entry

    def finished(self, entry: Held, outcome: int) -> None:
        """The delivery of ``entry`` ended with ``outcome``."""
        entry.outcome = outcome
        self.recipients.discard(entry.item.recipient)
        if entry.state == _HELD:
            del self._held[entry]
            if outcome == RETRY:
                self._write(entry)  # stored first, then the mailbox retries
                return
            self.unwritten += 1
            self._done(entry.item)
            if not entry.answer.done():
                entry.answer.set_result(None)
        elif entry.state == _WRITTEN:
            self._settle(entry)
        elif entry.state == _WRITING and outcome != RETRY and not entry.answer.done():
            # delivered (or refused) while its write commits: the sender may
            # have its answer now; the write is removed once it completes
            entry.answer.set_result(None)
        # _WRITING: settled when the write completes; _DUPLICATE: nothing left

    def _expire(self) -> None:
        self._timer = None
        if self._closing:
            return
        now = self._clock.monotonic()
        expired = []
        for entry in self._held:
            if entry.deadline > now:
                break
            expired.append(entry)
        for entry in expired:
            del self._held[entry]
            self._write(entry)
        if self._held:
            first = next(iter(self._held))
            self._timer = self._clock.call_later(
                max(first.deadline - now, 0.001), self._expire
            )

    def _write(self, entry: Held) -> None:
        entry.state = _WRITING
        self.written += 1
        self._tasks.spawn(self._store(entry), name="transit write")

    async def _store(self, entry: Held) -> None:
        try:
            existing = await self._backend.enqueue_once(
                entry.item, entry.dedup, entry.now
            )
        except BaseException as exc:
            if not entry.answer.done():
                entry.answer.set_exception(exc)
            raise
        if existing is not None:
            # a live record of this (originator, messageId) was already stored
            # (a resend after a restart): nothing was written, the earlier copy
            # is delivered on its own path; the answer is the earlier one
            entry.state = _DUPLICATE
            self._done(entry.item)
        else:
            entry.state = _WRITTEN
            if entry.outcome:
                self._settle(entry)
        if not entry.answer.done():
            entry.answer.set_result(existing)

    def _settle(self, entry: Held) -> None:
        """A written entry's delivery ended: remove it, or hand it to the mailbox."""
        if entry.outcome == RETRY:
            self._push(entry.item)
            return
        self._backend.remove_nowait(entry.item.seq)
        self._done(entry.item)

    def close(self) -> None:
        """Stop the timer; writes still held stay unwritten (their senders
        were not answered, so nothing acknowledged is lost)."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for entry in self._held:
            if not entry.answer.done():
                entry.answer.cancel()
        self._held.clear()
