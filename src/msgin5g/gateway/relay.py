"""Relay of messages and reports through a Gateway UE (digest §3.17, TS 23.554 §8.11).

Both directions are durable queues in the gateway's storage (the server's
:class:`~msgin5g.storage.base.MessageQueue`, one "recipient" per direction):

* **uplink** (constrained UE → server), recipient ``#upstream``: an Annex A.3
  ``MSG``/``IMDN`` is rebuilt as an MSGin5G-1 ``MSG``/``IMDN`` (originator = the
  constrained UE's UE Service ID, or the gateway's own for an application
  registered without one), stored, then forwarded by one pump in (priority,
  arrival) order. While the server is unreachable the items stay stored and the
  pump retries every ``retry_interval``. The constrained UE's CON gets a
  piggybacked 2.04 carrying the server's ``MSGRESP`` when it arrives within
  ``relay_wait``, else a 2.04 without payload (the item is stored at the
  gateway; digest §3.17.4 step 3).
* **downlink** (server → constrained UE), recipient = the UE Service ID (or
  ``<gateway>/<applicationId>`` for applications that have none): the server's
  CON gets its 2.04 only after the item is stored; one delivery loop per target
  POSTs items (CON, with ``msgin5gServiceId``) in order. A UE that does not
  answer is asleep: its items wait until it sends anything or the next retry.

``#`` and ``/`` cannot occur in a UE Service ID, so the queue keys never collide
with a real UE. PROJECT CHOICE: the gateway always sends CON towards a
constrained UE (A.3 suggests NON without a report request) because store and
forward needs to know that the item arrived.
"""

import asyncio
import logging

import msgspec

from msgin5g.client.wire import post_options
from msgin5g.coap.message import CoapMessage
from msgin5g.coap.numbers import Code, Type
from msgin5g.codec.ue_payload import encode
from msgin5g.errors import DecodeError, RemoteError, TransportError
from msgin5g.gateway.context import GatewayContext
from msgin5g.model.messages import Imdn, Msg, MsgResp
from msgin5g.model.queue import QueuedItem
from msgin5g.runtime import wait_for
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.coap import MSGIN5G_PATH
from msgin5g.spec.delivery import (
    DeliveryStatus,
    PriorityRank,
    ReportDeliveryStatus,
)

__all__ = ["UPSTREAM", "Relay"]

log = logging.getLogger(__name__)

UPSTREAM = "#upstream"
"""Queue key of items waiting for the server."""

_OPTIONS = post_options(MSGIN5G_PATH)
_SENT_MEMORY = 100_000
"""Message IDs remembered to route IMDNs back to applications without a UE ID."""


