"""The MSGin5G Gateway UE (TS 23.554 §8.2.7-§8.2.9, §8.11; TS 24.538-R18 §6.3.4).

One :class:`Gateway` is one process-worth of gateway: an MSGin5G Client towards
the server (:class:`~msgin5g.gateway.upstream.Upstream`, its own UDP socket) and
a CoAP endpoint on ``listen`` for constrained UEs (MSGin5G-6 for UEs with a
client, MSGin5G-5 Annex A.3 form for application clients). Resources there:

========================  =====  ==============================================
``/msgin5g``              POST   ``REG``, ``DEREG``, ``MSG``, ``IMDN``, ``APPREG``,
                                 ``APPDEREG``, ``GWREG``, ``GWDEREG``
``/msgin5g/config``       POST   ``CONFREQ`` (answered through bulk configuration)
``/msgin5g/pending``      GET    ``?ue=ID``: the cached request and its
                                 ``expectedRegistrationTime``
``/msgin5g/gateway``      GET    status (cached requests, queues); loopback only
========================  =====  ==============================================

Bulk registration (digest §3.4.3): a ``REG`` is stored durably with its CoAP
Message ID and Token, acknowledged with an empty ACK (the engine's
``accept_empty(final=True)``: no separate response follows), and batched by
:class:`~msgin5g.gateway.bulk.Batcher`. The ``BULKREGRESP`` is split into one CON
POST per constrained UE carrying ``msgin5gServiceId``, ``REGRESP``,
``ueServiceId``, ``registrationResult`` and ``failureCause`` only on failure,
**with the Message ID and Token of that UE's cached request**
(TS 24.538-R18 §6.3.4.3.3); likewise ``DEREGRESP`` (§6.3.4.3.6). URGENT requests
are forwarded individually at once (G2). The cache entry is deleted when the
UE acknowledged its ``REGRESP`` or the retransmissions gave up (Appendix X1.2).

Failure handling (PROJECT CHOICES, docs/gateway.md): a bulk request the server
does not answer stays cached and is retried every ``retry_interval`` (the digest's
G6 "split into individual REGs" cannot help while the server is unreachable);
a 4.13 answer halves the batch and the size cap; any other 4.xx answers every
entry ``FAILURE`` with the error body's cause; if every entry comes back
``NOT_AUTHORIZED`` the gateway lost its own registration: it registers again and
retries once. Constrained UEs are not authenticated locally (G1): the server
checks each entry's own credential, so a bad one gets ``FAILURE`` /
``AUTHENTICATION_FAILED`` in its ``REGRESP``.
"""

import asyncio
import logging
import socket
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import msgspec

from msgin5g.coap.endpoint import Endpoint, Request, Site
from msgin5g.coap.message import CoapMessage, encode_uint, make_response
from msgin5g.coap.numbers import Code, OptionNumber, TransmissionParameters, Type
from msgin5g.codec.ue_payload import (
    decode_config_request,
    decode_config_response,
    decode_error_body,
    decode_local_uplink,
    decode_response,
    encode,
    message_type_of,
)
from msgin5g.config import parse_hostport
from msgin5g.errors import (
    DecodeError,
    MSGin5GError,
    NotAuthorized,
    RemoteError,
    TransportError,
    UnsupportedMessageType,
)
from msgin5g.gateway.bulk import Batch, Batcher, strip
from msgin5g.gateway.cache import (
    AppBinding,
    ConstrainedPeer,
    GatewayState,
    PendingRequest,
)
from msgin5g.gateway.config import GatewayConfig
from msgin5g.gateway.relay import UPSTREAM, Relay
from msgin5g.gateway.upstream import Upstream
from msgin5g.model.messages import (
    AppDereg,
    AppDeregResp,
    AppReg,
    AppRegResp,
    BulkConfReq,
    BulkConfResp,
    BulkDereg,
    BulkDeregResp,
    BulkReg,
    BulkRegResp,
    ConfReq,
    ConfResp,
    Dereg,
    DeregResp,
    ErrorBody,
    GwDereg,
    GwDeregResp,
    GwReg,
    GwRegResp,
    Imdn,
    LocalImdn,
    LocalMsg,
    Msg,
    MsgResp,
    Reg,
    RegResp,
)
from msgin5g.spec.causes import FailureCause, Result
from msgin5g.spec.coap import CONTENT_FORMAT_JSON, MSGIN5G_PATH
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID, DeliveryStatus
from msgin5g.storage import open_backend
from msgin5g.storage.base import Backend

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

