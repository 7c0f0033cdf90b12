"""Stored messages of the NATS JetStream backend: one stream, a subject per recipient.

What:
    :class:`StreamQueue` implements the :class:`~msgin5g.storage.base.MessageQueue`
    part of the backend on ONE JetStream stream ``<prefix>_Q`` (file storage,
    ``allow_direct``, subjects ``<prefix>.>``):

    * each queued item (``MSG`` or ``IMDN``) is one message on
      ``<prefix>.q.<token(recipient)>``, its JSON as body and its routing state
      (seq, priority, expiry, store flag, size, kind, message ID, payload
      reference) as headers (:mod:`msgin5g.storage.nats.codec`);
    * a fan-out stores its template once on ``<prefix>.p`` and one header-only
      message per member that refers to it (``M5-Pid``);
    * removal is ``STREAM.MSG.DELETE`` by stream sequence; a change of expiry
      republishes the item (same seq, new expiry) and deletes the old message.

Index:
    Which items exist, and their order, expiry and size, live in an in-memory
    index rebuilt at start-up from a headers-only ordered consumer over the
    stream (bodies are not transferred). ``pending_for`` sorts one recipient's
    entries by (priority, seq) and fetches only the bodies it returns, by
    direct get. ``take_expired`` pops a heap. The cluster item will replace
    this node-wide index by one per owned recipient (subject filter
    ``<prefix>.q.<token>``), since another node's writes are not seen here.

Seq:
    The service needs a seq before a fan-out's write is acknowledged, so seqs
    are not stream sequences: at start each backend claims a generation number
    ``g`` from the ``<prefix>_meta`` bucket (compare-and-set) and hands out
    ``g << 32 | n``. Seqs grow across restarts and never collide between nodes.

Durability:
    An awaited write returns after JetStream's Reply for every message it
    wrote (file storage: the message is in the server's store and survives a
    kill -9 of msgin5g and of nats-server). :meth:`StreamQueue.remove_nowait`
    hides the item at once and deletes it in the background.
"""

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Sequence

import msgspec

from msgin5g.errors import StorageError
from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.storage.base import DedupRecord
from msgin5g.storage.nats.codec import (
    H_EXPIRES,
    H_MSG_ID,
    H_PAYLOAD,
    H_SEQ,
    ITEM_ENCODER,
    ItemMeta,
    dedup_msg_id,
    encode_meta,
)
from msgin5g.storage.nats.driver import map_driver_errors
from msgin5g.storage.nats.index import Payload, StreamIndex, queue_order
from msgin5g.storage.nats.pipe import Reply

__all__ = ["StreamQueue"]

_log = logging.getLogger(__name__)


