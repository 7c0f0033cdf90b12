"""NATS JetStream storage backend: state shared by every msgin5g node of a cluster.

What:
    :class:`NatsBackend` implements every protocol of :mod:`msgin5g.storage.base`
    on a NATS JetStream server (or cluster) reached with the official client
    ``nats-py``: KV buckets for keyed state (:mod:`msgin5g.storage.nats.kv`) and
    one stream for the stored messages (:mod:`msgin5g.storage.nats.queue`).
    Selected by ``--storage nats://host:4222`` (options:
    :func:`msgin5g.storage.nats.driver.parse_url`). Design, numbers and crash
    windows: ``docs/cluster.md``, section "Storage on JetStream".

Durability semantics:
    An awaited write returns after JetStream acknowledged every message it
    wrote (PubAck); with file storage (always used here) the data survives a
    kill -9 of msgin5g and of nats-server. Reads see every write whose await
    returned in this process; writes of other processes are seen by KV reads
    at once and by the queue index at the next start (cluster: later item).

Failures:
    Unreachable server at start: :class:`~msgin5g.errors.StorageUnavailable`
    within ``connect_timeout`` (5 s). While running, the client reconnects
    without end; operations meanwhile fail with ``StorageUnavailable`` after
    the JetStream request timeout. Every driver error goes through
    :func:`msgin5g.storage.nats.driver.map_driver_errors`.
"""

import asyncio
import logging
from collections import OrderedDict
from typing import Final

from nats.aio.client import Client
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from msgin5g.errors import StorageError
from msgin5g.storage.nats.driver import NatsOptions, connect, map_driver_errors
from msgin5g.storage.nats.handoff import HandOffQueue
from msgin5g.storage.nats.kv import BUCKETS
from msgin5g.storage.nats.pipe import Requests

__all__ = ["NatsBackend"]

_log = logging.getLogger(__name__)

_GENERATION_KEY: Final = "gen"


class NatsBackend(HandOffQueue):
    """Implementation of :class:`msgin5g.storage.base.Backend` on JetStream.

    Create with :func:`msgin5g.storage.open_backend` (``nats://`` URL) or from
    :class:`~msgin5g.storage.nats.driver.NatsOptions`; call :meth:`start`.
    """

    def __init__(self, options: NatsOptions) -> None:
        """Remember the options; nothing is opened before :meth:`start`."""
        self.options = options
        self._prefix = options.prefix
        self._stream = f"{options.prefix}_Q"
        self._client: Client | None = None
        self._generation = 0
        self._counter = 0
        self._entries = {}
        self._by_recipient = {}
        self._by_sseq = {}
        self._expiry = []
        self._payloads = {}
        self._inflight = set()
        self._early_removed = set()
        self._to_delete = []
        self._deleter = None
        self._kv = {}
        self._route_heap = []
        self._dedup_heap = []
        self._dedup_locks = {}
        self._adopted = OrderedDict()
        self.node = ""
        """The cluster node writing through this backend (set by NatsCluster)."""
        self.watch_from: dict[str, int] = {}
        """Last sequence of the registration and record buckets read at start:
        a cluster's watches resume after it (nothing written meanwhile is missed)."""

    def __repr__(self) -> str:
        return (
            f"NatsBackend(servers={self.options.redacted()!r}, "
            f"prefix={self._prefix!r}, items={len(self._entries)})"
        )

    @property
    def generation(self) -> int:
        """The generation this backend claimed at start (upper bits of its seqs)."""
        return self._generation

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Connect, create streams and buckets if needed, rebuild the index.

        Raises:
            StorageUnavailable: no server answered within ``connect_timeout``.
            StorageError: JetStream refused a stream or bucket (e.g. JetStream
                not enabled, or an existing one with other settings).
        """
        if self._client is not None:
            return
        client = await connect(self.options, lambda: self._client is None)
        self._client = client
        try:
            self._js = client.jetstream(timeout=10.0)
            self._js_client = client
            self._jsm = client.jsm()
            self._req = Requests(client, 10.0)
            await self._req.start()
            await self._create_schema()
            for suffix in ("reg", "rec"):
                info = await self._jsm.stream_info(f"KV_{self._prefix}_{suffix}")
                self.watch_from[suffix] = info.state.last_seq
            await self._claim_generation()
            await self._rebuild_index()
            await self._load_kv_indexes()
        except BaseException:
            await self._close_client()
            raise

    async def _create_schema(self) -> None:
        replicas = self.options.replicas
        with map_driver_errors():
            await self._jsm.add_stream(
                StreamConfig(
                    name=self._stream,
                    subjects=[f"{self._prefix}.>"],
                    storage=StorageType.FILE,
                    num_replicas=replicas,
                    allow_direct=True,
                    duplicate_window=self.options.dup_window,
                )
            )
            for suffix in BUCKETS:
                ttl = self.options.dedup_ttl if suffix == "dedup" else None
                self._kv[suffix] = await self._js.create_key_value(
                    KeyValueConfig(
                        bucket=f"{self._prefix}_{suffix}",
                        history=1,
                        replicas=replicas,
                        storage=StorageType.FILE,
                        ttl=ttl,
                        direct=True,
                    )
                )

    async def _claim_generation(self) -> None:
        """Take the next generation number (compare-and-set, retried on races)."""
        kv = self._kv["meta"]
        with map_driver_errors():
            for _ in range(100):
                try:
                    entry = await kv.get(_GENERATION_KEY)
                except KeyNotFoundError:
                    entry = None
                current = 0 if entry is None or not entry.value else int(entry.value)
                body = str(current + 1).encode()
                try:
                    if entry is None:
                        await kv.create(_GENERATION_KEY, body)
                    else:
                        await kv.update(_GENERATION_KEY, body, last=entry.revision)
                except KeyWrongLastSequenceError:
                    continue
                self._generation = current + 1
                self._counter = 0
                return
        raise StorageError("nats: could not claim a generation number (too many races)")

    async def aclose(self) -> None:
        """Finish background deletes and close the connection. Safe to call twice."""
        if self._client is None:
            return
        deleter = self._deleter
        if deleter is not None:
            done, _ = await asyncio.wait([deleter], timeout=10.0)
            if not done:
                deleter.cancel()
                _log.warning(
                    "nats: %d deletes not flushed at close", len(self._to_delete)
                )
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        requests = getattr(self, "_req", None)
        if requests is not None:
            requests.close()
        if client is not None and not client.is_closed:
            try:
                await client.close()
            except Exception as exc:  # closing must not fail the caller
                _log.warning("nats: close: %s", exc)
        self._entries.clear()
        self._by_recipient.clear()
        self._by_sseq.clear()
        self._expiry.clear()
        self._payloads.clear()