class Relay:
    """Uplink pump and downlink delivery of one gateway.

    Args:
        ctx: the gateway's opened parts.
    """

    def __init__(self, ctx: GatewayContext) -> None:
        self._config = ctx.config
        self._queue = ctx.queue
        self._state = ctx.state
        self._upstream = ctx.upstream
        self._local = ctx.local
        self._tasks = ctx.tasks
        self._clock = ctx.clock
        self._wake = asyncio.Event()
        self._waiters: dict[int, asyncio.Future[MsgResp | None]] = {}
        self._delivering: set[str] = set()
        self._sent_by_app: dict[str, str] = {}
        self.server_reachable = True
        self.forwarded = 0
        self.delivered = 0

    # uplink -----------------------------------------------------------------------

    async def uplink(self, item: Msg | Imdn, app_key: str | None) -> MsgResp | None:
        """Store an item for the server; the ``MSGRESP`` if it comes in time.

        Args:
            item: the MSGin5G-1 message or report built for the constrained UE.
            app_key: the application binding sending as the gateway (its
                IMDNs come back to the gateway's own UE Service ID).
        """
        priority = PriorityRank.MIDDLE
        if isinstance(item, Msg) and item.priority_type is not None:
            priority = PriorityRank[item.priority_type]
        stored = QueuedItem(
            recipient=UPSTREAM,
            item=item,
            priority=int(priority),
            expires_at=self._clock.now() + self._config.message_ttl,
            store=True,
        )
        seq = await self._queue.enqueue(stored)
        if app_key is not None and isinstance(item, Msg):
            if len(self._sent_by_app) >= _SENT_MEMORY:
                self._sent_by_app.clear()
            self._sent_by_app[item.message_id] = app_key
        future: asyncio.Future[MsgResp | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiters[seq] = future
        self._wake.set()
        try:
            return await wait_for(
                self._clock, asyncio.shield(future), self._config.relay_wait
            )
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(seq, None)

    async def run_uplink(self) -> None:
        """Forward stored uplink items to the server, forever."""
        while True:
            items = await self._queue.pending_for(UPSTREAM, limit=100)
            if not items:
                self._wake.clear()
                await self._wake.wait()
                continue
            for stored in items:
                if not await self._forward(stored):
                    self.server_reachable = False
                    await self._clock.sleep(self._config.retry_interval)
                    break
                self.server_reachable = True

    async def _forward(self, stored: QueuedItem) -> bool:
        """One item to the server; False when the server is unreachable."""
        item = stored.item
        response: MsgResp | None = None
        try:
            if isinstance(item, Msg):
                response = await self._upstream.relay_msg(item)
            else:
                await self._upstream.relay(item)
        except RemoteError as exc:
            if not exc.is_client_error:
                log.info("server answered %s; keeping the item", exc.status)
                return False
            log.warning("server refused relayed %s: %s", item.message_id, exc)
        except (TransportError, DecodeError) as exc:
            log.info("server unreachable (%s); %s stays stored", exc, item.message_id)
            return False
        if stored.expires_at < self._clock.now():
            log.info("relayed %s after its gateway expiry", item.message_id)
        await self._queue.remove(stored.seq)
        self.forwarded += 1
        waiter = self._waiters.get(stored.seq)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        elif (
            isinstance(item, Msg)
            and response is not None
            and item.delivery_status_required
            and response.delivery_status
            in (DeliveryStatus.DELY_FAILED, DeliveryStatus.DELY_REJECTED)
        ):
            await self._report_failure(item, response.failure_cause)
        return True

    async def _report_failure(self, msg: Msg, cause: str | None) -> None:
        """The server refused a message the UE no longer waits for: IMDN to it."""
        report = Imdn(
            message_id=msg.message_id,
            delivery_status=ReportDeliveryStatus.REPT_DELY_FAILED,
            originating_ue_service_id=msg.recipient_ue_service_id
            or self._upstream.ue_service_id,
            recipient_ue_service_id=msg.originating_ue_service_id,
            failure_cause=cause or FailureCause.RECIPIENT_UNKNOWN.value,
        )
        await self.claim(report)

    # downlink ---------------------------------------------------------------------

    def target_of(self, item: Msg | Imdn) -> str | None:
        """Queue key of the constrained UE/application an item is for, or None."""
        recipient = item.recipient_ue_service_id
        if recipient is None:
            return None
        own = self._upstream.ue_service_id
        state = self._state
        if recipient == own:
            app = (
                item.application_id
                if isinstance(item, Msg)
                else self._sent_by_app.get(item.message_id, "").partition("/")[2]
            )
            key = f"{own}/{app}"
            return key if app and key in state.apps else None
        if isinstance(item, Msg) and f"{recipient}/{item.application_id}" in state.apps:
            return f"{recipient}/{item.application_id}"
        if recipient in state.peers:
            return recipient
        return None

    async def claim(self, item: Msg | Imdn) -> bool | None:
        """Store server downlink for a constrained target (the Upstream hook)."""
        target = self.target_of(item)
        if target is None:
            return None
        stored = QueuedItem(
            recipient=target,
            item=item,
            priority=int(PriorityRank.MIDDLE),
            expires_at=self._clock.now() + self._config.message_ttl,
            store=True,
        )
        try:
            await self._queue.enqueue(stored)
        except Exception:
            log.exception("cannot store downlink for %s", target)
            return False
        self.kick(target)
        return True

    def kick(self, target: str) -> None:
        """Start delivering to ``target`` unless a delivery loop already runs."""
        if target in self._delivering:
            return
        self._delivering.add(target)
        self._tasks.spawn(self._deliver(target), name=f"deliver to {target}")

    async def _deliver(self, target: str) -> None:
        try:
            while True:
                items = await self._queue.pending_for(target, limit=100)
                if not items:
                    return
                for stored in items:
                    if not await self._deliver_one(target, stored):
                        return
        finally:
            self._delivering.discard(target)

    def _address(self, target: str) -> tuple[str, int] | None:
        app = self._state.apps.get(target)
        if app is not None:
            return (app.host, app.port)
        peer = self._state.peers.get(target)
        return None if peer is None else (peer.host, peer.port)

    async def _deliver_one(self, target: str, stored: QueuedItem) -> bool:
        """POST one item; False when the target is asleep (stop for now)."""
        if stored.expires_at < self._clock.now():
            log.info("dropping expired %s for %s", stored.item.message_id, target)
            await self._queue.remove(stored.seq)
            return True
        address = self._address(target)
        if address is None:
            log.debug("%s is not registered here; keeping its items", target)
            return False
        item = msgspec.structs.replace(
            stored.item, msgin5g_service_id=self._config.service_id
        )
        request = CoapMessage(
            Type.CON, Code.POST, options=list(_OPTIONS), payload=encode(item)
        )
        try:
            response = await self._local().request(request, address)
        except (TransportError, ValueError) as exc:
            log.info("%s is not answering (%s); keeping its items", target, exc)
            return False
        if response.code >= 160:
            return False
        if response.code >= 128:
            log.warning("%s refused %s", target, stored.item.message_id)
        await self._queue.remove(stored.seq)
        self.delivered += 1
        return True

    async def run_retries(self) -> None:
        """Retry sleeping UEs every ``retry_interval``, forever."""
        while True:
            await self._clock.sleep(self._config.retry_interval)
            for target in await self._queue.recipients_with_pending():
                if target != UPSTREAM:
                    self.kick(target)
            self._wake.set()
