"""Key-value state of the NATS JetStream backend: one KV bucket per collection.

What:
    :class:`KvStores` implements the credential, registration, record, report
    route and duplicate-detection parts of :class:`msgin5g.storage.base.Backend`
    on JetStream KV buckets (history 1, file storage, ``replicas`` from the URL):

    ============================  ===========================================
    bucket                        key -> value
    ============================  ===========================================
    ``<prefix>_cred``             token(UE) -> credential digest
    ``<prefix>_reg``              token(UE) -> UERegistration (msgpack)
    ``<prefix>_rec``              token(kind).token(key) -> record (msgpack)
    ``<prefix>_route``            token(messageId).token(reporter) -> route
    ``<prefix>_dedup``            token(originator).token(messageId) -> record
    ``<prefix>_meta``             ``gen`` -> start-up generation (seq space)
    ============================  ===========================================

    Every awaited write returns after JetStream's PubAck (the KV put is a
    stream publish), so it survives a kill -9 of both processes.

Expiry of routes and records:
    ``purge_report_routes`` and ``purge_dedup`` must count exactly what they
    drop, so each keeps a heap of (expires_at, key) loaded once at start-up
    (one ordered consumer over the bucket) and fed by every put. Before deleting, the
    current value is read again and deleted only at its revision, so a
    replaced or taken entry is never dropped by mistake. The dedup bucket also
    has a bucket-wide age limit (``dedup_ttl``): whatever happens, no record
    outlives it.
"""

import asyncio
import heapq
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

import msgspec
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from msgin5g.model.queue import ReportRoute
from msgin5g.model.registry import UERegistration
from msgin5g.storage.base import DedupRecord, R
from msgin5g.storage.nats.codec import token, untoken
from msgin5g.storage.nats.driver import map_driver_errors
from msgin5g.storage.nats.pipe import Requests

__all__ = ["BUCKETS", "KvStores"]

BUCKETS: Final = ("cred", "reg", "rec", "route", "dedup", "meta")
"""Suffixes of the KV buckets (``<prefix>_<suffix>``)."""

_ENCODER: Final = msgspec.msgpack.Encoder()
_WRONG_LAST_SEQUENCE: Final = 10071
_EXPECTED_LAST: Final = "Nats-Expected-Last-Subject-Sequence"
BULK_IN_FLIGHT: Final = 256
"""Outstanding KV publishes of one :meth:`KvStores.put_credentials` call."""
"""JetStream API error code of a write whose expected last sequence did not hold."""
_REG_DECODER: Final = msgspec.msgpack.Decoder(UERegistration)
_ROUTE_DECODER: Final = msgspec.msgpack.Decoder(ReportRoute)
_DEDUP_DECODER: Final = msgspec.msgpack.Decoder(DedupRecord)


