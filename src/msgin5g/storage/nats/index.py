"""The in-memory index of the queue stream and the stream I/O it needs.

What:
    :class:`StreamIndex` keeps, for every stored item, its :class:`ItemMeta`
    (seq, recipient, priority, expiry, size, stream sequence...) by seq, by
    recipient and by stream sequence, a heap of expiries and the reference
    counts of fan-out templates. It is rebuilt at start-up from a headers-only
    ordered consumer (no body is transferred) and kept up to date by every
    write of :class:`~msgin5g.storage.nats.queue.StreamQueue`. It also holds the
    stream I/O shared by the queue operations: publish, direct get of bodies,
    delete without erase. Layout and numbers: ``docs/cluster.md``.
"""

import asyncio
import heapq
import logging
from collections.abc import Iterable, Sequence
from typing import Final

from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.manager import JetStreamManager

from msgin5g.errors import StorageError
from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, member_copy
from msgin5g.storage.base import stored_size
from msgin5g.storage.nats.codec import (
    H_EXPIRES,
    H_PAYLOAD,
    ITEM_DECODER,
    ItemMeta,
    decode_meta,
    token,
    untoken,
)
from msgin5g.storage.nats.driver import is_not_found, map_driver_errors
from msgin5g.storage.nats.kv import KvStores
from msgin5g.storage.nats.pipe import Reply, Requests

__all__ = ["Payload", "StreamIndex", "queue_order"]

_log = logging.getLogger(__name__)

_SEQ_BITS: Final = 32
_NOT_FOUND: Final = frozenset({10037, 10057, 10059})


def queue_order(meta: ItemMeta) -> tuple[int, int]:
    return (meta.priority, meta.seq)


class Payload:
    """A stored fan-out template: its stream sequence and how many items use it.

    ``shared``: members of it are (or may be) held by other cluster nodes, so a
    count of zero here does not mean nobody needs it; it is then deleted only
    once ``expires_at`` (the members' expiry) has passed.
    """

    __slots__ = ("expires_at", "refs", "shared", "sseq")

    def __init__(
        self, sseq: int, *, expires_at: float = 0.0, shared: bool = False
    ) -> None:
        self.sseq = sseq
        self.refs = 0
        self.expires_at = expires_at
        self.shared = shared


class StreamIndex(KvStores):
    """Index of the stored items and the stream I/O of the queue."""

    _js: JetStreamContext
    _js_client: Client
    _jsm: JetStreamManager
    _req: Requests
    _prefix: str
    _stream: str
    _generation: int
    _counter: int
    _entries: dict[int, ItemMeta]
    _by_recipient: dict[str, dict[int, ItemMeta]]
    _by_sseq: dict[int, int]
    _expiry: list[tuple[float, int]]
    _payloads: dict[int, Payload]
    _inflight: set[int]
    _early_removed: set[int]
    _to_delete: list[int]
    _deleter: "asyncio.Task[None] | None"
    node: str

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
    ) -> Reply:
        """Acknowledged publish (PubAck: ``seq``, ``duplicate``)."""
        with map_driver_errors():
            return await self._req.request(subject, body, headers)

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

    def _meta_of(self, item: QueuedItem, pid: int = 0) -> ItemMeta:
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
            node=self.node,
        )

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

    async def _delete_sseqs(self, sseqs: Iterable[int]) -> set[int]:
        """``STREAM.MSG.DELETE`` with ``no_erase`` (no overwrite of the old bytes).

        The default delete of ``nats-py`` securely erases (rewrites) the record,
        which costs several times the delete itself; the data is unreachable
        either way and its block is compacted by the server.

        Returns:
            The stream sequences this call deleted; the others were gone
            already (another node or an earlier attempt removed them).
        """
        subject = f"$JS.API.STREAM.MSG.DELETE.{self._stream}"
        with map_driver_errors():
            sent = [
                (
                    sseq,
                    await self._req.send(
                        subject, b'{"seq":%d,"no_erase":true}' % sseq, urgent=False
                    ),
                )
                for sseq in sseqs
            ]
            deleted: set[int] = set()
            for sseq, future in sent:
                error = (await future).error
                if not error:
                    deleted.add(sseq)
                elif error.get("err_code") not in _NOT_FOUND:
                    raise StorageError(f"nats: delete of message {sseq}: {error}")
        return deleted

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
        """Unindex, read and delete ``metas``; re-index them if reading fails.

        Only the items this call deleted are returned: in a cluster several
        nodes may hold the same item (docs/cluster.md, "Who removes an item"),
        and the delete decides which one reports its expiry.
        """
        for meta in metas:
            self._unindex(meta.seq)
        try:
            items = await self._load(metas)
        except BaseException:
            for meta in metas:
                self._index(meta)
            raise
        deleted = await self._delete_sseqs(m.sseq for m in metas)
        taken = {m.seq for m in metas if m.sseq in deleted}
        return [item for item in items if item.seq in taken]

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
            if parts[1] == "p":  # <prefix>.p.<pid> (<prefix>.p before clusters)
                self._payloads[int(headers[H_PAYLOAD])] = Payload(
                    sseq, expires_at=float(headers.get(H_EXPIRES, "0"))
                )
                return
            meta = decode_meta(untoken(parts[2]), headers, sseq)
        except (IndexError, KeyError, ValueError, UnicodeDecodeError):
            _log.warning("nats: skipping undecodable message %d on %s", sseq, subject)
            return
        previous = items.get(meta.seq)
        if previous is not None:  # set_expiry republished it: the newer one wins
            stale.append(previous.sseq)
        items[meta.seq] = meta
