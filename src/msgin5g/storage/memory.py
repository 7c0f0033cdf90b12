"""In-memory storage backend: the reference implementation.

What:
    :class:`MemoryBackend` keeps everything in plain dicts (plus a heap of expiry
    times), in the event loop's thread. It defines the observable semantics every
    other backend must reproduce (``tests/storage`` runs the same conformance suite
    against all of them) and serves unit tests and ephemeral runs.

Why no group commit:
    There is nothing to commit: each write is applied before its ``await`` returns,
    and :meth:`MemoryBackend.remove_nowait` removes immediately.

Durability semantics:
    None across processes: everything is lost when the process ends. Within the
    process the contract of :mod:`msgin5g.storage.base` holds trivially (reads see
    every completed write). Stored items are copies: mutating a
    :class:`~msgin5g.model.queue.QueuedItem` after ``enqueue`` (or one returned by
    a read) does not change the stored item, just as with a database.
"""

import asyncio
import heapq
from collections.abc import Sequence

import msgspec

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.model.registry import UERegistration
from msgin5g.storage.base import DedupRecord, R, stored_size
from msgin5g.storage.rules import (
    decode_record,
    decode_records,
    encode_record,
    expiry_order,
    is_expired,
    live_record,
    queue_order,
)

__all__ = ["MemoryBackend"]


def _copy(item: QueuedItem) -> QueuedItem:
    return msgspec.structs.replace(item)


