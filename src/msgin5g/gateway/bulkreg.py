"""Bulk registration and de-registration of constrained UEs (digest §3.4.3, §3.5).

:class:`BulkRegistration` runs the gateway steps G2-G8 between the constrained
side and the server:

* G3: a ``REG``/``DEREG`` is stored durably with its CoAP Message ID and Token
  and acknowledged with an empty ACK (the engine's ``accept_empty(final=True)``:
  no separate response follows), then batched by
  :class:`~msgin5g.gateway.bulk.Batcher`; G2: URGENT requests are forwarded
  individually at once;
* G4/G5: batches go as ``BULKREG``/``BULKDEREG`` when they are due;
* G7: the ``BULKREGRESP`` is split into one CON POST per constrained UE carrying
  ``msgin5gServiceId``, ``REGRESP``, ``ueServiceId``, ``registrationResult`` and
  ``failureCause`` only on failure, **with the Message ID and Token of that UE's
  cached request** (TS 24.538-R18 §6.3.4.3.3); likewise ``DEREGRESP``
  (§6.3.4.3.6). The cache entry is deleted when the UE acknowledged its answer
  or the retransmissions gave up (Appendix X1.2); G8: successful UEs are
  remembered for the relay.

Failure handling (PROJECT CHOICES, docs/gateway.md): a bulk request the server
does not answer stays cached and is retried every ``retry_interval`` (the digest's
G6 "split into individual REGs" cannot help while the server is unreachable);
a 4.13 answer halves the batch and the size cap; any other 4.xx answers every
entry ``FAILURE`` with the error body's cause; if every entry comes back
``NOT_AUTHORIZED`` the gateway lost its own registration: it registers again and
retries once. Constrained UEs are not authenticated locally (G1): the server
checks each entry's own credential, so a bad one gets ``FAILURE`` /
``AUTHENTICATION_FAILED`` in its ``REGRESP``. A credential-less ``DEREG`` for a
UE registered here from another address is refused at once (``NOT_AUTHORIZED``).

All time goes through the gateway's clock: stored stamps are epoch seconds
(``clock.now()``), so deadlines survive a restart.
"""

import asyncio
import logging
from collections.abc import Callable

from msgin5g.client.wire import json_response, post_options
from msgin5g.coap.endpoint import Request
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code, Type
from msgin5g.codec.ue_payload import encode
from msgin5g.errors import DecodeError, RemoteError, TransportError
from msgin5g.gateway.bulk import Batch, Batcher, strip
from msgin5g.gateway.cache import ConstrainedPeer, PendingRequest
from msgin5g.gateway.context import GatewayContext
from msgin5g.model.messages import (
    BulkDereg,
    BulkDeregResp,
    BulkReg,
    BulkRegResp,
    Dereg,
    DeregResp,
    Reg,
    RegResp,
)
from msgin5g.runtime import wait_for
from msgin5g.spec.causes import FailureCause, Result
from msgin5g.spec.coap import MSGIN5G_PATH

__all__ = ["BulkRegistration"]

log = logging.getLogger(__name__)

_ANSWER_OPTIONS = post_options(MSGIN5G_PATH)


