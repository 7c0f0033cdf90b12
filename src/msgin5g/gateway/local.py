"""The gateway's resources for constrained UEs (MSGin5G-5/-6; digest §3.4-§3.6, §3.17).

:class:`LocalResources` serves the gateway's CoAP endpoint on ``listen``:

========================  =====  ==============================================
``/msgin5g``              POST   ``REG``, ``DEREG`` (→ bulk registration),
                                 ``MSG``, ``IMDN`` (→ relay, Annex A.3 form),
                                 ``APPREG``, ``APPDEREG``, ``GWREG``, ``GWDEREG``
``/msgin5g/config``       POST   ``CONFREQ`` (answered through bulk configuration)
``/msgin5g/pending``      GET    ``?ue=ID``: the cached request and its
                                 ``expectedRegistrationTime``
========================  =====  ==============================================

A datagram goes down one way: content-format and payload checks here, then the
procedure's module (:mod:`~msgin5g.gateway.bulkreg` for registrations,
:mod:`~msgin5g.gateway.relay` for messages), then the upstream client.

A ``REG``/``DEREG`` without ``msgin5gServiceId`` is accepted: TS 24.538-R18 puts
the member on the gateway's ``REGRESP``/``DEREGRESP`` (§6.3.4.3.3, §6.3.4.3.6),
not on the request; a wrong value is still refused (4.00).
"""

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec

