"""Segmentation and reassembly of MSGin5G messages (TS 23.554 §8.5; digest §3.12).

Pure, sans-I/O code shared by the server and the device client:

* :func:`split` cuts an ``MSG`` whose decoded payload exceeds a limit into
  segments: every segment carries originator, recipient, ``messageId``,
  ``segmentationSetId`` and ``segmentNumber`` (1-based); the first also carries
  ``deliveryStatusRequired``, ``applicationId``, ``priorityType`` and the
  store-and-forward members; the last carries ``lastSegmentFlag``.
  ``totalSegments`` is put in **every** segment (PROJECT CHOICE allowed by the
  digest: a receiver that lost the first segment still knows the total).
* :class:`Reassembler` collects segments keyed by (originator, messageId,
  segmentationSetId) and returns the whole message once segments 1…N are there.
  Its state is bounded (sets per originator, sets overall, octets per set and
  overall); a clock is injected; :meth:`Reassembler.poll` reports sets whose gap
  timer expired (the caller sends ``SEGREC``) and sets given up (after
  ``SEGREC_MAX`` rounds or ``REASSEMBLY_TIMEOUT``; the caller reports
  ``SEGMENT_MISSING`` if the first segment asked for a report).
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec

from msgin5g.errors import InvalidRequest, Overloaded, PayloadTooLarge
from msgin5g.model.messages import Msg

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "Abandoned",
    "Reassembler",
    "RecoveryNeeded",
    "SegmentSet",
    "is_segment",
    "split",
]

DEFAULT_SEGMENT_SIZE = 2048
"""Default maximum decoded payload per segment (TS 23.554 §8.5.1)."""

_FIRST_ONLY = {
    "delivery_status_required": False,
    "application_id": None,
    "priority_type": None,
    "store_and_forward_flag": False,
    "store_and_forward_params": None,
}


def is_segment(msg: Msg) -> bool:
    """Whether ``msg`` is one segment of a segmented message."""
    return msg.segmentation_set_id is not None


def split(msg: Msg, limit: int, *, set_id: str | None = None) -> list[Msg]:
    """Cut ``msg`` into segments of at most ``limit`` payload octets.

    Args:
        msg: a whole (unsegmented) message.
        limit: maximum decoded payload octets per segment (>= 1).
        set_id: the ``segmentationSetId`` (default: a new UUID).

    Returns:
        ``[msg]`` when the payload fits, else the segments in order.

    Raises:
        InvalidRequest: ``msg`` is already a segment, or ``limit`` < 1.
    """
    if limit < 1:
        raise InvalidRequest("segment size must be at least 1 octet")
    if is_segment(msg):
        raise InvalidRequest("a segment cannot be segmented again")
    payload = msg.payload or b""
    if len(payload) <= limit:
        return [msg]
    sid = set_id or str(uuid.uuid4())
    total = -(-len(payload) // limit)
    segments = []
    for index in range(total):
        extra: dict[str, object] = {} if index == 0 else dict(_FIRST_ONLY)
        segments.append(
            msgspec.structs.replace(
                msg,
                payload=payload[index * limit : (index + 1) * limit],
                segmentation_set_id=sid,
                segment_number=index + 1,
                total_segments=total,
                last_segment_flag=index == total - 1,
                **extra,
            )
        )
    return segments


@dataclass(slots=True)
class SegmentSet:
    """Segments received so far for one (originator, messageId, setId)."""

    key: tuple[str, str, str]
    first_seen: float
    last_seen: float
    total: int | None = None
    parts: dict[int, bytes] = field(default_factory=dict)
    first: Msg | None = None
    sample: Msg | None = None
    size: int = 0
    rounds: int = 0
    recovery_due: float = 0.0

    def missing(self) -> list[int]:
        """Segment numbers not received (up to the total, or the highest seen)."""
        top = self.total or (max(self.parts) if self.parts else 1)
        return [n for n in range(1, top + 1) if n not in self.parts]

    @property
    def report_required(self) -> bool:
        """Whether the first segment asked for a delivery status report."""
        return self.first is not None and self.first.delivery_status_required


@dataclass(frozen=True, slots=True)
class RecoveryNeeded:
    """The gap timer of ``segment_set`` expired: send ``SEGREC`` for ``missing``."""

    segment_set: SegmentSet
    missing: list[int]


@dataclass(frozen=True, slots=True)
class Abandoned:
    """``segment_set`` was given up; report ``SEGMENT_MISSING`` if it asked for one."""

    segment_set: SegmentSet


class Reassembler:
    """Bounded, clock-driven reassembly of segmented messages (digest §3.12.4).

    Args:
        clock: returns the current time in seconds.
        gap_timer: seconds without a new segment before recovery (``SEGREC``).
        timeout: seconds after the first segment before a set is given up.
        max_rounds: ``SEGREC`` rounds before a set is given up.
        max_set_octets: largest reassembled payload.
        max_sets: sets in progress overall.
        max_sets_per_originator: sets in progress per originator.
        max_total_octets: buffered octets overall.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        gap_timer: float = 30.0,
        timeout: float = 300.0,
        max_rounds: int = 3,
        max_set_octets: int = 16 * 1024 * 1024,
        max_sets: int = 10_000,
        max_sets_per_originator: int = 100,
        max_total_octets: int = 256 * 1024 * 1024,
    ) -> None:
        self._clock = clock
        self.gap_timer = gap_timer
        self.timeout = timeout
        self.max_rounds = max_rounds
        self.max_set_octets = max_set_octets
        self.max_sets = max_sets
        self.max_sets_per_originator = max_sets_per_originator
        self.max_total_octets = max_total_octets
        self._sets: dict[tuple[str, str, str], SegmentSet] = {}
        self._per_originator: dict[str, int] = {}
        self._octets = 0
        self._completed: dict[tuple[str, str, str], None] = {}

    def __len__(self) -> int:
        return len(self._sets)

    @property
    def buffered_octets(self) -> int:
        """Payload octets held in incomplete sets."""
        return self._octets

    def get(self, key: tuple[str, str, str]) -> SegmentSet | None:
        """The set in progress for ``key``, if any."""
        return self._sets.get(key)

    def add(self, segment: Msg) -> Msg | None:
        """Take one segment; return the whole message when the set is complete.

        Duplicates are ignored (None). A complete set is forgotten.

        Raises:
            InvalidRequest: not a segment, a number above the total, or a total
                that conflicts with an earlier segment of the set.
            PayloadTooLarge: the set would exceed ``max_set_octets``.
            Overloaded: too many sets in progress (overall or for the originator).
        """
        number = segment.segment_number
        if segment.segmentation_set_id is None or number is None:
            raise InvalidRequest(
                "not a segment: segmentationSetId/segmentNumber missing"
            )
        originator = segment.originator or ""
        key = (originator, segment.message_id, segment.segmentation_set_id)
        now = self._clock()
        entry = self._sets.get(key)
        if entry is None:
            if key in self._completed:  # a late duplicate of a finished set
                return None
            entry = self._open(key, originator, now)
        self._learn_total(entry, segment, number)
        if number in entry.parts:
            return None
        data = segment.payload or b""
        if entry.size + len(data) > self.max_set_octets:
            self._drop(entry)
            raise PayloadTooLarge("segmented message exceeds the reassembly limit")
        if self._octets + len(data) > self.max_total_octets:
            raise Overloaded("reassembly buffers are full", retry_after=30)
        entry.parts[number] = data
        entry.size += len(data)
        self._octets += len(data)
        entry.last_seen = now
        entry.recovery_due = now + self.gap_timer
        entry.sample = segment
        if number == 1:
            entry.first = segment
        if entry.total is not None and len(entry.parts) == entry.total:
            return self._complete(entry)
        return None

    @staticmethod
    def _learn_total(entry: SegmentSet, segment: Msg, number: int) -> None:
        total = segment.total_segments
        if segment.last_segment_flag:
            total = total or number
            if total != number:
                raise InvalidRequest(
                    "lastSegmentFlag on a segment that is not the last"
                )
        if total is not None:
            if entry.total is not None and entry.total != total:
                raise InvalidRequest(
                    f"totalSegments {total} conflicts with {entry.total} of this set"
                )
            if entry.parts and max(entry.parts) > total:
                raise InvalidRequest(
                    "totalSegments below a segment number already seen"
                )
            entry.total = total
        if entry.total is not None and number > entry.total:
            raise InvalidRequest(f"segmentNumber {number} exceeds totalSegments")

    def _open(
        self, key: tuple[str, str, str], originator: str, now: float
    ) -> SegmentSet:
        if len(self._sets) >= self.max_sets:
            raise Overloaded("too many segmented messages in progress", retry_after=30)
        if self._per_originator.get(originator, 0) >= self.max_sets_per_originator:
            raise Overloaded(
                f"too many segmented messages in progress from {originator}",
                retry_after=30,
            )
        entry = SegmentSet(key, now, now, recovery_due=now + self.gap_timer)
        self._sets[key] = entry
        self._per_originator[originator] = self._per_originator.get(originator, 0) + 1
        return entry

    def _drop(self, entry: SegmentSet) -> None:
        if self._sets.pop(entry.key, None) is None:
            return
        self._octets -= entry.size
        originator = entry.key[0]
        left = self._per_originator.get(originator, 1) - 1
        if left:
            self._per_originator[originator] = left
        else:
            self._per_originator.pop(originator, None)

    def _complete(self, entry: SegmentSet) -> Msg:
        self._drop(entry)
        if len(self._completed) >= self.max_sets:
            for old in list(self._completed)[: self.max_sets // 2]:
                del self._completed[old]
        self._completed[entry.key] = None
        first = entry.first or entry.sample
        assert first is not None  # noqa: S101 - a complete set has segments
        payload = b"".join(entry.parts[n] for n in range(1, (entry.total or 0) + 1))
        return msgspec.structs.replace(
            first,
            payload=payload,
            segmentation_set_id=None,
            segment_number=None,
            total_segments=None,
            last_segment_flag=False,
        )

    def discard(self, key: tuple[str, str, str]) -> None:
        """Forget a set (e.g. its originator de-registered)."""
        entry = self._sets.get(key)
        if entry is not None:
            self._drop(entry)

    def poll(self) -> list[RecoveryNeeded | Abandoned]:
        """Sets due for recovery (``SEGREC``) or given up; call periodically."""
        now = self._clock()
        actions: list[RecoveryNeeded | Abandoned] = []
        for entry in list(self._sets.values()):
            if now - entry.first_seen >= self.timeout or (
                entry.rounds >= self.max_rounds and now >= entry.recovery_due
            ):
                self._drop(entry)
                actions.append(Abandoned(entry))
            elif now >= entry.recovery_due:
                entry.rounds += 1
                entry.recovery_due = now + self.gap_timer
                actions.append(RecoveryNeeded(entry, entry.missing()))
        return actions
