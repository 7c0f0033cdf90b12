"""Duplicate detection of MSGin5G messages by (originator, messageId).

Digest §3.7.5 step 3: the same (originator, ``messageId``) seen within
``delivery.dedup_window`` (24 h) gets the same ``MSGRESP`` as the first time and
nothing else happens; different content under the same ID gets ``DELY_REJECTED``
/ ``DUPLICATE_MESSAGE_ID``. Segments are not deduplicated this way.

Two layers (issue 10, items 2 and 15):

* **Memory** (:class:`DedupCache`): two generations of plain dicts, key
  ``originator + NUL + messageId`` -> one ``bytes`` value (16-octet content
  fingerprint followed by the msgpack-encoded ``MSGRESP``). Bounded by entries
  *and* by estimated bytes (``delivery.dedup_max_bytes``); expired in bulk by
  swapping generations (PERFORMANCE.md: no per-entry timers). It answers
  retransmissions of recent messages, including those that were not stored
  (failures), without touching storage.
* **Storage**: a message that is stored carries a
  :class:`~msgin5g.storage.base.DedupRecord` into the SAME transaction
  (:meth:`~msgin5g.storage.base.MessageQueue.enqueue_once`,
  :meth:`~msgin5g.storage.base.MessageQueue.enqueue_fanout`). A kill -9 loses
  both or keeps both. There is no lookup before routing: on a memory miss the
  message is routed as new and the write itself finds a live record of the
  same key, in which case nothing is stored and the first answer is given
  (:meth:`Deduplicator.conflict`). The hot path costs no extra storage round
  trip; a retry after a restart, or after the memory cache dropped the entry,
  is still answered like the first time.

The fingerprint is a BLAKE2b digest of the msgpack encoding of the ``Msg``, so
it is the same in every process (Python's ``hash`` is randomised per process).
Concurrent submissions of one key wait for the first one's answer.

Refusals for congestion (``SERVER_CONGESTION``: quota or rate) are not
remembered: the sender is expected to retry the same message later.
"""

import asyncio
import hashlib
import sys

import msgspec

from msgin5g.model.messages import Msg, MsgResp
from msgin5g.runtime.reaper import Reaper
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import DeliveryStatus
from msgin5g.storage.base import DedupRecord

__all__ = ["DedupCache", "Deduplicator", "entry_cost", "fingerprint"]

_ENCODER = msgspec.msgpack.Encoder()
_RESP_DECODER = msgspec.msgpack.Decoder(MsgResp)
_FP = 16
"""Octets of the content fingerprint."""

_SLOT = 104
"""Estimated octets of one dict slot (hash, key and value pointers, the index,
and the spare room a growing dict keeps); measured in tests/unit/service."""


def fingerprint(msg: Msg) -> bytes:
    """Stable 16-octet digest of ``msg``'s content (same in every process)."""
    return hashlib.blake2b(_ENCODER.encode(msg), digest_size=_FP).digest()


def entry_cost(key: str, value: bytes) -> int:
    """Estimated memory of one cache entry: key and value objects plus a slot."""
    return sys.getsizeof(key) + sys.getsizeof(value) + _SLOT