async def _get(kv: KeyValue, key: str) -> tuple[bytes, int] | None:
    """Value and revision of ``key``, or None (missing or deleted)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:  # also KeyDeletedError
        return None
    return entry.value or b"", entry.revision or 0


async def _delete_at(kv: KeyValue, key: str, revision: int) -> bool:
    """Delete ``key`` only if it is still at ``revision``; True if deleted."""
    try:
        await kv.delete(key, last=revision)
    except KeyWrongLastSequenceError:
        return False
    except APIError as exc:
        # a delete with ``last`` that lost a race comes back as a plain API
        # error ("wrong last sequence"), not as KeyWrongLastSequenceError
        if exc.err_code == _WRONG_LAST_SEQUENCE:
            return False
        raise
    return True


async def _create(kv: KeyValue, key: str, body: bytes) -> bool:
    """``kv.create``; False if the key holds a live value."""
    try:
        await kv.create(key, body)
    except KeyWrongLastSequenceError:
        return False
    except APIError as exc:
        if exc.err_code == _WRONG_LAST_SEQUENCE:
            return False
        raise
    return True


class _Guard:
    """A lock and how many tasks hold or wait for it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class KvStores:
    """Credentials, registrations, records, report routes and dedup records."""

    _js: JetStreamContext
    _prefix: str
    _kv: dict[str, KeyValue]
    _route_heap: list[tuple[float, str]]
    _dedup_heap: list[tuple[float, str]]
    _dedup_locks: dict[str, "_Guard"]
    _req: Requests

    async def _scan(self, suffix: str, pattern: str = ">") -> list[tuple[str, bytes]]:
        """Every live (key, value) of bucket ``suffix`` whose key matches ``pattern``.

        One ordered consumer (last value per key). Whether anything is there is
        taken from the consumer's own counts at the server (delivered + pending),
        not from the watcher's start marker of ``nats-py``, which can fire
        before an already delivered entry is counted (an empty answer for a
        non-empty bucket).
        """
        bucket = f"{self._prefix}_{suffix}"
        subject_prefix = f"$KV.{bucket}."
        found: list[tuple[str, bytes]] = []
        sub = await self._js.subscribe(
            subject_prefix + pattern,
            stream=f"KV_{bucket}",
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        )
        try:
            info = await sub.consumer_info()
            if not info.num_pending and not (
                info.delivered and info.delivered.consumer_seq
            ):
                return found
            while True:
                msg = await sub.next_msg(timeout=10)
                if not (msg.headers or {}).get("KV-Operation"):  # DEL/PURGE markers
                    found.append((msg.subject[len(subject_prefix) :], msg.data))
                if not msg.metadata.num_pending:
                    return found
        finally:
            await sub.unsubscribe()

    async def _load_kv_indexes(self) -> None:
        """Fill the expiry heaps of routes and dedup records (start-up)."""
        with map_driver_errors():
            routes = await self._scan("route")
            records = await self._scan("dedup")
            self._route_heap = [
                (_ROUTE_DECODER.decode(value).expires_at, key) for key, value in routes
            ]
            self._dedup_heap = [
                (_DEDUP_DECODER.decode(value).expires_at, key) for key, value in records
            ]
        heapq.heapify(self._route_heap)
        heapq.heapify(self._dedup_heap)

    # ---------------------------------------------------------------- CredentialStore

    async def put_credential(self, ue_service_id: str, digest: bytes) -> None:
        """Create or replace the credential digest of a UE."""
        with map_driver_errors():
            await self._kv["cred"].put(token(ue_service_id), bytes(digest))

    async def get_credentials(self, ue_service_ids: Sequence[str]) -> dict[str, bytes]:
        """The digests of the provisioned UEs among ``ue_service_ids``."""
        kv = self._kv["cred"]
        slots = asyncio.Semaphore(BULK_IN_FLIGHT)

        async def one(ue: str) -> tuple[str, bytes] | None:
            async with slots:
                found = await _get(kv, token(ue))
            return None if found is None else (ue, found[0])

        with map_driver_errors():
            pairs = await asyncio.gather(*(one(ue) for ue in set(ue_service_ids)))
        return dict(pair for pair in pairs if pair is not None)

    async def load_credentials(self) -> list[tuple[str, bytes]]:
        """Every ``(ue_service_id, digest)``, sorted by ID."""
        with map_driver_errors():
            found = await self._scan("cred")
        return sorted((untoken(key), value) for key, value in found)

    async def put_credentials(
        self, credentials: Sequence[tuple[str, bytes]], *, replace: bool = False
    ) -> list[str]:
        """Provision many UEs: KV creates, :data:`BULK_IN_FLIGHT` in flight.

        Each pair is a ``create`` (refused on an existing key); an existing key
        is then overwritten with ``replace`` or left alone. Returns the IDs that
        were already provisioned, in input order.
        """
        kv = self._kv["cred"]
        existed = [False] * len(credentials)
        pending = iter(enumerate(credentials))

        async def worker() -> None:
            for index, (ue, digest) in pending:
                try:
                    await kv.create(token(ue), bytes(digest))
                except APIError as exc:
                    wrong_last = isinstance(exc, KeyWrongLastSequenceError)
                    if not wrong_last and exc.err_code != _WRONG_LAST_SEQUENCE:
                        raise
                    existed[index] = True
                    if replace:
                        await kv.put(token(ue), bytes(digest))

        with map_driver_errors():
            await asyncio.gather(*(worker() for _ in range(BULK_IN_FLIGHT)))
        return [ue for (ue, _), old in zip(credentials, existed, strict=True) if old]

    async def get_credential(self, ue_service_id: str) -> bytes | None:
        """Return the credential digest, or None if the UE is not provisioned."""
        with map_driver_errors():
            found = await _get(self._kv["cred"], token(ue_service_id))
        return None if found is None else found[0]

    async def delete_credential(self, ue_service_id: str) -> bool:
        """Remove a provisioned UE; True if it existed."""
        return await self._delete("cred", token(ue_service_id))

    async def list_credentials(self) -> list[str]:
        """All provisioned UE Service IDs, sorted."""
        with map_driver_errors():
            return sorted(untoken(key) for key, _ in await self._scan("cred"))

    async def _delete(self, bucket: str, key: str) -> bool:
        kv = self._kv[bucket]
        with map_driver_errors():
            found = await _get(kv, key)
            return found is not None and await _delete_at(kv, key, found[1])

    # ---------------------------------------------------------------- RegistrationStore

    async def put_registration(self, registration: UERegistration) -> None:
        """Create or replace the registration of ``registration.ue_service_id``."""
        with map_driver_errors():
            await self._kv["reg"].put(
                token(registration.ue_service_id), _ENCODER.encode(registration)
            )

    async def delete_registration(self, ue_service_id: str) -> bool:
        """Remove a registration; True if it existed."""
        return await self._delete("reg", token(ue_service_id))

    async def load_registrations(self) -> list[UERegistration]:
        """Every stored registration, ordered by UE Service ID."""
        with map_driver_errors():
            regs = [_REG_DECODER.decode(value) for _, value in await self._scan("reg")]
        return sorted(regs, key=lambda reg: reg.ue_service_id)

    # ---------------------------------------------------------------- RecordStore

    async def put_record(self, kind: str, key: str, record: msgspec.Struct) -> None:
        """Create or replace the record ``key`` of ``kind``."""
        with map_driver_errors():
            await self._kv["rec"].put(
                f"{token(kind)}.{token(key)}", _ENCODER.encode(record)
            )

    async def get_record(self, kind: str, key: str, type_: type[R]) -> R | None:
        """The record decoded as ``type_``, or None."""
        with map_driver_errors():
            found = await _get(self._kv["rec"], f"{token(kind)}.{token(key)}")
            return (
                None if found is None else msgspec.msgpack.decode(found[0], type=type_)
            )

    async def delete_record(self, kind: str, key: str) -> bool:
        """Remove a record; True if it existed."""
        return await self._delete("rec", f"{token(kind)}.{token(key)}")

    async def load_records(self, kind: str, type_: type[R]) -> list[R]:
        """Every record of ``kind`` ordered by key."""
        decoder = msgspec.msgpack.Decoder(type_)
        with map_driver_errors():
            found = await self._scan("rec", f"{token(kind)}.*")
            keyed = sorted((untoken(k.partition(".")[2]), v) for k, v in found)
            return [decoder.decode(value) for _, value in keyed]

    # ---------------------------------------------------------------- ReportStore

    async def put_report_route(self, route: ReportRoute) -> None:
        """Remember (or replace) the route for ``(message_id, reporter)``."""
        await self._put_routes([route])

    async def _put_routes(self, routes: list[ReportRoute]) -> None:
        if not routes:
            return
        kv = self._kv["route"]
        keys = [f"{token(r.message_id)}.{token(r.reporter)}" for r in routes]
        with map_driver_errors():
            await asyncio.gather(
                *(
                    kv.put(key, _ENCODER.encode(r))
                    for key, r in zip(keys, routes, strict=True)
                )
            )
        for key, route in zip(keys, routes, strict=True):
            heapq.heappush(self._route_heap, (route.expires_at, key))

    async def take_report_route(
        self, message_id: str, reporter: str
    ) -> ReportRoute | None:
        """Remove and return the route, or None (another node may take it first)."""
        kv = self._kv["route"]
        key = f"{token(message_id)}.{token(reporter)}"
        with map_driver_errors():
            found = await _get(kv, key)
            if found is None or not await _delete_at(kv, key, found[1]):
                return None
            return _ROUTE_DECODER.decode(found[0])

    async def purge_report_routes(self, now: float) -> int:
        """Drop routes with ``expires_at <= now``; return how many."""
        return await self._purge(self._route_heap, "route", _ROUTE_DECODER, now)

    async def _purge(
        self,
        heap: list[tuple[float, str]],
        bucket: str,
        decoder: msgspec.msgpack.Decoder[ReportRoute]
        | msgspec.msgpack.Decoder[DedupRecord],
        now: float,
    ) -> int:
        due: set[str] = set()
        while heap and heap[0][0] <= now:
            due.add(heapq.heappop(heap)[1])
        kv = self._kv[bucket]
        dropped = 0
        with map_driver_errors():
            for key in sorted(due):
                found = await _get(kv, key)
                if found is None:
                    continue
                expires_at = decoder.decode(found[0]).expires_at
                if expires_at > now:  # replaced by a newer entry: keep watching it
                    heapq.heappush(heap, (expires_at, key))
                elif await _delete_at(kv, key, found[1]):
                    dropped += 1
        return dropped

    # ---------------------------------------------------------------- dedup records

    async def find_dedup(
        self, originator: str, message_id: str, now: float
    ) -> DedupRecord | None:
        """The live (``expires_at > now``) record of (originator, messageId)."""
        found = await self._get_dedup(originator, message_id)
        if found is None or found[0].expires_at <= now:
            return None
        return found[0]

    async def _get_dedup(
        self, originator: str, message_id: str
    ) -> tuple[DedupRecord, int] | None:
        with map_driver_errors():
            found = await _get(
                self._kv["dedup"], f"{token(originator)}.{token(message_id)}"
            )
            return (
                None if found is None else (_DEDUP_DECODER.decode(found[0]), found[1])
            )

    async def _put_dedup(
        self, record: DedupRecord, revision: int | None
    ) -> tuple[DedupRecord, int] | None:
        """Write ``record`` if the key is still absent (or at ``revision``).

        Returns None when written, else the record that won the race (another
        node wrote the same key first) and its revision.
        """
        kv = self._kv["dedup"]
        key = f"{token(record.originator)}.{token(record.message_id)}"
        body = _ENCODER.encode(record)
        with map_driver_errors():
            reply = await (
                await self._req.send(
                    f"$KV.{self._prefix}_dedup.{key}",
                    body,
                    {_EXPECTED_LAST: str(revision or 0)},
                )
            )
            if reply.error is not None:
                if reply.error.get("err_code") != _WRONG_LAST_SEQUENCE:
                    APIError.from_error(reply.error)  # raises
                # taken, or (a create) a delete marker, which nats-py's create
                # replaces; a live record is the answer
                if revision is not None or not await _create(kv, key, body):
                    return await self._get_dedup(record.originator, record.message_id)
        heapq.heappush(self._dedup_heap, (record.expires_at, key))
        return None

    @asynccontextmanager
    async def _dedup_guard(self, record: DedupRecord) -> AsyncIterator[None]:
        """Serialise writes of one (originator, messageId) within this process."""
        key = f"{record.originator}\x00{record.message_id}"
        guard = self._dedup_locks.get(key)
        if guard is None:
            guard = self._dedup_locks[key] = _Guard()
        guard.users += 1
        try:
            async with guard.lock:
                yield
        finally:
            guard.users -= 1
            if not guard.users:
                del self._dedup_locks[key]

    async def purge_dedup(self, now: float) -> int:
        """Drop duplicate-detection records with ``expires_at <= now``; how many."""
        return await self._purge(self._dedup_heap, "dedup", _DEDUP_DECODER, now)