from msgin5g.client.wire import error_response, json_response, require_json
from msgin5g.coap.endpoint import Request
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code, OptionNumber
from msgin5g.codec.ue_payload import decode_config_request, decode_local_uplink
from msgin5g.errors import (
    DecodeError,
    MSGin5GError,
    TransportError,
    UnsupportedMessageType,
)
from msgin5g.gateway.bulkreg import BulkRegistration
from msgin5g.gateway.cache import AppBinding, ConstrainedPeer
from msgin5g.gateway.context import GatewayContext, host_port
from msgin5g.gateway.relay import Relay
from msgin5g.model.messages import (
    AppDereg,
    AppDeregResp,
    AppReg,
    AppRegResp,
    BulkConfReq,
    BulkConfResp,
    ConfReq,
    ConfResp,
    Dereg,
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
from msgin5g.spec.coap import CONFIG_RESOURCE, CONTENT_FORMAT_JSON
from msgin5g.spec.delivery import DeliveryStatus

__all__ = ["LocalResources"]

log = logging.getLogger(__name__)

_RECIPIENT = {
    "UE": "recipient_ue_service_id",
    "AS": "recipient_as_service_id",
    "GROUP": "recipient_group_service_id",
    "BC": "recipient_broadcast_area_id",
    "TOPIC": "messaging_topic",
}
_CONF_WINDOW = 0.05
"""Seconds configuration requests are collected before one bulk request."""


class LocalResources:
    """Handlers of the constrained-side resources of one gateway.

    Args:
        ctx: the gateway's opened parts.
        bulk: bulk registration (``REG``/``DEREG``).
        relay: the relay (``MSG``/``IMDN`` and delivery kicks).
        uri: the gateway's own ``coap://`` URI (given to constrained UEs as
            their server address).
    """

    def __init__(
        self,
        ctx: GatewayContext,
        bulk: BulkRegistration,
        relay: Relay,
        uri: Callable[[], str],
    ) -> None:
        self._config = ctx.config
        self._state = ctx.state
        self._upstream = ctx.upstream
        self._tasks = ctx.tasks
        self._clock = ctx.clock
        self._bulk = bulk
        self._relay = relay
        self._uri = uri
        self._conf_waiting: list[tuple[ConfReq, asyncio.Future[ConfResp]]] = []

    # /msgin5g --------------------------------------------------------------------

    async def render_post(self, request: Request) -> CoapMessage:
        """``POST /msgin5g``: decode, then hand to the procedure."""
        message = request.message
        refused = require_json(message)
        if refused is not None:
            log.info("4.15 from %s", request.peer)
            return refused
        try:
            item = decode_local_uplink(
                message.payload, service_id=self._config.service_id
            )
        except UnsupportedMessageType as exc:
            log.info("4.00 from %s: %s", request.peer, exc)
            return error_response(
                message,
                Code.BAD_REQUEST,
                FailureCause.UNSUPPORTED_MESSAGE_TYPE,
                str(exc),
            )
        except DecodeError as exc:
            log.info("4.00 from %s: %s", request.peer, exc)
            return error_response(
                message, Code.BAD_REQUEST, FailureCause.INVALID_MESSAGE, str(exc)
            )
        host, port = host_port(request.peer)
        if isinstance(item, (Reg, Dereg)):
            return await self._bulk.cache(request, item, host, port)
        awake = self._state.peer_at(host, port)
        if awake is not None:
            self._relay.kick(awake)
        if isinstance(item, (LocalMsg, LocalImdn)):
            return await self._relay_uplink(message, item, host, port)
        if isinstance(item, AppReg):
            return await self._app_register(message, item, host, port)
        if isinstance(item, AppDereg):
            return await self._app_deregister(message, item)
        if isinstance(item, GwReg):
            return await self._gw_register(message, item, host, port)
        return await self._gw_deregister(message, item)

    # relay ---------------------------------------------------------------------------

    def _originator(
        self, host: str, port: int, application_id: str | None
    ) -> tuple[str, str | None] | None:
        """(originator, app key when sending as the gateway) for a sender."""
        state = self._state
        if application_id is not None:
            app = state.app_at(host, port, application_id)
            if app is not None:
                own = app.owner == self._config.ue_service_id
                return app.owner, app.key if own else None
        ue = state.peer_at(host, port)
        return None if ue is None else (ue, None)

    async def _relay_uplink(
        self, message: CoapMessage, item: LocalMsg | LocalImdn, host: str, port: int
    ) -> CoapMessage:
        found = self._originator(host, port, item.application_id)
        member = _RECIPIENT.get(item.target_type)
        if member is None:
            return error_response(
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
            return json_response(message, Code.CHANGED, rejected)
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
                return error_response(
                    message,
                    Code.BAD_REQUEST,
                    FailureCause.INVALID_MESSAGE,
                    "a report goes to a UE or an AS",
                )
            upward = msgspec.structs.replace(
                Imdn(
                    message_id=item.message_id,
                    delivery_status=item.delivery_status,
                    originating_ue_service_id=originator,
                    failure_cause=item.failure_cause,
                ),
                **{member: item.target_address},
            )
        response = await self._relay.uplink(upward, app_key)
        if response is None:
            return make_response(message, Code.CHANGED)
        return json_response(message, Code.CHANGED, response)

    # application registration and gateway services ---------------------------------

    async def _app_register(
        self, message: CoapMessage, item: AppReg, host: str, port: int
    ) -> CoapMessage:
        """``APPREG`` (digest §3.6.1; TS 23.554 §8.11.2)."""
        state = self._state
        owner = item.ue_service_id or self._config.ue_service_id
        if item.ue_service_id is not None:
            cause = await self._register_application_ue(item, host, port)
            if cause is not None:
                answer = AppRegResp(
                    registration_result=Result.FAILURE,
                    application_id=item.application_id,
                    failure_cause=cause,
                )
                return json_response(message, Code.CHANGED, answer)
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
        return json_response(message, Code.CREATED if created else Code.CHANGED, answer)

    async def _register_application_ue(
        self, item: AppReg, host: str, port: int
    ) -> str | None:
        """Register the application's own UE Service ID with the server; the cause."""
        state = self._state
        ue = item.ue_service_id
        assert ue is not None  # noqa: S101 - checked by the caller
        if item.ue_credential_info is None:
            peer = state.peers.get(ue)
            if peer is not None and (peer.host, peer.port) == (host, port):
                return None  # registered through this gateway already
            return FailureCause.NOT_REGISTERED.value
        reg = Reg(ue_service_id=ue, ue_credential_info=item.ue_credential_info)
        try:
            answer = await self._upstream.client.request(reg, RegResp)
        except (TransportError, DecodeError) as exc:
            log.info("APPREG %s: server not reachable: %s", ue, exc)
            return FailureCause.GATEWAY_UNAVAILABLE.value
        if answer.registration_result != Result.SUCCESS:
            return answer.failure_cause or FailureCause.AUTHENTICATION_FAILED.value
        await self._remember(ue, host, port, item.layer2_id, None)
        return None

    async def _remember(
        self,
        ue: str,
        host: str,
        port: int,
        layer2_id: str | None,
        packet_size: int | None,
    ) -> None:
        """Store where a constrained UE is reached (keeps its known packet size)."""
        old = self._state.peers.get(ue)
        if packet_size is None and old is not None:
            packet_size = old.packet_size
        await self._state.put_peer(
            ConstrainedPeer(
                ue_service_id=ue,
                host=host,
                port=port,
                since=self._clock.now(),
                layer2_id=layer2_id,
                packet_size=packet_size,
            )
        )

    async def _app_deregister(
        self, message: CoapMessage, item: AppDereg
    ) -> CoapMessage:
        owner = item.ue_service_id or self._config.ue_service_id
        await self._state.drop_app(f"{owner}/{item.application_id}")
        answer = AppDeregResp(
            deregistration_result=Result.SUCCESS, application_id=item.application_id
        )
        return json_response(message, Code.CHANGED, answer)

    async def _gw_register(
        self, message: CoapMessage, item: GwReg, host: str, port: int
    ) -> CoapMessage:
        """``GWREG`` (digest §3.6.2): remember the UE and its packet size."""
        allowed = min(item.required_packet_size, self._config.max_packet_size)
        created = item.ue_service_id not in self._state.peers
        await self._remember(item.ue_service_id, host, port, item.layer2_id, allowed)
        answer = GwRegResp(
            layer2_id=self._config.layer2_id,
            ue_service_id=self._config.ue_service_id,
            allowed_packet_size=allowed,
            registration_result=Result.SUCCESS,
        )
        return json_response(message, Code.CREATED if created else Code.CHANGED, answer)

    async def _gw_deregister(self, message: CoapMessage, item: GwDereg) -> CoapMessage:
        await self._state.drop_peer(item.ue_service_id)
        answer = GwDeregResp(
            ue_service_id=item.ue_service_id, deregistration_result=Result.SUCCESS
        )
        return json_response(message, Code.CHANGED, answer)

    # /msgin5g/config (bulk configuration, TS 23.554 §8.1.4) --------------------------

    async def render_config(self, request: Request) -> CoapMessage:
        """``POST /msgin5g/config``: a ``CONFREQ`` answered from one bulk request."""
        message = request.message
        refused = require_json(message)
        if refused is not None:
            return refused
        try:
            item = decode_config_request(
                message.payload, service_id=self._config.service_id
            )
        except DecodeError as exc:
            log.info("4.00 from %s on /msgin5g/config: %s", request.peer, exc)
            return error_response(
                message, Code.BAD_REQUEST, FailureCause.INVALID_MESSAGE, str(exc)
            )
        if not isinstance(item, ConfReq):
            return error_response(
                message,
                Code.BAD_REQUEST,
                FailureCause.UNSUPPORTED_MESSAGE_TYPE,
                "a constrained UE asks with CONFREQ",
            )
        future: asyncio.Future[ConfResp] = asyncio.get_running_loop().create_future()
        self._conf_waiting.append((item, future))
        if len(self._conf_waiting) == 1:
            self._tasks.spawn(self._flush_configuration(), name="bulk configuration")
        try:
            answer = await future
        except MSGin5GError as exc:
            log.info("bulk configuration failed: %s", exc)
            return make_response(message, Code.SERVICE_UNAVAILABLE)
        return json_response(message, Code.CONTENT, answer)

    async def _flush_configuration(self) -> None:
        await self._clock.sleep(_CONF_WINDOW)
        waiting, self._conf_waiting = self._conf_waiting, []
        size = self._config.batch_size
        while waiting:
            chunk, waiting = waiting[:size], waiting[size:]
            bulk = BulkConfReq(
                ue_service_id=self._config.ue_service_id,
                ue_credential_info=self._upstream.credential_info,
                num_of_conf_requests=len(chunk),
                conf_requests=[item for item, _ in chunk],
            )
            try:
                answer = await self._upstream.client.request(
                    bulk, BulkConfResp, resource=CONFIG_RESOURCE
                )
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
                        result, msgin5g_server_address=self._uri()
                    )
                if not future.done():
                    future.set_result(result)

    # /msgin5g/pending ----------------------------------------------------------------

    async def render_pending(self, request: Request) -> CoapMessage:
        """``GET /msgin5g/pending?ue=ID``: the expectedRegistrationTime (§8.2.7)."""
        message = request.message
        ue = _query(message, "ue")
        for kind in ("REG", "DEREG"):
            pending = self._state.pending.get(f"{kind}:{ue}")
            if pending is None:
                continue
            when = self._bulk.batcher.expected(kind, pending.key)
            body = {
                "messageType": kind,
                "ueServiceId": ue,
                "expectedRegistrationTime": rfc3339(when or self._clock.now()),
            }
            return make_response(
                message,
                Code.CONTENT,
                msgspec.json.encode(body),
                content_format=CONTENT_FORMAT_JSON,
            )
        return make_response(message, Code.NOT_FOUND)


def _query(message: CoapMessage, name: str) -> str | None:
    for raw in message.opts(OptionNumber.URI_QUERY):
        key, _, value = raw.decode("utf-8", "replace").partition("=")
        if key == name:
            return value
    return None


def rfc3339(epoch: float) -> str:
    """``2025-01-31T12:00:00Z`` for epoch seconds."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
