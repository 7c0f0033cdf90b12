"""Moving stored items between the indexes of cluster nodes (docs/cluster.md).

What:
    Every node keeps an in-memory index of the stored items it is responsible
    for (:mod:`msgin5g.storage.nats.index`); the items themselves are in the
    shared stream. :class:`HandOffQueue` adds the operations that move that
    responsibility without copying or deleting anything in the stream:

    * :meth:`~HandOffQueue.export_items` / :meth:`~HandOffQueue.import_items`:
      the body of a hand-off request (index entries + item bodies) from the
      node that stored items to the node that owns their recipient;
    * :meth:`~HandOffQueue.forget`: drop entries from this node's index (after
      the owner took them), without deleting the messages;
    * :meth:`~HandOffQueue.adopt`: read one recipient's subject (headers only)
      and index what other nodes stored for it (a UE registers here);
    * :meth:`~HandOffQueue.prune`: at start-up, drop the entries that belong
      to other live nodes (the start-up rebuild reads the whole stream).

Why nothing is lost and (almost) nothing is doubled:
    The stream holds every item until a node deletes it, and a delete is the
    arbiter: an item several nodes index is reported (expiry) only by the node
    whose delete succeeded. An owner that adopted a recipient remembers the
    stream sequence it had read up to; a hand-off arriving later for an item at
    or below it that the owner no longer indexes was delivered already and is
    ignored (``_ADOPT_MEMORY`` seconds, bounded to ``_ADOPT_MAX`` recipients).
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Final

import msgspec
from nats.js.api import ConsumerConfig, DeliverPolicy

from msgin5g.model.queue import QueuedItem
from msgin5g.storage.nats.codec import (
    H_EXPIRES,
    H_PAYLOAD,
    ITEM_DECODER,
    ITEM_ENCODER,
    ItemMeta,
    decode_meta,
)
from msgin5g.storage.nats.driver import is_not_found, map_driver_errors
from msgin5g.storage.nats.index import Payload
from msgin5g.storage.nats.queue import StreamQueue

__all__ = ["HandOffQueue"]

_log = logging.getLogger(__name__)

_ADOPT_MEMORY: Final = 120.0
_ADOPT_MAX: Final = 100_000


class _Handed(msgspec.Struct, array_like=True, gc=False):
    """One item of a hand-off: its index entry, its body, its template's place."""

    meta: ItemMeta
    body: bytes
    payload_sseq: int = 0
    payload_expires: float = 0.0


_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(list[_Handed])


