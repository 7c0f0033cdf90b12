"""A msgin5g node's membership of a cluster on NATS (docs/cluster.md).

What:
    :class:`NatsCluster` implements :class:`msgin5g.service.ports.Cluster` on the
    connection of a :class:`~msgin5g.storage.nats.NatsBackend`:

    * **lease**: every ``lease / 4`` seconds the node writes its heartbeat (what
      ``msgin5g cluster status`` shows: UEs, stored items, addresses) to the KV
      bucket ``<prefix>_nodes``; a node whose last heartbeat is older than
      ``lease`` is dead, and the UEs registered at it are unreachable until
      they register elsewhere. A node that stops cleanly deletes its key.
    * **watches**: ordered consumers on the registration and record buckets and
      on ``<prefix>_nodes`` keep every node's in-memory tables in step with the
      writes of the others (started at the bucket position read before the
      tables were loaded, so nothing written in between is missed);
    * **hand-off**: core NATS request/reply on ``<prefix>_c.node.<node>``: the
      node that stored items for a UE registered at another node sends their
      index entries and bodies to that node, which indexes and delivers them and
      answers; only then does the sender forget them. No answer (the owner is
      dead or unreachable): the sender keeps them.

Core NATS subjects are outside the stream's ``<prefix>.>`` on purpose: a
hand-off is a message between two live processes, not something to store.
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError

from msgin5g.errors import StorageError
from msgin5g.model.queue import QueuedItem
from msgin5g.model.registry import UERegistration
from msgin5g.storage.nats.backend import NatsBackend
from msgin5g.storage.nats.codec import token, untoken
from msgin5g.storage.nats.driver import map_driver_errors

__all__ = ["NatsCluster", "NodeInfo", "cluster_status", "read_nodes"]

_log = logging.getLogger(__name__)

_HAND_OFF_TIMEOUT: Final = 3.0
_WATCH_HEARTBEAT: Final = 0.5
"""Seconds between the idle heartbeats of a watch: two missed ones (a restarted
nats-server lost the in-memory consumer) and nats-py re-creates it from the
last sequence seen, so a watch resumes about a second after the server is back."""
_REG_DECODER: Final = msgspec.msgpack.Decoder(UERegistration)


class ClusterListener(Protocol):
    """What the node tells the service (:class:`msgin5g.service.ports.ClusterListener`)."""

    def on_handed(self, items: Sequence[QueuedItem]) -> None: ...

    def on_registration(
        self, ue_service_id: str, stored: UERegistration | None
    ) -> None: ...

    def keeps(self, recipient: str, writer: str) -> bool: ...

    def on_record(self, kind: str, key: str) -> None: ...

    def on_node_down(self, node: str) -> None: ...

    def on_node_up(self, node: str) -> None: ...


class NodeInfo(msgspec.Struct, kw_only=True):
    """A node's heartbeat, as stored in ``<prefix>_nodes``."""

    node: str
    heartbeat: float
    """Epoch seconds of this heartbeat."""
    started: float
    lease: float
    host: str = ""
    pid: int = 0
    coap: str = ""
    http: str = ""
    registered_ues: int = 0
    stored_items: int = 0


_NODE_ENCODER: Final = msgspec.json.Encoder()
_NODE_DECODER: Final = msgspec.json.Decoder(NodeInfo)


