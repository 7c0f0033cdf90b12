"""Storage interfaces of the MSGin5G Server: the port every backend implements.

The service layer reaches persistence only through these protocols. Every backend
(``memory``, ``sqlite``; next, a cluster backend) implements all of them on one
object, the :class:`Backend`, and passes the same conformance suite
(``tests/storage``; a new backend is one entry in ``tests/storage/conftest.py``).
The rules below are the whole contract; :mod:`msgin5g.storage.rules` holds them as
functions for backends that keep state in Python.

Durability:
    When an ``await`` of a *write* method returns, the write is durable for that
    backend (SQLite: committed to the WAL and fsynced according to
    ``synchronous``; memory: never across processes). Backends are free to batch
    concurrent writes into one transaction (group commit) as long as each
    caller's await returns only after its own write is committed. A write whose
    await raised did not take effect, except that a failed commit
    (:class:`~msgin5g.errors.StorageUnavailable`, e.g. an I/O error) leaves the
    outcome unknown: callers treat it as not stored, and duplicate detection
    answers a retry of a message that was stored after all. The one exception to
    "durable on return" is :meth:`MessageQueue.remove_nowait`.

Visibility and order:
    Read methods see every write whose await has returned. Writes submitted from
    one event loop take effect in submission order, awaited or not: of two
    ``put_*`` of one key gathered together, the later call wins, and a write
    awaited after ``remove_nowait`` is durable only together with (or after) that
    removal. Reads may run concurrently with writes and see each write whole or
    not at all (one transaction per call).

Seqs:
    :meth:`MessageQueue.enqueue` and friends assign ``seq``: positive, strictly
    increasing in submission order, never reused for the life of the data (also
    across restarts and after removals), set on the caller's item when the call
    returns (by :meth:`MessageQueue.enqueue_fanout` already before the write is
    durable). One server process writes a backend's queue.

Copies:
    Stored items and records are copies: mutating an object after passing it to a
    write, or one returned by a read, changes nothing stored.

Time:
    Backends never read a clock; every method that depends on time takes ``now``
    (epoch seconds). Something with ``expires_at <= now`` has expired
    (:func:`msgin5g.storage.rules.is_expired`), for items, report routes and
    duplicate-detection records alike.

Errors:
    Every failure is a :class:`~msgin5g.errors.StorageError`:
    :class:`~msgin5g.errors.StorageUnavailable` (the store cannot be used now:
    closed, not started, locked, full, I/O error),
    :class:`~msgin5g.errors.StorageConflict` (a constraint was violated), or the
    base class (anything else, e.g. undecodable stored data). Each backend maps
    its driver's exceptions in one place, keeping the driver error as
    ``__cause__``.

Duplicate detection (TS 24.538 digest §3.7.5 step 3) is durable with the message
it guards: :meth:`MessageQueue.enqueue_once` and :meth:`MessageQueue.enqueue_fanout`
take a :class:`DedupRecord` and store it in the SAME transaction as the item(s). A
crash therefore loses both (the sender was not answered; its retry is processed
afresh) or keeps both (the retry finds the record, nothing is stored twice). When
a live record with the same (originator, messageId) already exists, nothing is
stored and the existing record is returned instead; the check and the write are
atomic, so of two concurrent submissions of one key exactly one is stored.
"""

from collections.abc import Awaitable, Sequence
from typing import Final, Protocol, TypeVar

import msgspec

from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.model.registry import UERegistration

__all__ = [
    "ITEM_OVERHEAD",
    "Backend",
    "CredentialStore",
    "DedupRecord",
    "MessageQueue",
    "RecordStore",
    "RegistrationStore",
    "ReportStore",
    "stored_size",
]

R = TypeVar("R", bound=msgspec.Struct)

ITEM_OVERHEAD: Final = 256
"""Octets counted per stored item besides its payload (row, indexes, JSON members)."""


def stored_size(item: Msg | Imdn) -> int:
    """The octets a stored item counts against the storage quotas.

    Its application payload plus :data:`ITEM_OVERHEAD`; the same function is used
    when an item is stored, removed, and when usage is loaded at start-up
    (:meth:`MessageQueue.stored_usage`), so the counters never drift.
    """
    payload = item.payload if isinstance(item, Msg) else None
    return ITEM_OVERHEAD + len(payload or b"")


class DedupRecord(msgspec.Struct, frozen=True, gc=False):
    """What the server answered to (originator, messageId): kept with the message.

    Attributes:
        originator: originator key (UE Service ID, or ``as/<AS Service ID>``).
        message_id: the MSGin5G Message ID.
        fingerprint: stable digest of the message content (same on every run).
        response: the encoded ``MSGRESP`` the originator got.
        expires_at: epoch seconds after which the record no longer counts.
    """

    originator: str
    message_id: str
    fingerprint: bytes
    response: bytes
    expires_at: float