class HandOffQueue(StreamQueue):
    """The stream queue plus the moves of index entries between nodes."""

    _adopted: "OrderedDict[str, tuple[int, float]]"

    # ---------------------------------------------------------------- hand-off

    def export_items(self, items: Sequence[QueuedItem]) -> tuple[bytes, list[int]]:
        """The body of a hand-off of ``items`` and the seqs it carries.

        Items this node no longer indexes (removed meanwhile) are left out.
        """
        handed: list[_Handed] = []
        for item in items:
            meta = self._entries.get(item.seq)
            if meta is None:
                continue
            payload = self._payloads.get(meta.pid) if meta.pid else None
            handed.append(
                _Handed(
                    meta,
                    ITEM_ENCODER.encode(item.item),
                    0 if payload is None else payload.sseq,
                    0.0 if payload is None else payload.expires_at,
                )
            )
        return _ENCODER.encode(handed), [h.meta.seq for h in handed]

    def forget(self, seqs: Sequence[int]) -> None:
        """Drop ``seqs`` from this node's index; the stream keeps the messages."""
        for seq in seqs:
            meta = self._unindex(seq)
            if meta is not None and meta.pid:
                payload = self._payloads.get(meta.pid)
                if payload is not None:
                    payload.shared = True

    def import_items(self, body: bytes) -> list[QueuedItem]:
        """Index the items of a hand-off; return the ones that are new here.

        Raises:
            msgspec.ValidationError, msgspec.DecodeError: not a hand-off body.
        """
        fresh: list[QueuedItem] = []
        for handed in _DECODER.decode(body):
            meta = handed.meta
            if meta.seq in self._entries or self._seen_before(meta):
                continue
            if meta.pid and meta.pid not in self._payloads:
                self._payloads[meta.pid] = Payload(
                    handed.payload_sseq,
                    expires_at=handed.payload_expires,
                    shared=True,
                )
            self._index(meta)
            fresh.append(
                QueuedItem(
                    recipient=meta.recipient,
                    item=ITEM_DECODER.decode(handed.body),
                    priority=meta.priority,
                    expires_at=meta.expires_at,
                    store=meta.store,
                    seq=meta.seq,
                )
            )
        return fresh

    def _seen_before(self, meta: ItemMeta) -> bool:
        """Whether an adopt here read past ``meta`` (so it was handled already)."""
        adopted = self._adopted.get(meta.recipient)
        if adopted is None:
            return False
        upto, when = adopted
        if time.monotonic() - when > _ADOPT_MEMORY:
            del self._adopted[meta.recipient]
            return False
        return meta.sseq <= upto

    # ---------------------------------------------------------------- adopt

    async def adopt(self, recipient: str) -> int:
        """Index every item stored for ``recipient`` that this node does not hold.

        One direct get tells whether the recipient's subject holds anything;
        only then an ordered consumer reads its headers. Entries held here
        whose messages are gone (another node removed them) are dropped.

        Returns:
            How many items were added to the index.
        """
        subject = self._subject(recipient)
        with map_driver_errors():
            try:
                last = await self._jsm.get_msg(
                    self._stream, subject=subject, direct=True
                )
            except Exception as exc:
                if not is_not_found(exc):
                    raise
                last = None
        if last is None or last.seq is None:
            self._remember_adopt(recipient, 0)
            return 0
        upto = last.seq
        found = await self._read_subject(recipient, subject, upto)
        self._remember_adopt(recipient, upto)
        added = 0
        for meta in found.values():
            held = self._entries.get(meta.seq)
            if held is not None:
                if held.sseq >= meta.sseq:
                    continue
                self._unindex(meta.seq)
            if (
                meta.pid
                and meta.pid not in self._payloads
                and not await self._find_payload(meta.pid)
            ):
                continue  # its fan-out never completed
            self._index(meta)
            added += 1
        self._drop_missing(recipient, {m.sseq for m in found.values()}, upto)
        return added

    async def _read_subject(
        self, recipient: str, subject: str, upto: int
    ) -> dict[int, ItemMeta]:
        """The index entries on ``subject`` up to stream sequence ``upto``, by seq."""
        found: dict[int, ItemMeta] = {}
        with map_driver_errors():
            sub = await self._js.subscribe(
                subject,
                stream=self._stream,
                ordered_consumer=True,
                headers_only=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            try:
                while True:
                    msg = await sub.next_msg(timeout=10)
                    sseq = msg.metadata.sequence.stream
                    try:
                        meta = decode_meta(recipient, msg.headers or {}, sseq)
                    except (KeyError, ValueError, UnicodeDecodeError):
                        _log.warning("nats: skipping undecodable message %d", sseq)
                    else:
                        previous = found.get(meta.seq)
                        if previous is None or previous.sseq < sseq:
                            found[meta.seq] = meta
                    if sseq >= upto or not msg.metadata.num_pending:
                        return found
            finally:
                await sub.unsubscribe()

    async def _find_payload(self, pid: int) -> bool:
        """Index the fan-out template ``pid`` from its subject; False if absent."""
        with map_driver_errors():
            try:
                raw = await self._jsm.get_msg(
                    self._stream, subject=f"{self._prefix}.p.{pid}", direct=True
                )
            except Exception as exc:
                if is_not_found(exc):
                    return False
                raise
        headers = raw.headers or {}
        self._payloads[pid] = Payload(
            raw.seq or 0,
            expires_at=float(headers.get(H_EXPIRES, "0")),
            shared=True,
        )
        return int(headers.get(H_PAYLOAD, pid)) == pid

    def _drop_missing(self, recipient: str, present: set[int], upto: int) -> None:
        """Unindex entries of ``recipient`` at or below ``upto`` not in ``present``."""
        gone = [
            meta.seq
            for meta in self._by_recipient.get(recipient, {}).values()
            if meta.sseq <= upto and meta.sseq not in present
        ]
        self.forget(gone)

    def _remember_adopt(self, recipient: str, upto: int) -> None:
        self._adopted[recipient] = (upto, time.monotonic())
        self._adopted.move_to_end(recipient)
        while len(self._adopted) > _ADOPT_MAX:
            self._adopted.popitem(last=False)

    # ---------------------------------------------------------------- start-up

    def prune(self, keeps: Callable[[str, str], bool]) -> int:
        """Drop index entries ``keeps(recipient, writer)`` refuses; return how many."""
        dropped = [
            meta.seq
            for recipient, entries in self._by_recipient.items()
            for meta in entries.values()
            if not keeps(recipient, meta.node)
        ]
        self.forget(dropped)
        return len(dropped)