class DedupCache:
    """Key -> bytes for at least ``window`` seconds, within entry and byte bounds.

    Entries are put into ``current``; when ``current`` is ``window`` old, or
    holds half the entry or byte bound, it becomes ``previous`` and the old
    ``previous`` is dropped in one step. So an entry lives between one and two
    windows unless the bounds force an earlier rotation, and the whole cache
    never exceeds ``max_entries`` entries or ~``max_bytes`` octets.
    """

    __slots__ = (
        "_current",
        "_current_bytes",
        "_max_bytes",
        "_max_entries",
        "_previous",
        "_previous_bytes",
        "_reaper",
        "_rotated",
        "_window",
        "rotations",
    )

    def __init__(
        self, window: float, max_entries: int, max_bytes: int, now: float
    ) -> None:
        self._current: dict[str, bytes] = {}
        self._previous: dict[str, bytes] = {}
        self._current_bytes = 0
        self._previous_bytes = 0
        self._window = window
        self._max_entries = max(1, max_entries // 2)
        self._max_bytes = max(1, max_bytes // 2)
        self._rotated = now
        self.rotations = 0
        # a dropped generation is emptied a few entries per put (no loop stall)
        self._reaper = Reaper()

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    @property
    def nbytes(self) -> int:
        """Estimated memory held by the entries (octets)."""
        return self._current_bytes + self._previous_bytes

    def get(self, key: str, now: float) -> bytes | None:
        """The value put for ``key`` (None if unknown or dropped)."""
        if now - self._rotated >= self._window:
            self._rotate(now)
        value = self._current.get(key)
        return value if value is not None else self._previous.get(key)

    def put(self, key: str, value: bytes, now: float) -> None:
        """Remember ``value`` for ``key``."""
        if (
            now - self._rotated >= self._window
            or len(self._current) >= self._max_entries
            or self._current_bytes >= self._max_bytes
        ):
            self._rotate(now)
        self._reaper.reap()
        old = self._current.get(key)
        if old is not None:
            self._current_bytes -= entry_cost(key, old)
        self._current[key] = value
        self._current_bytes += entry_cost(key, value)

    def _rotate(self, now: float) -> None:
        self._reaper.bury(self._previous)
        self._previous, self._current = self._current, {}
        self._previous_bytes, self._current_bytes = self._current_bytes, 0
        self._rotated = now
        self.rotations += 1


class _Pending:
    """A submission being routed: what its durable record will say.

    A plain slotted class, not a dataclass: one is built per message, and a
    dataclass's generated ``__init__`` stays interpreted when this is compiled.
    """

    __slots__ = (
        "claimed",
        "conflict",
        "encoded",
        "expires_at",
        "fingerprint",
        "waiters",
    )

    def __init__(self, fingerprint: bytes, expires_at: float) -> None:
        self.fingerprint = fingerprint
        self.expires_at = expires_at
        self.claimed = False
        self.conflict: DedupRecord | None = None
        # (status, encoded MSGRESP) of the record handed out: finish() reuses it
        self.encoded: tuple[DeliveryStatus, bytes] | None = None
        self.waiters: list[asyncio.Future[MsgResp]] = []


class Deduplicator:
    """Duplicate detection for the messaging service (see the module docstring).

    Use per submission: :meth:`seen` (answer from memory or from an identical
    submission in flight), then :meth:`begin`, route, and :meth:`finish` (or
    :meth:`abort` if routing raised). While routing, the code that stores the
    message calls :meth:`record_for` and, if storage found an earlier record,
    :meth:`conflict`.
    """

    def __init__(
        self, window: float, max_entries: int, max_bytes: int, now: float
    ) -> None:
        self.window = window
        self.cache = DedupCache(window, max_entries, max_bytes, now)
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.hits = 0
        self.conflicts = 0

    @staticmethod
    def fingerprint(msg: Msg) -> bytes:
        """Stable content digest of ``msg`` (see :func:`fingerprint`)."""
        return fingerprint(msg)

    async def seen(
        self, key: tuple[str, str], fp: bytes, msg: Msg, now: float
    ) -> MsgResp | None:
        """The answer for a duplicate of ``key``, or None if it must be routed."""
        while (pending := self._pending.get(key)) is not None:
            # the same key is being routed right now: wait for its answer
            waiter: asyncio.Future[MsgResp] = asyncio.get_running_loop().create_future()
            pending.waiters.append(waiter)
            first = await waiter
            if first.failure_cause == FailureCause.SERVER_CONGESTION:
                continue  # refused, not remembered: route this one (or wait again)
            self.hits += 1
            return first if pending.fingerprint == fp else _duplicate(msg)
        value = self.cache.get(_cache_key(key), now)
        if value is None:
            return None
        self.hits += 1
        if value[:_FP] != fp:
            return _duplicate(msg)
        return _RESP_DECODER.decode(value[_FP:])

    def begin(self, key: tuple[str, str], fp: bytes, now: float) -> None:
        """``key`` is routed from now on (its durable record expires a window later)."""
        self._pending[key] = _Pending(fp, now + self.window)

    def record_for(
        self,
        key: tuple[str, str],
        msg: Msg,
        status: DeliveryStatus,
    ) -> DedupRecord | None:
        """The durable record to store with ``msg`` (once per submission).

        None when ``key`` is not being deduplicated (segments, reports) or its
        record was already handed out (a submission stores one message or one
        fan-out).
        """
        pending = self._pending.get(key)
        if pending is None or pending.claimed:
            return None
        pending.claimed = True
        response = MsgResp(
            message_id=msg.message_id,
            originating_ue_service_id=msg.originating_ue_service_id,
            originating_as_service_id=msg.originating_as_service_id,
            delivery_status=status,
        )
        encoded = _ENCODER.encode(response)
        pending.encoded = (status, encoded)
        return DedupRecord(
            originator=key[0],
            message_id=key[1],
            fingerprint=pending.fingerprint,
            response=encoded,
            expires_at=pending.expires_at,
        )

    def conflict(self, key: tuple[str, str], existing: DedupRecord) -> None:
        """Storage holds an earlier live record of ``key``: nothing was stored."""
        pending = self._pending.get(key)
        if pending is not None:
            pending.conflict = existing
        self.conflicts += 1

    def finish(
        self, key: tuple[str, str], msg: Msg, response: MsgResp, now: float
    ) -> MsgResp:
        """The answer to give for the routed submission; remembers it."""
        pending = self._pending.pop(key, None)
        if pending is None:  # pragma: no cover - begin() was not called
            return response
        existing = pending.conflict
        if existing is not None:
            if existing.fingerprint == pending.fingerprint:
                response = _RESP_DECODER.decode(existing.response)
            else:
                response = _duplicate(msg)
            value = existing.fingerprint + existing.response
            self.cache.put(_cache_key(key), value, now)
        elif response.failure_cause != FailureCause.SERVER_CONGESTION:
            encoded = pending.encoded
            if (
                encoded is None
                or response.failure_cause is not None
                or response.delivery_status != encoded[0]
                or response.message_id != msg.message_id
            ):
                encoded = (response.delivery_status, _ENCODER.encode(response))
            self.cache.put(_cache_key(key), pending.fingerprint + encoded[1], now)
        for waiter in pending.waiters:
            if not waiter.done():
                waiter.set_result(response)
        return response

    def abort(self, key: tuple[str, str]) -> None:
        """Routing of ``key`` raised: waiters route their own copy."""
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        congested = MsgResp(
            message_id=key[1],
            delivery_status=DeliveryStatus.DELY_REJECTED,
            failure_cause=FailureCause.SERVER_CONGESTION.value,
        )
        for waiter in pending.waiters:
            if not waiter.done():
                waiter.set_result(congested)


def _cache_key(key: tuple[str, str]) -> str:
    return f"{key[0]}\0{key[1]}"


def _duplicate(msg: Msg) -> MsgResp:
    return MsgResp(
        message_id=msg.message_id,
        originating_ue_service_id=msg.originating_ue_service_id,
        originating_as_service_id=msg.originating_as_service_id,
        delivery_status=DeliveryStatus.DELY_REJECTED,
        failure_cause=FailureCause.DUPLICATE_MESSAGE_ID.value,
    )