class CredentialStore(Protocol):
    """Provisioned UEs and a digest of their PSK_TOKEN credential."""

    async def put_credential(self, ue_service_id: str, digest: bytes) -> None:
        """Create or replace the credential digest of a UE."""
        ...

    async def get_credential(self, ue_service_id: str) -> bytes | None:
        """Return the credential digest, or None if the UE is not provisioned."""
        ...

    async def delete_credential(self, ue_service_id: str) -> bool:
        """Remove a provisioned UE; True if it existed."""
        ...

    async def list_credentials(self) -> list[str]:
        """All provisioned UE Service IDs, sorted (code point order)."""
        ...

    async def get_credentials(self, ue_service_ids: Sequence[str]) -> dict[str, bytes]:
        """The digests of the provisioned UEs among ``ue_service_ids`` (one read).

        What the registry uses to check the credentials of many concurrent
        ``REG`` requests with one storage round trip; an ID that is not
        provisioned is absent from the result.
        """
        ...

    async def load_credentials(self) -> list[tuple[str, bytes]]:
        """Every ``(ue_service_id, digest)``, sorted by ID (``msgin5g ue export``)."""
        ...

    async def put_credentials(
        self, credentials: Sequence[tuple[str, bytes]], *, replace: bool = False
    ) -> list[str]:
        """Provision many UEs at once (``msgin5g ue import``).

        Args:
            credentials: ``(ue_service_id, digest)`` pairs, each ID at most once.
            replace: overwrite the digest of an ID that is already provisioned;
                without it such an ID keeps its digest.

        Returns:
            The IDs of ``credentials`` that were already provisioned (replaced
            with ``replace``, left alone without), in input order. Every other
            pair is durable when this returns.
        """
        ...


class RegistrationStore(Protocol):
    """Registered UEs (client profile and contact address)."""

    async def put_registration(self, registration: UERegistration) -> None:
        """Create or replace the registration of ``registration.ue_service_id``."""
        ...

    async def delete_registration(self, ue_service_id: str) -> bool:
        """Remove a registration; True if it existed."""
        ...

    async def load_registrations(self) -> list[UERegistration]:
        """Every stored registration, ordered by UE Service ID (loaded at start-up)."""
        ...