class StreamQueue(StreamIndex):
    """The message queue on one JetStream stream, with an in-memory index."""

    # ---------------------------------------------------------------- writes

    async def enqueue(self, item: QueuedItem) -> int:
        """Store ``item`` (one acknowledged publish); assign and return its seq."""
        seq = item.seq = self._next_seq()
        meta = self._meta_of(item)
        ack = await self._publish(
            self._subject(item.recipient),
            ITEM_ENCODER.encode(item.item),
            encode_meta(meta),
        )
        meta.sseq = ack.seq
        self._index(meta)
        return seq

    async def enqueue_once(
        self,
        item: QueuedItem,
        dedup: DedupRecord,
        now: float,
        routes: Sequence[ReportRoute] = (),
    ) -> DedupRecord | None:
        """Store ``item``, ``routes`` and ``dedup`` unless a live record has the key.

        Order: message (with a deterministic ``Nats-Msg-Id``), routes, then the
        record (KV create). The record is read only when needed: when JetStream
        answers "duplicate" (a resend: the record says whether it was answered,
        or the earlier attempt crashed before its record) and when the create
        finds the key taken (a live record: this copy is undone; an expired one:
        replaced at its revision). A new message — nearly every one — costs
        the publish and the create, not a read before them (one JetStream
        round trip less per message, issue 12's CPU per message). A crash
        before the record leaves a stored message the sender was not told
        about; its resend republishes with the same ``Nats-Msg-Id``
        (JetStream answers "duplicate", nothing is stored twice within
        ``dup_window``) and writes the record.
        """
        async with self._dedup_guard(dedup):
            seq = self._next_seq()
            meta = self._meta_of(msgspec.structs.replace(item, seq=seq))
            subject = self._subject(item.recipient)
            body = ITEM_ENCODER.encode(item.item)
            ack = await self._publish(
                subject,
                body,
                encode_meta(meta, dedup_msg_id(dedup, None, item.recipient)),
            )
            found: tuple[DedupRecord, int] | None = None
            if ack.duplicate:
                found = await self._get_dedup(dedup.originator, dedup.message_id)
                if found is not None and found[0].expires_at > now:
                    return found[0]  # answered before: nothing stored now
                if found is not None:
                    # the record of an earlier message with this ID expired,
                    # but JetStream still remembers its Nats-Msg-Id: a new one
                    ack = await self._publish(
                        subject,
                        body,
                        encode_meta(
                            meta,
                            dedup_msg_id(dedup, found[0].expires_at, item.recipient),
                        ),
                    )
            fresh = not ack.duplicate
            if fresh:
                meta.sseq = ack.seq
                self._index(meta)
            else:  # an earlier attempt stored it (crash before its record)
                seq = self._by_sseq.get(ack.seq, seq)
            await self._put_routes(list(routes))
            winner = await self._put_dedup(dedup, None if found is None else found[1])
            if winner is not None and winner[0].expires_at <= now:
                # an expired record was in the way: replace it at its revision
                winner = await self._put_dedup(dedup, winner[1])
            if winner is not None and winner[0].expires_at > now:
                if fresh:  # answered before, or another node won the race
                    await self.remove(seq)
                return winner[0]
            item.seq = seq
            return None

    def enqueue_fanout(
        self,
        template: Msg,
        items: list[QueuedItem],
        routes: list[ReportRoute],
        dedup: DedupRecord | None = None,
        now: float = 0.0,
    ) -> Awaitable[DedupRecord | None]:
        """Store one template and a header-only message per member; seqs set now."""
        pid = self._next_seq()
        for item in items:
            item.seq = self._next_seq()
            self._inflight.add(item.seq)
        return asyncio.ensure_future(
            self._fanout(pid, template, items, routes, dedup=dedup, now=now)
        )

    async def _fanout(
        self,
        pid: int,
        template: Msg,
        items: list[QueuedItem],
        routes: list[ReportRoute],
        *,
        dedup: DedupRecord | None,
        now: float,
    ) -> DedupRecord | None:
        try:
            if dedup is None:
                await self._write_fanout(pid, template, items, None, None)
                await self._put_routes(routes)
                return None
            async with self._dedup_guard(dedup):
                found = await self._get_dedup(dedup.originator, dedup.message_id)
                if found is not None and found[0].expires_at > now:
                    return found[0]
                replaces = None if found is None else found[0].expires_at
                await self._write_fanout(pid, template, items, dedup, replaces)
                await self._put_routes(routes)
                winner = await self._put_dedup(
                    dedup, None if found is None else found[1]
                )
                if winner is not None and winner[0].expires_at > now:
                    for item in items:
                        await self.remove(item.seq)
                    return winner[0]
                return None
        finally:
            for item in items:
                self._inflight.discard(item.seq)
                self._early_removed.discard(item.seq)

    async def _write_fanout(
        self,
        pid: int,
        template: Msg,
        items: list[QueuedItem],
        dedup: DedupRecord | None,
        replaces: float | None,
    ) -> None:
        body = ITEM_ENCODER.encode(template)
        subject = f"{self._prefix}.p.{pid}"
        expires_at = max((item.expires_at for item in items), default=0.0)
        payload_headers = {
            H_SEQ: str(pid),
            H_PAYLOAD: str(pid),
            H_EXPIRES: repr(expires_at),
        }
        first: Reply | None = None
        if dedup is not None:
            # Payload first: a resend's members must refer to the payload stored
            # by the first attempt (JetStream answers "duplicate" with its seq).
            payload_headers[H_MSG_ID] = dedup_msg_id(dedup, replaces, "/payload")
            first = await self._publish(subject, body, payload_headers)
            if first.duplicate:
                pid = await self._payload_pid(first.seq, pid)
        metas = [self._meta_of(item, pid) for item in items]
        writes = [
            self._publish(
                self._subject(meta.recipient),
                b"",
                encode_meta(
                    meta,
                    None
                    if dedup is None
                    else dedup_msg_id(dedup, replaces, meta.recipient),
                ),
            )
            for meta in metas
        ]
        if first is None:  # no resend possible: payload and members pipelined
            writes.insert(0, self._publish(subject, body, payload_headers))
        results = await asyncio.gather(*writes, return_exceptions=True)
        acks = [r for r in results if isinstance(r, Reply)]
        if len(acks) < len(results):  # the sender gets no answer: undo what was stored
            stored = [a.seq for a in acks if not a.duplicate]
            if first is not None and not first.duplicate:
                stored.append(first.seq)
            try:
                await self._delete_sseqs(stored)
            except StorageError:
                _log.warning(
                    "nats: could not undo %d messages of a failed fan-out", len(stored)
                )
            raise next(r for r in results if isinstance(r, BaseException))
        if first is None:
            first, acks = acks[0], acks[1:]
        self._payloads.setdefault(pid, Payload(first.seq, expires_at=expires_at))
        for meta, ack in zip(metas, acks, strict=True):
            if ack.duplicate:
                continue
            meta.sseq = ack.seq
            if meta.seq in self._early_removed:
                self._schedule_delete(ack.seq)
            else:
                self._index(meta)

    async def _payload_pid(self, sseq: int, default: int) -> int:
        """The pid of the payload stored at ``sseq`` by an earlier attempt."""
        with map_driver_errors():
            raw = await self._jsm.get_msg(self._stream, sseq, direct=True)
        pid = int((raw.headers or {}).get(H_PAYLOAD, default))
        self._payloads.setdefault(pid, Payload(sseq))
        return pid

    # ---------------------------------------------------------------- removal

    async def remove(self, seq: int) -> None:
        """Forget a delivered/expired/failed item; unknown ``seq`` is ignored."""
        meta = self._unindex(seq)
        if meta is None:
            if seq in self._inflight:
                self._early_removed.add(seq)
            return
        await self._delete_sseqs([meta.sseq])

    def remove_nowait(self, seq: int) -> None:
        """Hide ``seq`` at once; its message is deleted in the background."""
        meta = self._unindex(seq)
        if meta is None:
            if seq in self._inflight:
                self._early_removed.add(seq)
            return
        self._schedule_delete(meta.sseq)

    def _schedule_delete(self, sseq: int) -> None:
        self._to_delete.append(sseq)
        if self._deleter is None or self._deleter.done():
            self._deleter = asyncio.get_running_loop().create_task(
                self._drain_deletes()
            )

    async def _drain_deletes(self) -> None:
        while self._to_delete:
            batch, self._to_delete = self._to_delete, []
            try:
                await self._delete_sseqs(batch)
            except StorageError as exc:  # kept for the next try (at-least-once)
                _log.warning("nats: background delete failed (%s); retrying", exc)
                self._to_delete.extend(batch)
                await asyncio.sleep(0.5)

    async def purge_payloads(self) -> int:
        """Delete fan-out templates no stored item refers to; return how many.

        A template whose members other cluster nodes may hold (``shared``) is
        kept until its members' expiry has passed.
        """
        now = time.time()
        dead = [
            pid
            for pid, payload in self._payloads.items()
            if payload.refs <= 0 and (not payload.shared or payload.expires_at < now)
        ]
        sseqs = [self._payloads.pop(pid).sseq for pid in dead]
        await self._delete_sseqs(sseqs)
        return len(dead)

    # ---------------------------------------------------------------- reads

    async def pending_for(
        self, recipient: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[QueuedItem]:
        """Items for ``recipient`` with ``seq > after_seq``, by (priority, seq)."""
        entries = self._by_recipient.get(recipient)
        if not entries or limit <= 0:
            return []
        chosen = sorted(
            (m for m in entries.values() if m.seq > after_seq), key=queue_order
        )
        return await self._load(chosen[:limit])

    async def recipients_with_pending(self) -> list[str]:
        """Distinct recipients that have at least one item, sorted."""
        return sorted(self._by_recipient)

    async def take_expired(self, now: float, *, limit: int = 1000) -> list[QueuedItem]:
        """Remove and return up to ``limit`` items with ``expires_at <= now``."""
        taken: dict[int, ItemMeta] = {}
        heap = self._expiry
        while heap and heap[0][0] <= now and len(taken) < limit:
            expires_at, seq = heapq.heappop(heap)
            meta = self._entries.get(seq)
            if meta is not None and meta.expires_at == expires_at:
                taken[seq] = meta
        return await self._take(list(taken.values())) if taken else []

    async def find(self, recipient: str, message_id: str) -> QueuedItem | None:
        """The stored ``MSG`` for ``recipient`` with that Message ID (lowest seq)."""
        matches = [
            m
            for m in self._by_recipient.get(recipient, {}).values()
            if m.is_msg and m.message_id == message_id
        ]
        if not matches:
            return None
        found = await self._load([min(matches, key=lambda m: m.seq)])
        return found[0] if found else None

    async def set_expiry(self, seq: int, expires_at: float) -> bool:
        """Republish the item with the new expiry, then delete the old message."""
        meta = self._entries.get(seq)
        if meta is None:
            return False
        body = b"" if meta.pid else await self._get_body(meta.sseq)
        if body is None:
            return False
        updated = msgspec.structs.replace(meta, expires_at=expires_at)
        ack = await self._publish(
            self._subject(meta.recipient), body, encode_meta(updated)
        )
        if self._entries.get(seq) is not meta:  # removed or changed meanwhile
            await self._delete_sseqs([ack.seq])
            return True
        self._unindex(seq)
        updated.sseq = ack.seq
        self._index(updated)
        await self._delete_sseqs([meta.sseq])
        return True

    async def take_all_for(self, recipient: str) -> list[QueuedItem]:
        """Remove and return every item of ``recipient``, by (priority, seq)."""
        entries = self._by_recipient.get(recipient)
        if not entries:
            return []
        return await self._take(sorted(entries.values(), key=queue_order))

    async def count(self) -> int:
        """Number of items stored."""
        return len(self._entries)

    async def stored_usage(self) -> dict[str, tuple[int, int]]:
        """Per recipient: (stored items, sum of :func:`stored_size`)."""
        return {
            recipient: (len(entries), sum(m.size for m in entries.values()))
            for recipient, entries in self._by_recipient.items()
        }
