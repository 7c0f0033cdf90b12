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
    An awaited write returns after JetStream's PubAck for every message it
    wrote (file storage: the message is in the server's store and survives a
    kill -9 of msgin5g and of nats-server). :meth:`StreamQueue.remove_nowait`
    hides the item at once and deletes it in the background.
"""

import asyncio
import heapq
import json
import logging
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Final

import msgspec
from nats.aio.client import Client
from nats.js.api import DeliverPolicy, PubAck
from nats.js.client import JetStreamContext
from nats.js.manager import JetStreamManager

from msgin5g.errors import StorageError
from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute, member_copy
from msgin5g.storage.base import DedupRecord, stored_size
from msgin5g.storage.nats.codec import (
    H_MSG_ID,
    H_PAYLOAD,
    H_SEQ,
    ITEM_DECODER,
    ITEM_ENCODER,
    ItemMeta,
    decode_meta,
    dedup_msg_id,
    encode_meta,
    token,
    untoken,
)
from msgin5g.storage.nats.driver import is_not_found, map_driver_errors
from msgin5g.storage.nats.kv import KvStores

__all__ = ["StreamQueue"]

_log = logging.getLogger(__name__)

_SEQ_BITS: Final = 32
_NOT_FOUND: Final = frozenset({10037, 10057, 10059})


def _order(meta: ItemMeta) -> tuple[int, int]:
    return (meta.priority, meta.seq)


class _Payload:
    """A stored fan-out template: its stream sequence and how many items use it."""

    __slots__ = ("refs", "sseq")

    def __init__(self, sseq: int) -> None:
        self.sseq = sseq
        self.refs = 0


class StreamQueue(KvStores):
    """The message queue on one JetStream stream, with an in-memory index."""

    _js: JetStreamContext
    _js_client: Client
    _jsm: JetStreamManager
    _prefix: str
    _stream: str
    _generation: int
    _counter: int
    _entries: dict[int, ItemMeta]
    _by_recipient: dict[str, dict[int, ItemMeta]]
    _by_sseq: dict[int, int]
    _expiry: list[tuple[float, int]]
    _payloads: dict[int, _Payload]
    _inflight: set[int]
    _early_removed: set[int]
    _to_delete: list[int]
    _deleter: "asyncio.Task[None] | None"

    # ---------------------------------------------------------------- helpers

    def _next_seq(self) -> int:
        self._counter += 1
        if self._counter >= 1 << _SEQ_BITS:
            raise StorageError("nats: seq space of this run exhausted; restart msgin5g")
        return (self._generation << _SEQ_BITS) | self._counter

    def _subject(self, recipient: str) -> str:
        return f"{self._prefix}.q.{token(recipient)}"

    async def _publish(
        self, subject: str, body: bytes, headers: dict[str, str]
    ) -> PubAck:
        with map_driver_errors():
            return await self._js.publish(subject, body, headers=headers)

    def _index(self, meta: ItemMeta) -> None:
        self._entries[meta.seq] = meta
        self._by_recipient.setdefault(meta.recipient, {})[meta.seq] = meta
        self._by_sseq[meta.sseq] = meta.seq
        heapq.heappush(self._expiry, (meta.expires_at, meta.seq))
        if meta.pid:
            payload = self._payloads.get(meta.pid)
            if payload is not None:
                payload.refs += 1

    def _unindex(self, seq: int) -> ItemMeta | None:
        meta = self._entries.pop(seq, None)
        if meta is None:
            return None
        per_recipient = self._by_recipient[meta.recipient]
        del per_recipient[seq]
        if not per_recipient:
            del self._by_recipient[meta.recipient]
        self._by_sseq.pop(meta.sseq, None)
        if meta.pid:
            payload = self._payloads.get(meta.pid)
            if payload is not None:
                payload.refs -= 1
        if len(self._expiry) > 2 * len(self._entries) + 64:
            self._expiry = [(m.expires_at, s) for s, m in self._entries.items()]
            heapq.heapify(self._expiry)
        return meta

    @staticmethod
    def _meta_of(item: QueuedItem, pid: int = 0) -> ItemMeta:
        return ItemMeta(
            seq=item.seq,
            recipient=item.recipient,
            priority=item.priority,
            expires_at=item.expires_at,
            store=item.store,
            size=stored_size(item.item),
            message_id=item.item.message_id,
            is_msg=isinstance(item.item, Msg),
            pid=pid,
        )

    async def _js_request(self, subject: str, body: bytes) -> dict[str, Any]:
        msg = await self._js_client.request(subject, body, timeout=10.0)
        reply: dict[str, Any] = json.loads(msg.data)
        return reply

    async def _get_body(self, sseq: int) -> bytes | None:
        """Body of the message at ``sseq`` (b"" if empty), None if it is gone."""
        with map_driver_errors():
            try:
                raw = await self._jsm.get_msg(self._stream, sseq, direct=True)
            except Exception as exc:
                if is_not_found(exc):
                    return None
                raise
        return raw.data or b""

    async def _delete_sseqs(self, sseqs: Iterable[int]) -> None:
        """``STREAM.MSG.DELETE`` with ``no_erase`` (no overwrite of the old bytes).

        The default delete of ``nats-py`` securely erases (rewrites) the record,
        which costs several times the delete itself; the data is unreachable
        either way and its block is compacted by the server.
        """
        subject = f"$JS.API.STREAM.MSG.DELETE.{self._stream}"

        async def delete(sseq: int) -> None:
            reply = await self._js_request(
                subject, b'{"seq":%d,"no_erase":true}' % sseq
            )
            error = reply.get("error")
            if error and error.get("err_code") not in _NOT_FOUND:
                raise StorageError(f"nats: delete of message {sseq}: {error}")

        with map_driver_errors():
            await asyncio.gather(*(delete(s) for s in sseqs))

    async def _load(self, metas: Sequence[ItemMeta]) -> list[QueuedItem]:
        """The items of ``metas`` (same order), bodies fetched by direct get."""
        templates: dict[int, Msg | None] = {}
        for pid in {m.pid for m in metas if m.pid}:
            payload = self._payloads.get(pid)
            body = None if payload is None else await self._get_body(payload.sseq)
            with map_driver_errors():
                decoded = None if body is None else ITEM_DECODER.decode(body)
            templates[pid] = decoded if isinstance(decoded, Msg) else None
        own = [m for m in metas if not m.pid]
        bodies = dict(
            zip(
                (m.seq for m in own),
                await asyncio.gather(*(self._get_body(m.sseq) for m in own)),
                strict=True,
            )
        )
        items: list[QueuedItem] = []
        for meta in metas:
            if meta.pid:
                template = templates.get(meta.pid)
                if template is None:
                    continue
                body_item: object = member_copy(template, meta.recipient)
            else:
                body = bodies.get(meta.seq)
                if body is None:
                    continue  # deleted meanwhile (another remover won)
                with map_driver_errors():
                    body_item = ITEM_DECODER.decode(body)
            items.append(
                QueuedItem(
                    recipient=meta.recipient,
                    item=body_item,  # type: ignore[arg-type]
                    priority=meta.priority,
                    expires_at=meta.expires_at,
                    store=meta.store,
                    seq=meta.seq,
                )
            )
        return items

    async def _take(self, metas: list[ItemMeta]) -> list[QueuedItem]:
        """Unindex, read and delete ``metas``; re-index them if reading fails."""
        for meta in metas:
            self._unindex(meta.seq)
        try:
            items = await self._load(metas)
        except BaseException:
            for meta in metas:
                self._index(meta)
            raise
        await self._delete_sseqs(m.sseq for m in metas)
        return items

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
        record (KV create, or update at the expired record's revision). A crash
        before the record leaves a stored message the sender was not told
        about; its resend finds no record, republishes with the same
        ``Nats-Msg-Id`` (JetStream answers "duplicate", nothing is stored twice
        within ``dup_window``) and writes the record.
        """
        async with self._dedup_guard(dedup):
            found = await self._get_dedup(dedup.originator, dedup.message_id)
            if found is not None and found[0].expires_at > now:
                return found[0]
            replaces = None if found is None else found[0].expires_at
            seq = self._next_seq()
            meta = self._meta_of(msgspec.structs.replace(item, seq=seq))
            headers = encode_meta(meta, dedup_msg_id(dedup, replaces, item.recipient))
            ack = await self._publish(
                self._subject(item.recipient), ITEM_ENCODER.encode(item.item), headers
            )
            fresh = not ack.duplicate
            if fresh:
                meta.sseq = ack.seq
                self._index(meta)
            else:  # an earlier attempt stored it (crash before its record)
                seq = self._by_sseq.get(ack.seq, seq)
            await self._put_routes(list(routes))
            winner = await self._put_dedup(dedup, None if found is None else found[1])
            if winner is not None and winner[0].expires_at > now:
                if fresh:  # another node wrote the same key first: undo ours
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
        subject = f"{self._prefix}.p"
        payload_headers = {H_SEQ: str(pid), H_PAYLOAD: str(pid)}
        first: PubAck | None = None
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
        acks = [r for r in results if isinstance(r, PubAck)]
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
        self._payloads.setdefault(pid, _Payload(first.seq))
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
        self._payloads.setdefault(pid, _Payload(sseq))
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
        """Delete fan-out templates no stored item refers to; return how many."""
        dead = [pid for pid, payload in self._payloads.items() if payload.refs <= 0]
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
        chosen = sorted((m for m in entries.values() if m.seq > after_seq), key=_order)
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
        return await self._take(sorted(entries.values(), key=_order))

    async def count(self) -> int:
        """Number of items stored."""
        return len(self._entries)

    async def stored_usage(self) -> dict[str, tuple[int, int]]:
        """Per recipient: (stored items, sum of :func:`stored_size`)."""
        return {
            recipient: (len(entries), sum(m.size for m in entries.values()))
            for recipient, entries in self._by_recipient.items()
        }

    # ---------------------------------------------------------------- start-up

    async def _rebuild_index(self) -> None:
        """Read every message's headers once and rebuild the index."""
        with map_driver_errors():
            info = await self._jsm.stream_info(self._stream)
            if not info.state.messages:
                return
            sub = await self._js.subscribe(
                f"{self._prefix}.>",
                stream=self._stream,
                ordered_consumer=True,
                headers_only=True,
                deliver_policy=DeliverPolicy.ALL,
            )
            items: dict[int, ItemMeta] = {}
            stale: list[int] = []
            try:
                while True:
                    msg = await sub.next_msg(timeout=10)
                    sseq = msg.metadata.sequence.stream
                    self._read_one(msg.subject, msg.headers or {}, sseq, items, stale)
                    if not msg.metadata.num_pending:
                        break
            finally:
                await sub.unsubscribe()
        for meta in items.values():
            if meta.pid and meta.pid not in self._payloads:
                stale.append(meta.sseq)  # its fan-out never completed
            else:
                self._index(meta)
        if stale:
            _log.warning(
                "nats: dropping %d superseded or orphaned queue messages", len(stale)
            )
            await self._delete_sseqs(stale)

    def _read_one(
        self,
        subject: str,
        headers: dict[str, str],
        sseq: int,
        items: dict[int, ItemMeta],
        stale: list[int],
    ) -> None:
        parts = subject.split(".")
        try:
            if parts[1:] == ["p"]:
                self._payloads[int(headers[H_PAYLOAD])] = _Payload(sseq)
                return
            meta = decode_meta(untoken(parts[2]), headers, sseq)
        except (IndexError, KeyError, ValueError, UnicodeDecodeError):
            _log.warning("nats: skipping undecodable message %d on %s", sseq, subject)
            return
        previous = items.get(meta.seq)
        if previous is not None:  # set_expiry republished it: the newer one wins
            stale.append(previous.sseq)
        items[meta.seq] = meta