_CF = [(OptionNumber.CONTENT_FORMAT, encode_uint(CONTENT_FORMAT_JSON))]
_POST_OPTIONS = [(OptionNumber.URI_PATH, b"msgin5g"), *_CF]
_RECIPIENT = {
    "UE": "recipient_ue_service_id",
    "AS": "recipient_as_service_id",
    "GROUP": "recipient_group_service_id",
    "BC": "recipient_broadcast_area_id",
    "TOPIC": "messaging_topic",
}
_CONF_WINDOW = 0.05
"""Seconds configuration requests are collected before one bulk request."""


class Gateway:
    """An MSGin5G Gateway UE; ``async with Gateway(config)`` runs it.

    Args:
        config: the gateway's settings.
        backend: storage to use instead of opening ``config.storage``
            (tests); the gateway then does not close it.
    """

    def __init__(
        self, config: GatewayConfig, *, backend: Backend | None = None
    ) -> None:
        self.config = config
        self._own_backend = backend is None
        self._backend = backend
        self._state: GatewayState | None = None
        self._local: Endpoint | None = None
        self.upstream = Upstream(
            config.ue_service_id,
            config.secret,
            claim=self._claim,
            server=config.server,
            bind=parse_hostport(config.upstream_bind, default_port=0),
        )
        self._relay: Relay | None = None
        self._batcher = Batcher(config.batch_size, config.max_bulk_octets)
        self._bulk_wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._conf_waiting: list[tuple[ConfReq, asyncio.Future[ConfResp]]] = []
        self.bulk_requests = 0
        self.individual_requests = 0
        self.answers_sent = 0

    # lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, load the cache, bind both sockets, start the timers."""
        if self._backend is None:
            self._backend = open_backend(self.config.storage)
            await self._backend.start()
        self._state = GatewayState(self._backend)
        await self._state.load()
        await self.upstream.start()
        site = Site()
        site.add(MSGIN5G_PATH, self._render_local)
        site.add(("msgin5g", "config"), self._render_config)
        site.add(("msgin5g", "pending"), self._render_pending, methods=_GET)
        site.add(("msgin5g", "gateway"), self._render_status, methods=_GET)
        params = TransmissionParameters(
            ack_timeout=self.config.ack_timeout,
            max_retransmit=self.config.max_retransmit,
        )
        self._local = await Endpoint.create(
            parse_hostport(self.config.listen), site=site, params=params
        )
        self._relay = Relay(
            self.config, self._backend, self._state, self.upstream, self._endpoint
        )
        self._batcher.overhead = self._bulk_overhead()
        for pending in list(self._state.pending.values()):
            self._schedule(pending)
        log.info(
            "gateway %s: constrained UEs on coap://%s:%d, %d cached requests",
            self.config.ue_service_id,
            *self.local_address,
            len(self._state.pending),
        )
        self._spawn(self._register_self())
        self._spawn(self._bulk_loop())
        self._spawn(self._relay.run_uplink())
        self._spawn(self._relay.run_retries())

    async def aclose(self) -> None:
        """Stop; everything cached or queued stays in storage."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._relay is not None:
            await self._relay.aclose()
        if self._local is not None:
            await self._local.aclose()
            self._local = None
        await self.upstream.aclose()
        if self._own_backend and self._backend is not None:
            await self._backend.aclose()
            self._backend = None

    async def __aenter__(self) -> "Gateway":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def local_address(self) -> tuple[str, int]:
        """Where constrained UEs reach the gateway."""
        return self._endpoint().local_address

    @property
    def uri(self) -> str:
        """``coap://host:port/msgin5g`` of the constrained-side resource."""
        host, port = self.local_address
        if host in ("0.0.0.0", "::"):
            host = socket.getfqdn()
        return f"coap://{host}:{port}/msgin5g"

    def _endpoint(self) -> Endpoint:
        if self._local is None:
            raise RuntimeError("gateway not started")
        return self._local

    def _st(self) -> GatewayState:
        if self._state is None:
            raise RuntimeError("gateway not started")
        return self._state

    def _rel(self) -> Relay:
        if self._relay is None:
            raise RuntimeError("gateway not started")
        return self._relay

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self, item: Msg | Imdn) -> bool | None:
        return None if self._relay is None else await self._relay.claim(item)

    # own registration ------------------------------------------------------------

    async def _register_self(self) -> None:
        """Register the gateway itself, retrying while the server is away."""
        while True:
            try:
                await self.upstream.register()
                break
            except NotAuthorized as exc:
                log.error("the server refuses the gateway: %s", exc)
            except TransportError as exc:
                log.info("server not reachable yet (%s); retrying", exc)
            await asyncio.sleep(self.config.retry_interval)
        log.info("gateway %s registered with the server", self.config.ue_service_id)
        self._bulk_wake.set()
        await self._apply_own_configuration()

    async def _apply_own_configuration(self) -> None:
        """Fetch the gateway's own configuration document and apply it (§3.1.2)."""
        request = ConfReq(
            ue_service_id=self.config.ue_service_id,
            ue_credential_info=self.upstream.credential_info(),
        )
        try:
            response = await self.upstream.post_config(encode(request))
            document = decode_config_response(response.payload)
        except (TransportError, DecodeError) as exc:
            log.info("no configuration document from the server: %s", exc)
            return
        if isinstance(document, ConfResp) and document.segment_size:
            self.upstream.segment_size = document.segment_size

    # constrained side: /msgin5g ----------------------------------------------------

    async def _render_local(self, request: Request) -> CoapMessage:
        message = request.message
        if message.content_format != CONTENT_FORMAT_JSON:
            log.info("4.15 from %s", request.peer)
            return _error(
                message,
                Code.UNSUPPORTED_CONTENT_FORMAT,
                FailureCause.INVALID_MESSAGE,
                "Content-Format must be 50 (application/json)",
            )
        try:
            item = decode_local_uplink(message.payload)
        except UnsupportedMessageType as exc:
            log.info("4.00 from %s: %s", request.peer, exc)
            return _error(
                message,
                Code.BAD_REQUEST,
                FailureCause.UNSUPPORTED_MESSAGE_TYPE,
                str(exc),
            )
        except DecodeError as exc:
            log.info("4.00 from %s: %s", request.peer, exc)
            return _error(
                message, Code.BAD_REQUEST, FailureCause.INVALID_MESSAGE, str(exc)
            )
        host, port = str(request.peer[0]), int(request.peer[1])  # type: ignore[index]
        if isinstance(item, (Reg, Dereg)):
            return await self._cache_request(request, item, host, port)
        awake = self._st().peer_at(host, port)
        if awake is not None:
            self._rel().kick(awake)
        if isinstance(item, (LocalMsg, LocalImdn)):
            return await self._relay_uplink(message, item, host, port)
        if isinstance(item, AppReg):
            return await self._app_register(message, item, host, port)
        if isinstance(item, AppDereg):
            return await self._app_deregister(message, item)
        if isinstance(item, GwReg):
            return await self._gw_register(message, item, host, port)
        return await self._gw_deregister(message, item)

    async def _cache_request(
        self, request: Request, item: Reg | Dereg, host: str, port: int
    ) -> CoapMessage:
        """G3: store with Message ID and Token, empty ACK, batch (or G2 if urgent).

        A ``DEREG`` without a credential for a UE registered here from another
        address is refused at once (``NOT_AUTHORIZED``): only the device itself,
        or a holder of its credential, may end its registration.
        """
        message = request.message
        if isinstance(item, Dereg) and item.ue_credential_info is None:
            peer = self._st().peers.get(item.ue_service_id)
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
                    msgin5g_service_id=MSGIN5G_SERVICE_ID,
                )
                return _json(message, Code.CHANGED, refused)
        now = time.time()
        wait = (
            item.wait_time if item.wait_time is not None else self.config.default_wait
        )
        delay = max(0.0, min(float(wait), self.config.max_wait) - self.config.guard)
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
        await self._st().put_pending(pending)
        request.endpoint.accept_empty(request, final=True)
        self._batcher.discard(pending.kind, pending.key)
        self._schedule(pending)
        self._rel().kick(pending.ue_service_id)
        return make_response(message, Code.CHANGED)  # discarded: final empty ACK

    def _schedule(self, pending: PendingRequest) -> None:
        if pending.urgent:
            self._spawn(self._send_individual(pending))
            return
        size = len(encode(strip(pending.request)))
        self._batcher.add(pending.kind, pending.key, size, pending.send_by)
        self._bulk_wake.set()

    # bulk ------------------------------------------------------------------------------

    def _bulk_overhead(self) -> int:
        empty = BulkDereg(
            ue_service_id=self.config.ue_service_id,
            ue_credential_info=self.upstream.credential_info(),
            num_of_dereg_requests=10_000,
            dereg_requests=[],
        )
        return len(encode(empty)) + 16

    async def _bulk_loop(self) -> None:
        """Send batches when they are due (G4); sleep until the next deadline."""
        while True:
            self._bulk_wake.clear()
            now = time.time()
            if self.upstream.registered:
                for batch in self._batcher.due(now):
                    self._spawn(self._send_batch(batch))
            deadline = self._batcher.next_deadline()
            if not self.upstream.registered and deadline is not None:
                deadline = max(deadline, now + self.config.retry_interval)
            timeout = None if deadline is None else max(0.01, deadline - now)
            try:
                await asyncio.wait_for(self._bulk_wake.wait(), timeout)
            except TimeoutError:
                pass

    async def _send_batch(self, batch: Batch, *, retried: bool = False) -> None:
        state = self._st()
        entries = [state.pending[k] for k in batch.keys if k in state.pending]
        if entries:
            await self._send_entries(batch.kind, entries, retried=retried)

    def _bulk_body(self, kind: str, entries: list[PendingRequest]) -> bytes:
        credential = self.upstream.credential_info()
        gateway = self.config.ue_service_id
        if kind == "REG":
            regs = [strip(e.request) for e in entries]
            return encode(
                BulkReg(
                    ue_service_id=gateway,
                    ue_credential_info=credential,
                    num_of_reg_requests=len(regs),
                    reg_requests=regs,  # type: ignore[arg-type]
                )
            )
        deregs = [strip(e.request) for e in entries]
        return encode(
            BulkDereg(
                ue_service_id=gateway,
                ue_credential_info=credential,
                num_of_dereg_requests=len(deregs),
                dereg_requests=deregs,  # type: ignore[arg-type]
            )
        )

    async def _send_entries(
        self, kind: str, entries: list[PendingRequest], *, retried: bool = False
    ) -> None:
        body = self._bulk_body(kind, entries)
        self.bulk_requests += 1
        try:
            response = await self.upstream.post(body)
            bulk = decode_response(response.payload)
        except RemoteError as exc:
            await self._bulk_refused(kind, entries, exc, len(body))
            return
        except (TransportError, DecodeError) as exc:
            log.info("bulk %s of %d not answered: %s", kind, len(entries), exc)
            self._requeue(entries)
            return
        if isinstance(bulk, BulkRegResp):
            results = {r.ue_service_id: r for r in bulk.reg_responses}
            outcomes = {
                ue: (r.registration_result, r.failure_cause)
                for ue, r in results.items()
            }
        elif isinstance(bulk, BulkDeregResp):
            outcomes = {
                r.ue_service_id: (r.deregistration_result, r.failure_cause)
                for r in bulk.dereg_responses
            }
        else:
            log.warning("unexpected answer to a bulk %s: %s", kind, type(bulk))
            self._requeue(entries)
            return
        causes = {cause for _, cause in outcomes.values()}
        if not retried and causes == {FailureCause.NOT_AUTHORIZED.value}:
            log.warning("the server no longer accepts this gateway; registering again")
            self.upstream.registered = False
            self._requeue(entries, delay=0.0)
            self._spawn(self._register_self())
            return
        await asyncio.gather(
            *(
                self._finish(
                    e,
                    *outcomes.get(
                        e.ue_service_id,
                        (Result.FAILURE.value, FailureCause.BULK_INCOMPLETE.value),
                    ),
                )
                for e in entries
            )
        )

    async def _bulk_refused(
        self, kind: str, entries: list[PendingRequest], exc: RemoteError, size: int
    ) -> None:
        if exc.status == "4.13" and len(entries) > 1:
            cap = max(256, min(self._batcher.max_octets, size) // 2)
            log.warning("server refused %d octets; bulk cap now %d", size, cap)
            self._batcher.max_octets = cap
            half = len(entries) // 2
            await self._send_entries(kind, entries[:half])
            await self._send_entries(kind, entries[half:])
            return
        if exc.status.startswith("4."):
            body = decode_error_body(exc.payload)
            cause = body.failure_cause if body else FailureCause.INVALID_MESSAGE.value
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
        when = time.time() + (self.config.retry_interval if delay is None else delay)
        state = self._st()
        for entry in entries:
            if state.pending.get(entry.key) is entry:
                size = len(encode(strip(entry.request)))
                self._batcher.add(entry.kind, entry.key, size, when)
        self._bulk_wake.set()

    async def _send_individual(self, pending: PendingRequest) -> None:
        """G2: forward an URGENT request on its own; retry while the server is away."""
        state = self._st()
        while state.pending.get(pending.key) is pending:
            self.individual_requests += 1
            try:
                response = await self.upstream.post(encode(strip(pending.request)))
                answer = decode_response(response.payload)
            except RemoteError as exc:
                if exc.status.startswith("4."):
                    body = decode_error_body(exc.payload)
                    cause = body.failure_cause if body else "INVALID_MESSAGE"
                    await self._finish(pending, Result.FAILURE.value, cause)
                    return
            except (TransportError, DecodeError) as exc:
                log.info("urgent %s not answered: %s", pending.key, exc)
            else:
                if isinstance(answer, RegResp):
                    result = (answer.registration_result, answer.failure_cause)
                elif isinstance(answer, DeregResp):
                    result = (answer.deregistration_result, answer.failure_cause)
                else:
                    result = (Result.FAILURE.value, FailureCause.INTERNAL_ERROR.value)
                await self._finish(pending, *result)
                return
            await asyncio.sleep(self.config.retry_interval)

    async def _finish(
        self, pending: PendingRequest, result: str, cause: str | None
    ) -> None:
        """G7/G8: remember or forget the UE, POST its answer, clear the cache entry."""
        state = self._st()
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
                        since=time.time(),
                        layer2_id=old.layer2_id if old else None,
                        packet_size=old.packet_size if old else None,
                    )
                )
            body = RegResp(
                ue_service_id=ue,
                registration_result=result,
                failure_cause=None if ok else cause,
                msgin5g_service_id=MSGIN5G_SERVICE_ID,
            )
        else:
            if ok:
                # stored items stay until they expire or the UE registers again
                await state.drop_peer(ue)
            body = DeregResp(
                ue_service_id=ue,
                deregistration_result=result,
                failure_cause=None if ok else cause,
                msgin5g_service_id=MSGIN5G_SERVICE_ID,
            )
        await self._answer(pending, encode(body))
        await state.drop_pending(pending)
        if ok and pending.kind == "REG":
            self._rel().kick(ue)

    async def _answer(self, pending: PendingRequest, payload: bytes) -> None:
        """The matched request: CON POST with the cached Message ID and Token."""
        request = CoapMessage(
            Type.CON, Code.POST, options=list(_POST_OPTIONS), payload=payload
        )
        try:
            await self._endpoint().request(
                request,
                (pending.host, pending.port),
                mid=pending.mid,
                token=pending.token,
            )
            self.answers_sent += 1
        except (TransportError, ValueError) as exc:
            log.info("%s not acknowledged by %s: %s", pending.kind, pending.key, exc)

    # relay -------------------------------------------------------------------------

    def _originator(
        self, host: str, port: int, application_id: str | None
    ) -> tuple[str, str | None] | None:
        """(originator, app key when sending as the gateway) for a sender."""
        state = self._st()
        if application_id is not None:
            app = state.app_at(host, port, application_id)
            if app is not None:
                own = app.owner == self.config.ue_service_id
                return app.owner, app.key if own else None
        ue = state.peer_at(host, port)
        return None if ue is None else (ue, None)

    async def _relay_uplink(
        self, message: CoapMessage, item: LocalMsg | LocalImdn, host: str, port: int
    ) -> CoapMessage:
        found = self._originator(host, port, item.application_id)
        member = _RECIPIENT.get(item.target_type)
        if member is None:
            return _error(
                message,
                Code.BAD_REQUEST,
                FailureCause.INVALID_MESSAGE,
                f"targetType {item.target_type!r} is not one of {', '.join(_RECIPIENT)}",
            )
        if found is None:
            log.info("%s from unregistered %s:%d", item.message_id, host, port)
            rejected = MsgResp(
                message_id=item.message_id,
                delivery_status=DeliveryStatus.DELY_REJECTED,
                failure_cause=FailureCause.NOT_REGISTERED.value,
            )
            return _json(message, Code.CHANGED, rejected)
        originator, app_key = found
        upward: Msg | Imdn
        if isinstance(item, LocalMsg):
            upward = msgspec.structs.replace(
                Msg(
                    message_id=item.message_id,
                    originating_ue_service_id=originator,
                    delivery_status_required=item.delivery_status_required,
                    application_id=item.application_id,
                    payload=item.payload,
                    priority_type=item.priority_type,
                    store_and_forward_flag=True,
                ),
                **{member: item.target_address},
            )
        else:
            if member not in ("recipient_ue_service_id", "recipient_as_service_id"):
                return _error(
                    message,
                    Code.BAD_REQUEST,
                    FailureCause.INVALID_MESSAGE,
                    "a report goes to a UE or an AS",
                )
            upward = Imdn(
                message_id=item.message_id,
                delivery_status=item.delivery_status,
                originating_ue_service_id=originator,
                failure_cause=item.failure_cause,
                **{member: item.target_address},
            )
        response = await self._rel().uplink(upward, app_key)
        if response is None:
            return make_response(message, Code.CHANGED)
        return _json(message, Code.CHANGED, response)

    # application registration and gateway services ---------------------------------

    async def _app_register(
        self, message: CoapMessage, item: AppReg, host: str, port: int
    ) -> CoapMessage:
        """``APPREG`` (digest §3.6.1; TS 23.554 §8.11.2)."""
        state = self._st()
        owner = item.ue_service_id or self.config.ue_service_id
        if item.ue_service_id is not None:
            cause = await self._register_application_ue(item, host, port)
            if cause is not None:
                answer = AppRegResp(
                    registration_result=Result.FAILURE,
                    application_id=item.application_id,
                    failure_cause=cause,
                )
                return _json(message, Code.CHANGED, answer)
        binding = AppBinding(
            application_id=item.application_id,
            layer2_id=item.layer2_id,
            owner=owner,
            host=host,
            port=port,
        )
        created = binding.key not in state.apps
        await state.put_app(binding)
        answer = AppRegResp(
            registration_result=Result.SUCCESS, application_id=item.application_id
        )
        return _json(message, Code.CREATED if created else Code.CHANGED, answer)

    async def _register_application_ue(
        self, item: AppReg, host: str, port: int
    ) -> str | None:
        """Register the application's own UE Service ID with the server; the cause."""
        state = self._st()
        ue = item.ue_service_id
        assert ue is not None  # noqa: S101 - checked by the caller
        if item.ue_credential_info is None:
            peer = state.peers.get(ue)
            if peer is not None and (peer.host, peer.port) == (host, port):
                return None  # registered through this gateway already
            return FailureCause.NOT_REGISTERED.value
        reg = Reg(ue_service_id=ue, ue_credential_info=item.ue_credential_info)
        try:
            response = await self.upstream.post(encode(reg))
            answer = decode_response(response.payload)
        except (TransportError, DecodeError) as exc:
            log.info("APPREG %s: server not reachable: %s", ue, exc)
            return FailureCause.GATEWAY_UNAVAILABLE.value
        if not isinstance(answer, RegResp) or answer.registration_result != "SUCCESS":
            return getattr(answer, "failure_cause", None) or "AUTHENTICATION_FAILED"
        old = state.peers.get(ue)
        await state.put_peer(
            ConstrainedPeer(
                ue_service_id=ue,
                host=host,
                port=port,
                since=time.time(),
                layer2_id=item.layer2_id,
                packet_size=old.packet_size if old else None,
            )
        )
        return None

    async def _app_deregister(
        self, message: CoapMessage, item: AppDereg
    ) -> CoapMessage:
        owner = item.ue_service_id or self.config.ue_service_id
        await self._st().drop_app(f"{owner}/{item.application_id}")
        answer = AppDeregResp(
            deregistration_result=Result.SUCCESS, application_id=item.application_id
        )
        return _json(message, Code.CHANGED, answer)

    async def _gw_register(
        self, message: CoapMessage, item: GwReg, host: str, port: int
    ) -> CoapMessage:
        """``GWREG`` (digest §3.6.2): remember the UE and its packet size."""
        state = self._st()
        allowed = min(item.required_packet_size, self.config.max_packet_size)
        created = item.ue_service_id not in state.peers
        await state.put_peer(
            ConstrainedPeer(
                ue_service_id=item.ue_service_id,
                host=host,
                port=port,
                since=time.time(),
                layer2_id=item.layer2_id,
                packet_size=allowed,
            )
        )
        answer = GwRegResp(
            layer2_id=self.config.layer2_id,
            ue_service_id=self.config.ue_service_id,
            allowed_packet_size=allowed,
            registration_result=Result.SUCCESS,
        )
        return _json(message, Code.CREATED if created else Code.CHANGED, answer)

    async def _gw_deregister(self, message: CoapMessage, item: GwDereg) -> CoapMessage:
        await self._st().drop_peer(item.ue_service_id)
        answer = GwDeregResp(
            ue_service_id=item.ue_service_id, deregistration_result=Result.SUCCESS
        )
        return _json(message, Code.CHANGED, answer)

    # configuration (bulk, TS 23.554 §8.1.4) -----------------------------------------

    async def _render_config(self, request: Request) -> CoapMessage:
        """A constrained UE's ``CONFREQ``: answered from one bulk request."""
        message = request.message
        if message.content_format != CONTENT_FORMAT_JSON:
            return _error(
                message,
                Code.UNSUPPORTED_CONTENT_FORMAT,
                FailureCause.INVALID_MESSAGE,
                "Content-Format must be 50 (application/json)",
            )
        try:
            item = decode_config_request(message.payload)
        except DecodeError as exc:
            log.info("4.00 from %s on /msgin5g/config: %s", request.peer, exc)
            return _error(
                message, Code.BAD_REQUEST, FailureCause.INVALID_MESSAGE, str(exc)
            )
        if not isinstance(item, ConfReq):
            return _error(
                message,
                Code.BAD_REQUEST,
                FailureCause.UNSUPPORTED_MESSAGE_TYPE,
                "a constrained UE asks with CONFREQ",
            )
        future: asyncio.Future[ConfResp] = asyncio.get_running_loop().create_future()
        self._conf_waiting.append((item, future))
        if len(self._conf_waiting) == 1:
            self._spawn(self._flush_configuration())
        try:
            answer = await future
        except MSGin5GError as exc:
            log.info("bulk configuration failed: %s", exc)
            return make_response(message, Code.SERVICE_UNAVAILABLE)
        return _json(message, Code.CONTENT, answer)

    async def _flush_configuration(self) -> None:
        await asyncio.sleep(_CONF_WINDOW)
        waiting, self._conf_waiting = self._conf_waiting, []
        while waiting:
            chunk, waiting = (
                waiting[: self.config.batch_size],
                waiting[self.config.batch_size :],
            )
            bulk = BulkConfReq(
                ue_service_id=self.config.ue_service_id,
                ue_credential_info=self.upstream.credential_info(),
                num_of_conf_requests=len(chunk),
                conf_requests=[item for item, _ in chunk],
            )
            try:
                response = await self.upstream.post_config(encode(bulk))
                answer = decode_config_response(response.payload)
                if not isinstance(answer, BulkConfResp):
                    raise DecodeError("expected BULKCONFRESP", member="messageType")
            except MSGin5GError as exc:
                for _, future in chunk:
                    if not future.done():
                        future.set_exception(exc)
                continue
            by_ue = {r.ue_service_id: r for r in answer.conf_responses}
            for item, future in chunk:
                result = by_ue.get(item.ue_service_id) or ConfResp(
                    ue_service_id=item.ue_service_id,
                    result=Result.FAILURE,
                    failure_cause=FailureCause.BULK_INCOMPLETE.value,
                )
                if result.result == Result.SUCCESS:
                    # constrained UEs reach the server through this gateway
                    result = msgspec.structs.replace(
                        result, msgin5g_server_address=self.uri
                    )
                if not future.done():
                    future.set_result(result)

    # GET resources -----------------------------------------------------------------

    async def _render_pending(self, request: Request) -> CoapMessage:
        """``GET /msgin5g/pending?ue=ID``: the expectedRegistrationTime (§8.2.7)."""
        message = request.message
        ue = _query(message, "ue")
        state = self._st()
        for kind in ("REG", "DEREG"):
            pending = state.pending.get(f"{kind}:{ue}")
            if pending is None:
                continue
            when = self._batcher.expected(kind, pending.key)
            body = {
                "messageType": kind,
                "ueServiceId": ue,
                "expectedRegistrationTime": _rfc3339(when if when else time.time()),
            }
            return make_response(
                message, Code.CONTENT, msgspec.json.encode(body), content_format=50
            )
        return make_response(message, Code.NOT_FOUND)

    async def _render_status(self, request: Request) -> CoapMessage:
        """``GET /msgin5g/gateway``: status for ``msgin5g gateway status``."""
        message = request.message
        if not _is_loopback(str(request.peer[0])):  # type: ignore[index]
            log.warning("status request from %s refused", request.peer)
            return make_response(message, Code.FORBIDDEN)
        return make_response(
            message,
            Code.CONTENT,
            msgspec.json.encode(await self.status()),
            content_format=CONTENT_FORMAT_JSON,
        )

    async def status(self) -> dict[str, Any]:
        """Cached requests, queues and counters (the ``gateway status`` view)."""
        state = self._st()
        backend = self._backend
        assert backend is not None  # noqa: S101 - set in start()
        queues: dict[str, int] = {}
        for target in await backend.recipients_with_pending():
            queues[target] = len(await backend.pending_for(target, limit=1_000_000))
        relay = self._rel()
        return {
            "ueServiceId": self.config.ue_service_id,
            "registered": self.upstream.registered,
            "serverReachable": relay.server_reachable,
            "listen": self.uri,
            "cachedRequests": [
                {
                    "messageType": p.kind,
                    "ueServiceId": p.ue_service_id,
                    "peer": f"{p.host}:{p.port}",
                    "mid": p.mid,
                    "token": p.token.hex(),
                    "urgent": p.urgent,
                    "sendBy": _rfc3339(p.send_by),
                }
                for p in sorted(state.pending.values(), key=lambda p: p.received_at)
            ],
            "uplinkQueue": queues.pop(UPSTREAM, 0),
            "downlinkQueues": queues,
            "constrainedUes": len(state.peers),
            "applications": sorted(state.apps),
            "bulkRequests": self.bulk_requests,
            "individualRequests": self.individual_requests,
            "answersSent": self.answers_sent,
            "relayedUp": relay.forwarded,
            "relayedDown": relay.delivered,
        }


_GET = frozenset({Code.GET})


def _query(message: CoapMessage, name: str) -> str | None:
    for raw in message.opts(OptionNumber.URI_QUERY):
        key, _, value = raw.decode("utf-8", "replace").partition("=")
        if key == name:
            return value
    return None


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_loopback(host: str) -> bool:
    return host.startswith(("127.", "::ffff:127.")) or host == "::1"


def _json(request: CoapMessage, code: int, body: msgspec.Struct) -> CoapMessage:
    return make_response(
        request, code, encode(body), content_format=CONTENT_FORMAT_JSON
    )


def _error(
    request: CoapMessage, code: int, cause: FailureCause, detail: str
) -> CoapMessage:
    body = ErrorBody(
        message_type=message_type_of(request.payload) or "ERROR",
        failure_cause=cause.value,
        detail=detail[:300],
    )
    return _json(request, code, body)
