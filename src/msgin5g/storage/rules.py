"""The storage port's rules as small pure functions, shared by the backends.

What:
    :mod:`msgin5g.storage.base` states the contract in prose; the functions here
    are that contract for a backend that keeps state in Python (memory, and the
    cluster backend's indexes): the order items are delivered and expired in,
    the expiry boundary, when a duplicate-detection record still counts, and
    how records are encoded. The SQLite backend states the same rules in SQL
    (``ORDER BY priority, seq``, ``expires_at <= ?``; see
    :mod:`msgin5g.storage.sqlite.queue_ops`) and uses the record codec from here.

Why one module:
    A third backend must reproduce these rules exactly (the conformance suite
    checks them); writing them once keeps the in-process backends from
    drifting apart on a boundary (``<`` or ``<=``) or an order.
"""

from collections.abc import Iterable

import msgspec

from msgin5g.model.queue import QueuedItem
from msgin5g.storage.base import DedupRecord, R

__all__ = [
    "decode_record",
    "decode_records",
    "encode_record",
    "expiry_order",
    "is_expired",
    "live_record",
    "queue_order",
]


def queue_order(item: QueuedItem) -> tuple[int, int]:
    """Delivery order: priority rank first (HIGH = 0), then arrival (``seq``)."""
    return (item.priority, item.seq)


def expiry_order(item: QueuedItem) -> tuple[float, int]:
    """Expiry order (``take_expired``): soonest ``expires_at`` first, then ``seq``."""
    return (item.expires_at, item.seq)


def is_expired(expires_at: float, now: float) -> bool:
    """Whether something with ``expires_at`` has expired at ``now`` (boundary included).

    The same boundary holds for queued items, report routes and
    duplicate-detection records.
    """
    return expires_at <= now


def live_record(record: DedupRecord | None, now: float) -> DedupRecord | None:
    """``record`` if it still counts at ``now`` (not :func:`is_expired`), else None."""
    if record is None or is_expired(record.expires_at, now):
        return None
    return record


def encode_record(record: msgspec.Struct) -> bytes:
    """The stored form of a :class:`~msgin5g.storage.base.RecordStore` record."""
    return msgspec.msgpack.encode(record)


def decode_record(body: bytes, type_: type[R]) -> R:
    """A stored record as ``type_``.

    Raises:
        msgspec.DecodeError: the body is not a ``type_`` (callers map it).
    """
    return msgspec.msgpack.decode(body, type=type_)


def decode_records(bodies: Iterable[bytes], type_: type[R]) -> list[R]:
    """Stored records as ``type_``, in the given order (one decoder for all)."""
    decoder = msgspec.msgpack.Decoder(type_)
    return [decoder.decode(body) for body in bodies]