class BulkRegistration:
    """Cached ``REG``/``DEREG`` requests of constrained UEs and their bulk requests.

    Args:
        ctx: the gateway's opened parts.
        kick: starts delivery of stored items to a UE (the relay).
        lost_registration: called when the server no longer knows the gateway.
    """

    def __init__(
        self,
        ctx: GatewayContext,
        kick: Callable[[str], None],
        lost_registration: Callable[[], None],
    ) -> None:
        self._config = ctx.config
        self._state = ctx.state
        self._upstream = ctx.upstream
        self._local = ctx.local
        self._tasks = ctx.tasks
        self._clock = ctx.clock
        self._kick = kick
        self._lost_registration = lost_registration
        self.batcher = Batcher(ctx.config.batch_size, ctx.config.max_bulk_octets)
        self.batcher.overhead = self._bulk_overhead()
        self._wake = asyncio.Event()
        self.bulk_requests = 0
        self.individual_requests = 0
        self.answers_sent = 0

    def wake(self) -> None:
        """Look at the batches now (the gateway just registered)."""
        self._wake.set()

    def resume(self) -> None:
        """Schedule every cached request loaded from storage (start-up)."""
        for pending in list(self._state.pending.values()):
            self._schedule(pending)

    # G3: caching --------------------------------------------------------------------

    async def cache(
        self, request: Request, item: Reg | Dereg, host: str, port: int
    ) -> CoapMessage:
        """G3: store with Message ID and Token, empty ACK, batch (or G2 if urgent).

        A ``DEREG`` without a credential for a UE registered here from another
        address is refused at once (``NOT_AUTHORIZED``): only the device itself,
        or a holder of its credential, may end its registration.
        """
        message = request.message
        if isinstance(item, Dereg) and item.ue_credential_info is None:
            peer = self._state.peers.get(item.ue_service_id)
            if peer is not None and (peer.host, peer.port) != (host, port):
                log.warning(
                    "DEREG of %s from %s:%d refused: registered from elsewhere",
                    item.ue_service_id,
                    host,
                    port,
                )
                refused = DeregResp(
                    ue_service_id=item.ue_service_id,
                    deregistration_result=Result.FAILURE,
                    failure_cause=FailureCause.NOT_AUTHORIZED.value,
                    msgin5g_service_id=self._config.service_id,
                )
                return json_response(message, Code.CHANGED, refused)
        now = self._clock.now()
        config = self._config
        wait = item.wait_time if item.wait_time is not None else config.default_wait
        delay = max(0.0, min(float(wait), config.max_wait) - config.guard)
        pending = PendingRequest(
            kind="REG" if isinstance(item, Reg) else "DEREG",
            ue_service_id=item.ue_service_id,
            host=host,
            port=port,
            mid=message.mid,
            token=message.token,
            request=item,
            received_at=now,
            send_by=now + delay,
            urgent=item.registration_urgent_degree == "URGENT",
        )
        await self._state.put_pending(pending)
        request.endpoint.accept_empty(request, final=True)
        self.batcher.discard(pending.kind, pending.key)
        self._schedule(pending)
        self._kick(pending.ue_service_id)
        return make_response(message, Code.CHANGED)  # discarded: final empty ACK

    def _schedule(self, pending: PendingRequest) -> None:
        if pending.urgent:
            self._tasks.spawn(self._send_individual(pending), name="urgent request")
            return
        size = len(encode(strip(pending.request)))
        self.batcher.add(pending.kind, pending.key, size, pending.send_by)
        self._wake.set()

    # G4/G5: bulk requests -----------------------------------------------------------

    def _bulk_overhead(self) -> int:
        empty = BulkDereg(
            ue_service_id=self._config.ue_service_id,
            ue_credential_info=self._upstream.credential_info,
            num_of_dereg_requests=10_000,
            dereg_requests=[],
        )
        return len(encode(empty)) + 16

    async def run(self) -> None:
        """Send batches when they are due (G4); sleep until the next deadline."""
        while True:
            self._wake.clear()
            now = self._clock.now()
            registered = self._upstream.registered
            if registered:
                for batch in self.batcher.due(now):
                    self._tasks.spawn(self._send_batch(batch), name="bulk request")
            deadline = self.batcher.next_deadline()
            if not registered and deadline is not None:
                deadline = max(deadline, now + self._config.retry_interval)
            timeout = None if deadline is None else max(0.01, deadline - now)
            try:
                await wait_for(self._clock, self._wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _send_batch(self, batch: Batch) -> None:
        state = self._state
        entries = [state.pending[k] for k in batch.keys if k in state.pending]
        if entries:
            await self._send_entries(batch.kind, entries)

    def _bulk_request(
        self, kind: str, entries: list[PendingRequest]
    ) -> BulkReg | BulkDereg:
        credential = self._upstream.credential_info
        gateway = self._config.ue_service_id
        if kind == "REG":
            regs = [e.request for e in entries if isinstance(e.request, Reg)]
            return BulkReg(
                ue_service_id=gateway,
                ue_credential_info=credential,
                num_of_reg_requests=len(regs),
                reg_requests=[strip(r) for r in regs],
            )
        deregs = [e.request for e in entries if isinstance(e.request, Dereg)]
        return BulkDereg(
            ue_service_id=gateway,
            ue_credential_info=credential,
            num_of_dereg_requests=len(deregs),
            dereg_requests=[strip(d) for d in deregs],
        )

    async def _send_entries(
        self, kind: str, entries: list[PendingRequest], *, retried: bool = False
    ) -> None:
        bulk = self._bulk_request(kind, entries)
        self.bulk_requests += 1
        outcomes: dict[str, tuple[str, str | None]]
        try:
            if isinstance(bulk, BulkReg):
                answer = await self._upstream.client.request(bulk, BulkRegResp)
                outcomes = {
                    r.ue_service_id: (r.registration_result, r.failure_cause)
                    for r in answer.reg_responses
                }
            else:
                dereg_answer = await self._upstream.client.request(bulk, BulkDeregResp)
                outcomes = {
                    r.ue_service_id: (r.deregistration_result, r.failure_cause)
                    for r in dereg_answer.dereg_responses
                }
        except RemoteError as exc:
            await self._bulk_refused(kind, entries, exc, len(encode(bulk)))
            return
        except (TransportError, DecodeError) as exc:
            log.info("bulk %s of %d not answered: %s", kind, len(entries), exc)
            self._requeue(entries)
            return
        causes = {cause for _, cause in outcomes.values()}
        if not retried and causes == {FailureCause.NOT_AUTHORIZED.value}:
            log.warning("the server no longer accepts this gateway; registering again")
            self._requeue(entries, delay=0.0)
            self._lost_registration()
            return
        missing = (Result.FAILURE.value, FailureCause.BULK_INCOMPLETE.value)
        await asyncio.gather(
            *(self._finish(e, *outcomes.get(e.ue_service_id, missing)) for e in entries)
        )

    async def _bulk_refused(
        self, kind: str, entries: list[PendingRequest], exc: RemoteError, size: int
    ) -> None:
        if exc.code == Code.REQUEST_ENTITY_TOO_LARGE and len(entries) > 1:
            cap = max(256, min(self.batcher.max_octets, size) // 2)
            log.warning("server refused %d octets; bulk cap now %d", size, cap)
            self.batcher.max_octets = cap
            half = len(entries) // 2
            await self._send_entries(kind, entries[:half])
            await self._send_entries(kind, entries[half:])
            return
        if exc.is_client_error:
            cause = exc.cause or FailureCause.INVALID_MESSAGE.value
            log.warning("server refused a bulk %s: %s", kind, exc)
            await asyncio.gather(
                *(self._finish(e, Result.FAILURE.value, cause) for e in entries)
            )
            return
        self._requeue(entries)

    def _requeue(
        self, entries: list[PendingRequest], delay: float | None = None
    ) -> None:
        """Keep entries cached and try again later (server away or busy)."""
        wait = self._config.retry_interval if delay is None else delay
        when = self._clock.now() + wait
        for entry in entries:
            if self._state.pending.get(entry.key) is entry:
                size = len(encode(strip(entry.request)))
                self.batcher.add(entry.kind, entry.key, size, when)
        self._wake.set()

    # G2: urgent requests -------------------------------------------------------------

    async def _send_individual(self, pending: PendingRequest) -> None:
        """G2: forward an URGENT request on its own; retry while the server is away."""
        state = self._state
        request = strip(pending.request)
        while state.pending.get(pending.key) is pending:
            self.individual_requests += 1
            try:
                if isinstance(request, Reg):
                    reg = await self._upstream.client.request(request, RegResp)
                    result = (reg.registration_result, reg.failure_cause)
                else:
                    dereg = await self._upstream.client.request(request, DeregResp)
                    result = (dereg.deregistration_result, dereg.failure_cause)
            except RemoteError as exc:
                if exc.is_client_error:
                    cause = exc.cause or FailureCause.INVALID_MESSAGE.value
                    await self._finish(pending, Result.FAILURE.value, cause)
                    return
            except DecodeError as exc:
                log.warning("urgent %s: unexpected answer: %s", pending.key, exc)
                failed = (Result.FAILURE.value, FailureCause.INTERNAL_ERROR.value)
                await self._finish(pending, *failed)
                return
            except TransportError as exc:
                log.info("urgent %s not answered: %s", pending.key, exc)
            else:
                await self._finish(pending, *result)
                return
            await self._clock.sleep(self._config.retry_interval)

    # G7/G8: answers -----------------------------------------------------------------

    async def _finish(
        self, pending: PendingRequest, result: str, cause: str | None
    ) -> None:
        """G7/G8: remember or forget the UE, POST its answer, clear the cache entry."""
        state = self._state
        ue = pending.ue_service_id
        ok = result == Result.SUCCESS
        body: RegResp | DeregResp
        if pending.kind == "REG":
            if ok:
                old = state.peers.get(ue)
                await state.put_peer(
                    ConstrainedPeer(
                        ue_service_id=ue,
                        host=pending.host,
                        port=pending.port,
                        since=self._clock.now(),
                        layer2_id=old.layer2_id if old else None,
                        packet_size=old.packet_size if old else None,
                    )
                )
            body = RegResp(
                ue_service_id=ue,
                registration_result=result,
                failure_cause=None if ok else cause,
                msgin5g_service_id=self._config.service_id,
            )
        else:
            if ok:
                # stored items stay until they expire or the UE registers again
                await state.drop_peer(ue)
            body = DeregResp(
                ue_service_id=ue,
                deregistration_result=result,
                failure_cause=None if ok else cause,
                msgin5g_service_id=self._config.service_id,
            )
        await self._answer(pending, encode(body))
        await state.drop_pending(pending)
        if ok and pending.kind == "REG":
            self._kick(ue)

    async def _answer(self, pending: PendingRequest, payload: bytes) -> None:
        """The matched request: CON POST with the cached Message ID and Token."""
        request = CoapMessage(
            Type.CON, Code.POST, options=list(_ANSWER_OPTIONS), payload=payload
        )
        try:
            await self._local().request(
                request,
                (pending.host, pending.port),
                mid=pending.mid,
                token=pending.token,
            )
            self.answers_sent += 1
        except (TransportError, ValueError) as exc:
            log.info("%s not acknowledged by %s: %s", pending.kind, pending.key, exc)
