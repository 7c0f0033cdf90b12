"""Names, keys, headers and bodies of the NATS JetStream backend (pure functions).

What:
    Everything the backend writes to JetStream is shaped here, with no I/O:

    * :func:`token` / :func:`untoken`: an arbitrary ID (UE Service ID, record
      key, message ID...) as one NATS subject token or KV key token. IDs may
      hold ``.``, ``*``, ``>``, spaces or any Unicode, which subjects and keys
      do not allow, so every ID is written as unpadded base64url of its UTF-8
      form (alphabet ``A-Z a-z 0-9 - _``, valid in both subjects and keys).
    * the subject of a recipient's queue, ``<prefix>.q.<token(recipient)>``,
      and of shared fan-out payloads, ``<prefix>.p``;
    * the headers of a queued item (:class:`ItemMeta`): everything the
      in-memory index needs (seq, priority, expiry, store flag, size, kind,
      message ID, payload reference), so the index is rebuilt at start-up
      from headers only, without transferring bodies;
    * :func:`dedup_msg_id`: the ``Nats-Msg-Id`` of a deduplicated write.

Why base64url and not a hash + map:
    It is reversible without a lookup (``recipients_with_pending`` and
    ``list_credentials`` decode keys directly) and costs 4/3 of the ID length.
"""

import base64
import hashlib
import re
from typing import Final

import msgspec

from msgin5g.errors import ConfigError
from msgin5g.model.messages import Imdn, Msg
from msgin5g.storage.base import DedupRecord

__all__ = [
    "ITEM_DECODER",
    "ITEM_ENCODER",
    "PREFIX_PATTERN",
    "ItemMeta",
    "decode_meta",
    "dedup_msg_id",
    "encode_meta",
    "token",
    "untoken",
]

PREFIX_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,32}")
"""Allowed bucket/stream name prefix (valid in stream names, KV buckets, subjects)."""

ITEM_ENCODER: Final = msgspec.json.Encoder()
ITEM_DECODER: Final = msgspec.json.Decoder(Msg | Imdn)

H_SEQ: Final = "M5-Seq"
H_PRIORITY: Final = "M5-Pri"
H_EXPIRES: Final = "M5-Exp"
H_STORE: Final = "M5-Store"
H_SIZE: Final = "M5-Size"
H_KIND: Final = "M5-Kind"
H_MESSAGE_ID: Final = "M5-Mid"
H_PAYLOAD: Final = "M5-Pid"
H_NODE: Final = "M5-Node"
H_MSG_ID: Final = "Nats-Msg-Id"


def token(value: str) -> str:
    """``value`` as one subject/key token: unpadded base64url of its UTF-8 form.

    Example:
        >>> token("ue.1 *>")
        'dWUuMSAqPg'
        >>> untoken(token("ue.1 *>"))
        'ue.1 *>'
    """
    if not value:
        return "_"  # a token may not be empty; "_" is not valid base64url output alone
    return base64.urlsafe_b64encode(value.encode()).rstrip(b"=").decode("ascii")


def untoken(text: str) -> str:
    """Inverse of :func:`token`."""
    if text == "_":
        return ""
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii")).decode()


def check_prefix(prefix: str) -> str:
    """Validate the bucket/stream name prefix.

    Raises:
        ConfigError: not 1-32 characters of ``A-Z a-z 0-9 _ -``.
    """
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ConfigError(
            f"storage.url: prefix {prefix!r} must be 1-32 characters of A-Z a-z 0-9 _ -"
        )
    return prefix


class ItemMeta(msgspec.Struct, gc=False):
    """What the in-memory index keeps of one stored item (its headers).

    Attributes:
        seq: the storage seq handed to the service (not the stream sequence).
        recipient: recipient key.
        priority: priority rank (0 first).
        expires_at: epoch seconds.
        store: store-and-forward flag.
        size: :func:`msgin5g.storage.base.stored_size` of the item.
        message_id: the MSGin5G Message ID.
        is_msg: True for a ``MSG``, False for an ``IMDN``.
        pid: seq of the shared fan-out payload, 0 if the body is the item's own.
        sseq: JetStream stream sequence of the message holding this item.
        node: the cluster node that stored the item (``""``: a single process).
    """

    seq: int
    recipient: str
    priority: int
    expires_at: float
    store: bool
    size: int
    message_id: str
    is_msg: bool
    pid: int = 0
    sseq: int = 0
    node: str = ""


def encode_meta(meta: ItemMeta, msg_id: str | None = None) -> dict[str, str]:
    """Headers of the stream message holding one item."""
    headers = {
        H_SEQ: str(meta.seq),
        H_PRIORITY: str(meta.priority),
        H_EXPIRES: repr(meta.expires_at),
        H_STORE: "1" if meta.store else "0",
        H_SIZE: str(meta.size),
        H_KIND: "M" if meta.is_msg else "I",
        H_MESSAGE_ID: token(meta.message_id),
    }
    if meta.pid:
        headers[H_PAYLOAD] = str(meta.pid)
    if meta.node:
        headers[H_NODE] = meta.node
    if msg_id is not None:
        headers[H_MSG_ID] = msg_id
    return headers


def decode_meta(recipient: str, headers: dict[str, str], sseq: int) -> ItemMeta:
    """The :class:`ItemMeta` of a stored message (raises KeyError/ValueError if bad)."""
    return ItemMeta(
        seq=int(headers[H_SEQ]),
        recipient=recipient,
        priority=int(headers[H_PRIORITY]),
        expires_at=float(headers[H_EXPIRES]),
        store=headers[H_STORE] == "1",
        size=int(headers[H_SIZE]),
        message_id=untoken(headers[H_MESSAGE_ID]),
        is_msg=headers[H_KIND] == "M",
        pid=int(headers.get(H_PAYLOAD, "0")),
        sseq=sseq,
        node=headers.get(H_NODE, ""),
    )


def dedup_msg_id(record: DedupRecord, replaces: float | None, part: str) -> str:
    """``Nats-Msg-Id`` of one message written under a duplicate-detection record.

    The same (originator, messageId, content fingerprint, replaced record) gives
    the same ID on every attempt, so a resend after a crash between the
    message's PubAck and the record's write is suppressed by JetStream's
    duplicate window. ``replaces`` (the expiry of an expired record being
    replaced) keeps a legitimate re-use of an old messageId from being taken
    for a duplicate. ``part`` names the recipient (or ``"/payload"``).
    """
    digest = hashlib.blake2b(digest_size=16)
    for field in (
        record.originator.encode(),
        record.message_id.encode(),
        record.fingerprint,
        repr(replaces).encode(),
        part.encode(),
    ):
        digest.update(len(field).to_bytes(4, "big"))
        digest.update(field)
    return digest.hexdigest()