class MemoryBackend:
    """Dict-based implementation of :class:`msgin5g.storage.base.Backend`.

    ``start`` and ``aclose`` only mark the lifecycle; the data lives as long as the
    object. Not thread-safe: use it from one event loop.
    """

    def __init__(self) -> None:
        """Create an empty backend."""
        self._credentials: dict[str, bytes] = {}
        self._registrations: dict[str, UERegistration] = {}
        self._items: dict[int, QueuedItem] = {}
        self._by_recipient: dict[str, dict[int, QueuedItem]] = {}
        # (expires_at, seq); stale entries (removed items, changed expiry) are
        # skipped when popped and dropped by _compact_expiry().
        self._expiry: list[tuple[float, int]] = []
        self._routes: dict[tuple[str, str], ReportRoute] = {}
        self._last_seq = 0
        self._records: dict[tuple[str, str], bytes] = {}
        self._dedup: dict[tuple[str, str], DedupRecord] = {}

    def __repr__(self) -> str:
        return f"MemoryBackend(items={len(self._items)})"

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Nothing to open."""

    async def aclose(self) -> None:
        """Nothing to flush; the data stays readable. Safe to call twice."""

    # ---------------------------------------------------------------- CredentialStore

    async def put_credential(self, ue_service_id: str, digest: bytes) -> None:
        """Create or replace the credential digest of a UE."""
        self._credentials[ue_service_id] = bytes(digest)

    async def get_credential(self, ue_service_id: str) -> bytes | None:
        """Return the credential digest, or None if the UE is not provisioned."""
        return self._credentials.get(ue_service_id)

    async def delete_credential(self, ue_service_id: str) -> bool:
        """Remove a provisioned UE; True if it existed."""
        return self._credentials.pop(ue_service_id, None) is not None

    async def get_credentials(self, ue_service_ids: Sequence[str]) -> dict[str, bytes]:
        """The digests of the provisioned UEs among ``ue_service_ids``."""
        found = self._credentials
        return {ue: found[ue] for ue in ue_service_ids if ue in found}

    async def load_credentials(self) -> list[tuple[str, bytes]]:
        """Every ``(ue_service_id, digest)``, sorted by ID."""
        return sorted(self._credentials.items())

    async def put_credentials(
        self, credentials: Sequence[tuple[str, bytes]], *, replace: bool = False
    ) -> list[str]:
        """Provision many UEs; returns the IDs that were already provisioned."""
        existing = []
        for ue, digest in credentials:
            if ue in self._credentials:
                existing.append(ue)
                if not replace:
                    continue
            self._credentials[ue] = bytes(digest)
        return existing

    async def list_credentials(self) -> list[str]:
        """All provisioned UE Service IDs, sorted."""
        return sorted(self._credentials)

    # ---------------------------------------------------------------- RegistrationStore

    async def put_registration(self, registration: UERegistration) -> None:
        """Create or replace the registration of ``registration.ue_service_id``."""
        self._registrations[registration.ue_service_id] = registration

    async def delete_registration(self, ue_service_id: str) -> bool:
        """Remove a registration; True if it existed."""
        return self._registrations.pop(ue_service_id, None) is not None

    async def load_registrations(self) -> list[UERegistration]:
        """Every stored registration, ordered by UE Service ID."""
        return [self._registrations[ue] for ue in sorted(self._registrations)]

    # ---------------------------------------------------------------- MessageQueue

    async def enqueue(self, item: QueuedItem) -> int:
        """Store a copy of ``item``; assign and return its ``seq`` (set on item too)."""
        return self._store(item)

    def _store(self, item: QueuedItem) -> int:
        self._last_seq += 1
        seq = self._last_seq
        item.seq = seq
        stored = _copy(item)
        self._items[seq] = stored
        self._by_recipient.setdefault(stored.recipient, {})[seq] = stored
        heapq.heappush(self._expiry, expiry_order(stored))
        return seq

    def _store_once(
        self,
        items: Sequence[QueuedItem],
        routes: Sequence[ReportRoute],
        dedup: DedupRecord | None,
        now: float,
    ) -> DedupRecord | None:
        """The live record of ``dedup``'s key, or store everything (one "transaction")."""
        if dedup is not None:
            key = (dedup.originator, dedup.message_id)
            existing = live_record(self._dedup.get(key), now)
            if existing is not None:
                return existing
            self._dedup[key] = dedup
        for item in items:
            self._store(item)
        for route in routes:
            self._routes[route.message_id, route.reporter] = route
        return None

    async def enqueue_once(
        self,
        item: QueuedItem,
        dedup: DedupRecord,
        now: float,
        routes: Sequence[ReportRoute] = (),
    ) -> DedupRecord | None:
        """Store ``item``, ``dedup`` and ``routes`` unless a live record has the key."""
        return self._store_once((item,), routes, dedup, now)

    def enqueue_fanout(
        self,
        template: Msg,
        items: list[QueuedItem],
        routes: list[ReportRoute],
        dedup: DedupRecord | None = None,
        now: float = 0.0,
    ) -> asyncio.Future[DedupRecord | None]:
        """Store every member copy and route (the copies share the payload)."""
        done: asyncio.Future[DedupRecord | None]
        done = asyncio.get_running_loop().create_future()
        done.set_result(self._store_once(items, routes, dedup, now))
        return done

    async def find_dedup(
        self, originator: str, message_id: str, now: float
    ) -> DedupRecord | None:
        """The live record of (originator, messageId), or None."""
        return live_record(self._dedup.get((originator, message_id)), now)

    async def purge_dedup(self, now: float) -> int:
        """Drop records with ``expires_at <= now``; return how many."""
        expired = [k for k, r in self._dedup.items() if is_expired(r.expires_at, now)]
        for key in expired:
            del self._dedup[key]
        return len(expired)

    async def stored_usage(self) -> dict[str, tuple[int, int]]:
        """Per recipient: (stored items, sum of :func:`stored_size`)."""
        return {
            recipient: (len(items), sum(stored_size(i.item) for i in items.values()))
            for recipient, items in self._by_recipient.items()
        }

    async def purge_payloads(self) -> int:
        """Nothing to purge: member copies share their payload in memory."""
        return 0

    def _pop(self, seq: int) -> QueuedItem | None:
        item = self._items.pop(seq, None)
        if item is not None:
            per_recipient = self._by_recipient[item.recipient]
            del per_recipient[seq]
            if not per_recipient:
                del self._by_recipient[item.recipient]
        return item

    async def remove(self, seq: int) -> None:
        """Forget a delivered/expired/failed item; unknown ``seq`` is ignored."""
        self.remove_nowait(seq)

    def remove_nowait(self, seq: int) -> None:
        """Remove ``seq`` immediately (there is no commit to wait for)."""
        self._pop(seq)
        self._compact_expiry()

    async def pending_for(
        self, recipient: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[QueuedItem]:
        """Items for ``recipient`` with ``seq > after_seq``, by (priority, seq)."""
        items = self._by_recipient.get(recipient)
        if not items or limit <= 0:
            return []
        selected = sorted(
            (item for seq, item in items.items() if seq > after_seq), key=queue_order
        )
        return [_copy(item) for item in selected[:limit]]

    async def recipients_with_pending(self) -> list[str]:
        """Distinct recipients that have at least one item, sorted."""
        return sorted(self._by_recipient)

    async def take_expired(self, now: float, *, limit: int = 1000) -> list[QueuedItem]:
        """Remove and return up to ``limit`` items with ``expires_at <= now``.

        Items come soonest-expiring first (then by seq).
        """
        taken: list[QueuedItem] = []
        heap = self._expiry
        while heap and is_expired(heap[0][0], now) and len(taken) < limit:
            expires_at, seq = heapq.heappop(heap)
            item = self._items.get(seq)
            if item is None or item.expires_at != expires_at:
                continue  # stale entry
            self._pop(seq)
            taken.append(item)
        return taken

    async def find(self, recipient: str, message_id: str) -> QueuedItem | None:
        """The stored ``MSG`` for ``recipient`` with that MSGin5G Message ID.

        ``IMDN`` items are never returned. With duplicates the lowest seq wins.
        """
        items = self._by_recipient.get(recipient, {})
        for seq in sorted(items):
            item = items[seq]
            if isinstance(item.item, Msg) and item.item.message_id == message_id:
                return _copy(item)
        return None

    async def set_expiry(self, seq: int, expires_at: float) -> bool:
        """Change the expiry of an item; True if it exists."""
        item = self._items.get(seq)
        if item is None:
            return False
        item.expires_at = expires_at
        heapq.heappush(self._expiry, expiry_order(item))
        self._compact_expiry()
        return True

    async def take_all_for(self, recipient: str) -> list[QueuedItem]:
        """Remove and return every item of ``recipient``, by (priority, seq)."""
        items = self._by_recipient.pop(recipient, None)
        if not items:
            return []
        for seq in items:
            del self._items[seq]
        self._compact_expiry()
        return sorted(items.values(), key=queue_order)

    async def count(self) -> int:
        """Number of items stored."""
        return len(self._items)

    def _compact_expiry(self) -> None:
        """Rebuild the expiry heap once stale entries dominate it."""
        if len(self._expiry) > 2 * len(self._items) + 64:
            self._expiry = [expiry_order(item) for item in self._items.values()]
            heapq.heapify(self._expiry)

    # ---------------------------------------------------------------- ReportStore

    async def put_report_route(self, route: ReportRoute) -> None:
        """Remember (or replace) the route for ``(message_id, reporter)``."""
        self._routes[route.message_id, route.reporter] = route

    async def take_report_route(
        self, message_id: str, reporter: str
    ) -> ReportRoute | None:
        """Remove and return the route, or None if none is expected.

        Expiry is not checked here; :meth:`purge_report_routes` drops old routes.
        """
        return self._routes.pop((message_id, reporter), None)

    async def purge_report_routes(self, now: float) -> int:
        """Drop routes with ``expires_at <= now``; return how many."""
        expired = [
            key
            for key, route in self._routes.items()
            if is_expired(route.expires_at, now)
        ]
        for key in expired:
            del self._routes[key]
        return len(expired)

    # ---------------------------------------------------------------- RecordStore

    async def put_record(self, kind: str, key: str, record: msgspec.Struct) -> None:
        """Create or replace a record (kept encoded, so callers cannot alias it)."""
        self._records[kind, key] = encode_record(record)

    async def get_record(self, kind: str, key: str, type_: type[R]) -> R | None:
        """The record decoded as ``type_``, or None."""
        body = self._records.get((kind, key))
        return None if body is None else decode_record(body, type_)

    async def delete_record(self, kind: str, key: str) -> bool:
        """Remove a record; True if it existed."""
        return self._records.pop((kind, key), None) is not None

    async def load_records(self, kind: str, type_: type[R]) -> list[R]:
        """Every record of ``kind`` ordered by key."""
        keys = sorted(k for k in self._records if k[0] == kind)
        return decode_records((self._records[k] for k in keys), type_)