class NatsCluster:
    """This node in a cluster of msgin5g processes sharing one JetStream."""

    def __init__(
        self,
        backend: NatsBackend,
        node_id: str,
        *,
        lease: float = 10.0,
        describe: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.node_id = node_id
        self._backend = backend
        self._lease = lease
        self._describe = describe
        self._prefix = backend.options.prefix
        self._started = time.time()
        self._seen: dict[str, float] = {}  # node -> monotonic time of its heartbeat
        self._down: set[str] = set()
        self._unanswered: set[str] = set()  # took no hand-off: retry at its next beat
        self._listener: ClusterListener | None = None
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.handed_out = 0
        self.handed_in = 0
        backend.node = node_id

    def __repr__(self) -> str:
        return f"NatsCluster(node_id={self.node_id!r}, prefix={self._prefix!r})"

    # ---------------------------------------------------------------- lifecycle

    async def start(self, listener: ClusterListener) -> None:
        """Heartbeat, prune the start-up index, watch, serve hand-offs."""
        self._listener = listener
        backend = self._backend
        with map_driver_errors():
            self._nodes_kv = await backend._js.create_key_value(
                KeyValueConfig(
                    bucket=f"{self._prefix}_nodes",
                    history=1,
                    replicas=backend.options.replicas,
                    storage=StorageType.FILE,
                    ttl=max(60.0, 6 * self._lease),
                )
            )
            await self._load_nodes()
            await self._beat()
            dropped = backend.prune(listener.keeps)
            if dropped:
                _log.info("cluster: %d stored items belong to other nodes", dropped)
            client = backend._js_client
            self._subs.append(
                await client.subscribe(
                    f"{self._prefix}_c.node.{token(self.node_id)}",
                    cb=self._on_hand_off,
                )
            )
            await self._watch("reg", backend.watch_from.get("reg", 0), self._on_reg)
            await self._watch("rec", backend.watch_from.get("rec", 0), self._on_rec)
            await self._watch_nodes()
        self._heartbeat_task = asyncio.get_running_loop().create_task(
            self._heartbeats()
        )
        _log.info("cluster: node %s joined (lease %.0f s)", self.node_id, self._lease)

    async def aclose(self) -> None:
        """Stop watching and serving; withdraw this node's lease."""
        task, self._heartbeat_task = self._heartbeat_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        for pending in list(self._tasks):
            pending.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._nodes_kv.delete(token(self.node_id))
        self._listener = None

    def stats(self) -> dict[str, int]:
        """Items handed to and taken from other nodes, and the nodes alive now."""
        others = (node for node in self._seen if node != self.node_id)
        alive = 1 + sum(1 for node in others if self.is_alive(node))
        return {
            "handed_out": self.handed_out,
            "handed_in": self.handed_in,
            "nodes_alive": alive,
        }

    # ---------------------------------------------------------------- lease

    def is_alive(self, node: str) -> bool:
        """Whether ``node`` renewed its lease within ``lease`` seconds."""
        if node == self.node_id or not node:
            return True
        seen = self._seen.get(node)
        return seen is not None and time.monotonic() - seen < self._lease

    async def _load_nodes(self) -> None:
        for info in await read_nodes(self._backend):
            age = time.time() - info.heartbeat
            if info.node != self.node_id and age < self._lease:
                self._seen[info.node] = time.monotonic() - max(0.0, age)

    def _info(self) -> NodeInfo:
        extra = self._describe() if self._describe is not None else {}
        return NodeInfo(
            node=self.node_id,
            heartbeat=time.time(),
            started=self._started,
            lease=self._lease,
            host=socket.gethostname(),
            pid=os.getpid(),
            **extra,
        )

    async def _beat(self) -> None:
        await self._nodes_kv.put(
            token(self.node_id), _NODE_ENCODER.encode(self._info())
        )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 4)
            try:
                with map_driver_errors():
                    await self._beat()
            except StorageError as exc:
                _log.warning("cluster: heartbeat not written: %s", exc)
            self._check_leases()

    def _check_leases(self) -> None:
        for node in list(self._seen):
            if node not in self._down and not self.is_alive(node):
                self._down.add(node)
                if self._listener is not None:
                    self._listener.on_node_down(node)

    async def _watch_nodes(self) -> None:
        async def on_node(msg: NatsMsg) -> None:
            node = untoken(msg.subject.rsplit(".", 1)[-1])
            if node == self.node_id:
                return
            if (msg.headers or {}).get("KV-Operation"):
                self._seen.pop(node, None)
                if node not in self._down:
                    self._down.add(node)
                    if self._listener is not None:
                        self._listener.on_node_down(node)
                return
            self._seen[node] = time.monotonic()
            # back from the dead, or restarted within its lease after a hand-off
            # to it failed (a worker of `serve --workers` restarts in ~2 s)
            if node in self._down or node in self._unanswered:
                if node in self._down:
                    _log.info("cluster: node %s is back", node)
                self._down.discard(node)
                self._unanswered.discard(node)
                if self._listener is not None:
                    self._listener.on_node_up(node)

        await self._watch("nodes", 0, on_node)

    # ---------------------------------------------------------------- watches

    async def _watch(
        self, suffix: str, after: int, handler: Callable[[NatsMsg], Any]
    ) -> None:
        """Run ``handler`` on the changes of bucket ``suffix`` after revision
        ``after`` (0: only changes from now on)."""
        bucket = f"{self._prefix}_{suffix}"
        config = (
            ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
            )
            if after
            else ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        )
        self._subs.append(
            await self._backend._js.subscribe(
                f"$KV.{bucket}.>",
                stream=f"KV_{bucket}",
                ordered_consumer=True,
                idle_heartbeat=_WATCH_HEARTBEAT,
                cb=handler,
                config=config,
            )
        )

    async def _on_reg(self, msg: NatsMsg) -> None:
        listener = self._listener
        if listener is None:
            return
        ue = untoken(msg.subject.rsplit(".", 1)[-1])
        stored: UERegistration | None
        if (msg.headers or {}).get("KV-Operation"):
            stored = await self._read_registration(ue)  # deleted, or back since?
        else:
            try:
                stored = _REG_DECODER.decode(msg.data)
            except msgspec.DecodeError:
                _log.warning("cluster: undecodable registration of %r", ue)
                return
        listener.on_registration(ue, stored)

    async def _read_registration(self, ue: str) -> UERegistration | None:
        try:
            with map_driver_errors():
                entry = await self._backend._kv["reg"].get(token(ue))
        except StorageError as exc:
            if isinstance(exc.__cause__, KeyNotFoundError):
                return None
            _log.warning("cluster: registration of %r not re-read: %s", ue, exc)
            return None
        return None if not entry.value else _REG_DECODER.decode(entry.value)

    async def _on_rec(self, msg: NatsMsg) -> None:
        listener = self._listener
        if listener is None:
            return
        kind_token, key_token = msg.subject.split(".")[-2:]
        try:
            listener.on_record(untoken(kind_token), untoken(key_token))
        except ValueError:
            _log.warning("cluster: undecodable record key %r", msg.subject)

    # ---------------------------------------------------------------- hand-off

    async def hand_off(self, node: str, items: Sequence[QueuedItem]) -> bool:
        """Send ``items`` to ``node`` and forget them here once it answers."""
        body, seqs = self._backend.export_items(items)
        if not seqs:
            return True
        try:
            reply = await self._backend._js_client.request(
                f"{self._prefix}_c.node.{token(node)}", body, timeout=_HAND_OFF_TIMEOUT
            )
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as exc:
            _log.info(
                "cluster: node %s took no hand-off (%s)", node, type(exc).__name__
            )
            self._unanswered.add(node)
            return False
        except nats.errors.Error as exc:
            _log.warning("cluster: hand-off to %s failed: %s", node, exc)
            self._unanswered.add(node)
            return False
        if reply.data != b"ok":
            _log.warning(
                "cluster: node %s refused a hand-off: %r", node, reply.data[:80]
            )
            return False
        self._backend.forget(seqs)
        self.handed_out += len(seqs)
        return True

    async def _on_hand_off(self, msg: NatsMsg) -> None:
        listener = self._listener
        try:
            items = self._backend.import_items(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            _log.warning("cluster: undecodable hand-off: %s", exc)
            await msg.respond(b"bad hand-off")
            return
        self.handed_in += len(items)
        if listener is not None and items:
            listener.on_handed(items)
        await msg.respond(b"ok")

    async def adopt(self, recipient: str) -> None:
        """Index what other nodes stored for ``recipient`` (it registered here)."""
        added = await self._backend.adopt(recipient)
        if added:
            _log.debug("cluster: adopted %d stored items of %s", added, recipient)


async def read_nodes(backend: NatsBackend) -> list[NodeInfo]:
    """Every node's last heartbeat (``msgin5g cluster status``), by node ID."""
    with map_driver_errors():
        try:
            await backend._jsm.stream_info(f"KV_{backend.options.prefix}_nodes")
        except nats.js.errors.NotFoundError:  # no node ever joined
            return []
        found = await backend._scan("nodes")
    nodes = []
    for _, value in found:
        try:
            nodes.append(_NODE_DECODER.decode(value))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return sorted(nodes, key=lambda info: info.node)


async def cluster_status(url: str) -> tuple[list[NodeInfo], int]:
    """The nodes' heartbeats and the items in the stream, read over one connection.

    Raises:
        StorageUnavailable: no NATS server answered at ``url``.
    """
    from msgin5g.storage.nats.driver import connect, parse_url

    options = parse_url(url)
    client = await connect(options, lambda: True)
    try:
        jsm = client.jsm()
        js = client.jetstream()
        bucket = f"{options.prefix}_nodes"
        nodes: list[NodeInfo] = []
        with map_driver_errors():
            try:
                kv = await js.key_value(bucket)
            except nats.js.errors.BucketNotFoundError:
                kv = None
            if kv is not None:
                for key in await _keys(kv):
                    try:
                        entry = await kv.get(key)
                    except KeyNotFoundError:
                        continue
                    try:
                        nodes.append(_NODE_DECODER.decode(entry.value or b""))
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        continue
            try:
                info = await jsm.stream_info(f"{options.prefix}_Q")
                stored = info.state.messages
            except nats.js.errors.NotFoundError:
                stored = 0
    finally:
        await client.close()
    return sorted(nodes, key=lambda n: n.node), stored


async def _keys(kv: Any) -> list[str]:
    try:
        keys: list[str] = await kv.keys()
    except nats.js.errors.NoKeysError:
        return []
    return keys