class MessageQueue(Protocol):
    """Accepted, undelivered messages and reports, per recipient."""

    async def enqueue(self, item: QueuedItem) -> int:
        """Store ``item`` durably, assign and return its ``seq`` (also set on item).

        The stored item is a copy; ``item.seq`` is set when the write is durable.
        """
        ...

    async def enqueue_once(
        self,
        item: QueuedItem,
        dedup: DedupRecord,
        now: float,
        routes: Sequence[ReportRoute] = (),
    ) -> DedupRecord | None:
        """Store ``item``, ``dedup`` and ``routes`` in one write, unless a duplicate.

        If a live record (``expires_at > now``) for ``(dedup.originator,
        dedup.message_id)`` exists, nothing is written and that record is
        returned; ``item.seq`` stays 0. Otherwise ``item`` is stored as by
        :meth:`enqueue` (``seq`` set), ``dedup`` replaces any expired record,
        ``routes`` are put as by :meth:`ReportStore.put_report_route`, and None
        is returned.
        """
        ...

    def enqueue_fanout(
        self,
        template: Msg,
        items: list[QueuedItem],
        routes: list[ReportRoute],
        dedup: DedupRecord | None = None,
        now: float = 0.0,
    ) -> Awaitable[DedupRecord | None]:
        """Store one fan-out (group, topic, broadcast) in one durable write.

        ``template`` is the message without a recipient; each item is one
        member's copy of it (``member_copy(template, item.recipient)``), and is
        stored as per-member delivery state referring to one stored copy of the
        template. ``routes`` are the report routes of the members that may
        report. Assigns every item's ``seq`` before it returns (so delivery may
        start at once) and returns an awaitable that completes when the write is
        durable: the originator is acknowledged only then. Items read back are
        member copies like any other item; the shared copy goes when no item refers to it
        (:meth:`purge_payloads`).

        With ``dedup``, the record is written in the same transaction; if a
        live record (``expires_at > now``) with the same key exists, nothing at
        all is written (no payload, item or route) and the awaitable's result is
        the existing record (the seqs set on the items are then never used).
        Otherwise the result is None.
        """
        ...

    async def find_dedup(
        self, originator: str, message_id: str, now: float
    ) -> DedupRecord | None:
        """The live (``expires_at > now``) record of (originator, messageId)."""
        ...

    async def purge_dedup(self, now: float) -> int:
        """Drop duplicate-detection records with ``expires_at <= now``; how many.

        Durable on return; the messages the records guarded stay.
        """
        ...

    async def stored_usage(self) -> dict[str, tuple[int, int]]:
        """Per recipient: (stored items, :func:`stored_size` sum) (loaded at start).

        A fan-out member counts its template's size although the payload is
        stored once; recipients without items are absent.
        """
        ...

    async def purge_payloads(self) -> int:
        """Drop shared fan-out payloads no stored item refers to; return how many.

        A backend that does not share payloads returns 0.
        """
        ...

    async def remove(self, seq: int) -> None:
        """Forget a delivered/expired/failed item; unknown ``seq`` is ignored.

        Durable on return.
        """
        ...

    def remove_nowait(self, seq: int) -> None:
        """Schedule removal of ``seq``; it becomes durable with the next commit.

        Not durable on return: the removal is durable (and visible) once any write
        submitted after it has returned from its await. Used on the delivery hot
        path, where losing the removal in a crash only causes a duplicate delivery
        (at-least-once), never a lost message. Never raises after ``aclose``
        (a shutting-down delivery may still call it).
        """
        ...

    async def pending_for(
        self, recipient: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[QueuedItem]:
        """Up to ``limit`` items for ``recipient`` ordered by (priority, seq).

        Only items with ``seq > after_seq`` are returned when ``after_seq`` is given
        (callers page through with it only when priorities are equal; most callers
        load the whole working set with a large limit). Fan-out items come back as
        member copies (:func:`~msgin5g.model.queue.member_copy`).
        """
        ...

    async def recipients_with_pending(self) -> list[str]:
        """Distinct recipients with at least one item, sorted (start-up redelivery)."""
        ...

    async def take_expired(self, now: float, *, limit: int = 1000) -> list[QueuedItem]:
        """Remove and return up to ``limit`` items with ``expires_at <= now``.

        Soonest ``expires_at`` first, then by ``seq``; the removal is durable on
        return (the caller then reports the failures).
        """
        ...

    async def find(self, recipient: str, message_id: str) -> QueuedItem | None:
        """The stored ``MSG`` for ``recipient`` with that MSGin5G Message ID.

        ``IMDN`` items (which carry the ID of the message they report on) are never
        returned; with several matches the lowest seq wins.
        """
        ...

    async def set_expiry(self, seq: int, expires_at: float) -> bool:
        """Change the expiry of an item (durable on return); True if it exists."""
        ...

    async def take_all_for(self, recipient: str) -> list[QueuedItem]:
        """Remove and return every item of ``recipient``, by (priority, seq).

        Used at de-registration; the removal is durable on return.
        """
        ...

    async def count(self) -> int:
        """Number of items stored."""
        ...


class ReportStore(Protocol):
    """Routes for delivery status reports still expected."""

    async def put_report_route(self, route: ReportRoute) -> None:
        """Remember that ``route.reporter`` may report on ``route.message_id``."""
        ...

    async def take_report_route(
        self, message_id: str, reporter: str
    ) -> ReportRoute | None:
        """Remove and return the route, or None if none is expected.

        Expiry is not checked here (a late report still finds its route until
        :meth:`purge_report_routes` ran); the removal is durable on return.
        """
        ...

    async def purge_report_routes(self, now: float) -> int:
        """Drop routes with ``expires_at <= now``; return how many."""
        ...


class RecordStore(Protocol):
    """Small durable records of any model Struct, by (kind, key).

    For state that is looked up by key and loaded whole at start-up: Application
    Server registrations, a gateway's cached requests, groups, subscriptions. The
    backend chooses the encoding (msgpack); callers pass and get model Structs.
    ``kind`` names the collection (e.g. ``"as-registration"``).
    """

    async def put_record(self, kind: str, key: str, record: msgspec.Struct) -> None:
        """Create or replace the record ``key`` of ``kind``."""
        ...

    async def get_record(self, kind: str, key: str, type_: type[R]) -> R | None:
        """The record decoded as ``type_``, or None."""
        ...

    async def delete_record(self, kind: str, key: str) -> bool:
        """Remove a record; True if it existed."""
        ...

    async def load_records(self, kind: str, type_: type[R]) -> list[R]:
        """Every record of ``kind`` ordered by key."""
        ...


class Backend(
    CredentialStore, RegistrationStore, MessageQueue, ReportStore, RecordStore, Protocol
):
    """One storage backend: all stores, plus lifecycle."""

    async def start(self) -> None:
        """Open files/connections and create or upgrade the schema if needed.

        Idempotent. Every other method before it may raise
        :class:`~msgin5g.errors.StorageUnavailable`.

        Raises:
            StorageError: the store cannot be opened or has a newer schema.
        """
        ...

    async def aclose(self) -> None:
        """Flush pending writes (``remove_nowait`` included) and release everything.

        Safe to call twice; afterwards writes raise
        :class:`~msgin5g.errors.StorageUnavailable` (a backend without anything to
        release may keep serving).
        """
        ...
