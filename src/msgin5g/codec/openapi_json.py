"""TS 29.538 JSON (MSGS_ASRegistration, MSGS_MSGDelivery, MSGG_BGDelivery) ↔ model.

Digest §3.3-§3.5 and §3.8.

The northbound APIs speak the JSON of the official OpenAPI files; the service
speaks the model of :mod:`msgin5g.model.messages` (the MSGin5G-1 IEs). This module
is the one place that maps between them, in both directions:

* the **pydantic v2 models** below are the wire schemas (class names and JSON
  member names exactly as in ``TS29538_*.yaml``; ``tests/interop/test_openapi.py``
  compares names and required lists with the official files). FastAPI validates
  requests with them, the outbound AS deliverer and ``msgin5g as`` encode with them;
* the **mapping functions** turn a validated body into a model message
  (``ASMessageDelivery`` → ``Msg`` with ``originatingAsServiceId``, digest §3.9
  field map) and back (``Msg`` → ``UEMessageDelivery`` for the AS's target URI,
  ``Imdn`` → ``DeliveryStatusReport``, ``MsgResp`` → ``MessageDeliveryAck``).

Design choices:

* pydantic is allowed here and in ``transports.rest`` only (import-linter keeps it
  out of service, model, storage); the service never sees JSON.
* Enumerations are open (``anyOf`` enum + string, digest §3.2): ``addrType`` and
  ``priority`` are plain strings in the schema; an unknown ``priority`` is treated
  as absent (default priority), an unknown ``addrType`` is refused by the service.
* ``payload`` is base64 text (digest §3.10 example), as on MSGin5G-1.
* Values the schema allows but MSGin5G cannot carry (an empty or over-long
  ``msgId``, a service ID with ``/``) raise :class:`DecodeError` whose ``member``
  is the JSON path, which the REST edge turns into ``400`` with ``invalidParams``.
* ``latency`` is accepted and not acted upon (no latency-driven scheduling yet).
* ``BgMessageDelivery`` has no store-and-forward member. PROJECT CHOICE: the
  ``MSG`` asks for store-and-forward (``storeAndForwardFlag`` true, server
  default lifetime), so assigned members that are offline get it later.
"""

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

import msgspec
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from msgin5g.errors import DecodeError
from msgin5g.model.messages import Imdn, Msg, MsgResp
from msgin5g.spec.delivery import DeliveryStatus, PriorityType

__all__ = [
    "ASMessageDelivery",
    "ASProfile",
    "ASRegistration",
    "ASRegistrationAck",
    "ASTopicSubscription",
    "Address",
    "AddressType",
    "BgMessageDelivery",
    "DeliveryStatusReport",
    "GatewayMessageDelivery",
    "InvalidParam",
    "MessageDelivery",
    "MessageDeliveryAck",
    "MessageSegmentParameters",
    "ProblemDetails",
    "StoreAndForwardParameters",
    "UEMessageDelivery",
    "ack_from_response",
    "imdn_from_report",
    "msg_from_as_delivery",
    "msg_from_bg_delivery",
    "msg_from_ue_delivery",
    "present",
    "report_from_imdn",
    "ue_delivery_from_msg",
]


class AddressType:
    """``AddressType`` values (TS 29.538 MSGG_L3GDelivery; open enumeration)."""

    UE = "UE"
    AS = "AS"
    GROUP = "GROUP"
    BC = "BC"
    TOPIC = "TOPIC"


class _Wire(BaseModel):
    """Base: JSON names are the camelCase aliases; unknown members are ignored."""

    model_config = ConfigDict(
        alias_generator=AliasGenerator(alias=to_camel),
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )

    def wire(self) -> dict[str, Any]:
        """The JSON object (aliases, absent members omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Request(_Wire):
    """Base of request bodies: an optional member is not nullable.

    OpenAPI 3.0 allows ``null`` only where a schema says ``nullable: true``,
    and no TS 29.538 request schema does: a member sent as ``null`` is a ``400``
    naming it (absent is fine). Code building these models leaves a member out
    instead of passing ``None``.
    """

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("null is not allowed (the schema is not nullable)")
        return value


def present(**members: Any) -> dict[str, Any]:
    """The keyword arguments that are not None (for building request models)."""
    return {k: v for k, v in members.items() if v is not None}


class Address(_Request):
    """``Address`` (MSGG_L3GDelivery): an identity and its kind."""

    addr_type: str
    addr: str


class MessageSegmentParameters(_Request):
    """``MessageSegmentParameters``: the segment IEs of TS 23.554 §8.5."""

    seg_id: str | None = None
    total_seg_count: int | None = None
    seg_numb: int | None = None
    last_seg_flag: bool | None = None


class StoreAndForwardParameters(_Request):
    """``StoreAndForwardParameters`` (TS 23.554 Table 8.3.2-2)."""

    expr_time: datetime | None = None


class ASMessageDelivery(_Request):
    """``ASMessageDelivery``: an AS sends a message (A2P, digest §2.11)."""

    ori_addr: Address
    dest_addr: Address
    app_id: str | None = None
    msg_id: str
    deliv_st_req_ind: bool | None = None
    payload: str | None = None
    priority: str | None = None
    seg_ind: bool | None = None
    seg_params: MessageSegmentParameters | None = None
    sto_and_fw_ind: bool
    sto_and_fw_params: StoreAndForwardParameters | None = None
    latency: int | None = None


class MessageDelivery(_Request):
    """The members the message delivery bodies of TS 29.538 share, in order.

    ``UEMessageDelivery`` and ``BgMessageDelivery`` add theirs after them;
    ``L3gMessageDelivery`` and ``N3gMessageDelivery`` (the MSGG API a gateway
    serves, :class:`GatewayMessageDelivery`) have exactly these.
    """

    ori_addr: Address
    dest_addr: Address
    app_id: str | None = None
    msg_id: str
    deliv_st_req_ind: bool | None = None
    payload: str | None = None
    seg_ind: bool | None = None
    seg_params: MessageSegmentParameters | None = None


class GatewayMessageDelivery(MessageDelivery):
    """``L3gMessageDelivery`` / ``N3gMessageDelivery`` (same members)."""


class UEMessageDelivery(MessageDelivery):
    """``UEMessageDelivery``: a message originated by a UE (gateway, or P2A out)."""

    sto_and_fw_ind: bool
    sto_and_fw_params: StoreAndForwardParameters | None = None


class BgMessageDelivery(MessageDelivery):
    """``BgMessageDelivery`` (MSGG_BGDelivery): a message for a Broadcast Area."""

    priority: str | None = None


class MessageDeliveryAck(_Wire):
    """``MessageDeliveryAck``: ``status`` absent = accepted (digest §2.0.3)."""

    ori_addr: Address
    msg_id: str
    status: str | None = None
    failure_cause: str | None = None


class DeliveryStatusReport(_Request):
    """``DeliveryStatusReport`` (TS 23.554 Table 8.3.4-1)."""

    ori_addr: Address
    dest_addr: Address
    msg_id: str
    failure_cause: str | None = None
    deliv_st: str


class ASProfile(_Request):
    """``ASProfile`` (``appSenarios`` spelled as in the OpenAPI)."""

    app_name: str | None = None
    app_providers: list[str] | None = Field(default=None, min_length=1)
    app_senarios: list[str] | None = Field(default=None, min_length=1)
    app_category: str | None = None
    as_status: str | None = None


class ASRegistration(_Request):
    """``ASRegistration`` (digest §3.4)."""

    as_svc_id: str
    app_id: str | None = None
    target_uri: str | None = None
    as_prof: ASProfile | None = None


class ASTopicSubscription(_Request):
    """An AS's Messaging Topic subscription (PROJECT EXTENSION, docs/rest.md).

    TS 29.538 Rel-18 has no topic subscription resource for an AS (digest
    §2.15.1 names the AS as a possible subscriber); ``/msgs-topicsub/v1`` uses
    the stage-2 IEs: subscriber, topic list, optional expiration.
    """

    as_svc_id: str = Field(min_length=1, max_length=255)
    messaging_topics: list[str] = Field(min_length=1, max_length=100)
    expiration: datetime | None = None


class InvalidParam(_Wire):
    """``InvalidParam`` (TS 29.571)."""

    param: str
    reason: str | None = None


class ProblemDetails(_Wire):
    """``ProblemDetails`` (TS 29.571), the members this server fills in."""

    type: str | None = None
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    instance: str | None = None
    cause: str | None = None
    invalid_params: list[InvalidParam] | None = Field(default=None, min_length=1)


class ASRegistrationAck(_Wire):
    """``ASRegistrationAck``: ``result`` is mandatory even on success (digest §3.4)."""

    as_svc_id: str
    result: ProblemDetails


# mapping -----------------------------------------------------------------------


def _payload(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("payload is not base64", member="payload") from None


def _priority(text: str | None) -> str | None:
    return text if text in PriorityType.__members__ else None


def _recipient(dest: Address) -> dict[str, str]:
    field = {
        AddressType.UE: "recipientUeServiceId",
        AddressType.AS: "recipientAsServiceId",
        AddressType.GROUP: "recipientGroupServiceId",
        AddressType.BC: "recipientBroadcastAreaId",
        AddressType.TOPIC: "messagingTopic",
    }.get(dest.addr_type)
    if field is None:
        raise DecodeError(
            f"unknown addrType {dest.addr_type!r}", member="destAddr.addrType"
        )
    return {field: dest.addr}


def _common(
    body: ASMessageDelivery | UEMessageDelivery | BgMessageDelivery, originator: str
) -> dict[str, Any]:
    store = True
    expires = None
    if not isinstance(body, BgMessageDelivery):
        store = body.sto_and_fw_ind
        sf_params = body.sto_and_fw_params
        expires = sf_params.expr_time if sf_params else None
    wire: dict[str, Any] = {
        "messageType": "MSG",
        "messageId": body.msg_id,
        originator: body.ori_addr.addr,
        **_recipient(body.dest_addr),
        "deliveryStatusRequired": bool(body.deliv_st_req_ind),
        "storeAndForwardFlag": store,
    }
    if body.app_id is not None:
        wire["applicationId"] = body.app_id
    payload = _payload(body.payload)
    if payload is not None:
        wire["payload"] = payload
    if expires is not None:
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        wire["storeAndForwardParams"] = {"messageExpirationTime": expires}
    params = body.seg_params
    if body.seg_ind and params is not None:
        wire["segmentationSetId"] = params.seg_id
        wire["totalSegments"] = params.total_seg_count
        wire["segmentNumber"] = params.seg_numb
        wire["lastSegmentFlag"] = bool(params.last_seg_flag)
    return {k: v for k, v in wire.items() if v is not None}


_MEMBERS = {
    "messageId": "msgId",
    "originatingAsServiceId": "oriAddr.addr",
    "originatingUeServiceId": "oriAddr.addr",
    "recipientUeServiceId": "destAddr.addr",
    "recipientAsServiceId": "destAddr.addr",
    "recipientGroupServiceId": "destAddr.addr",
    "recipientBroadcastAreaId": "destAddr.addr",
    "messagingTopic": "destAddr.addr",
    "applicationId": "appId",
    "totalSegments": "segParams.totalSegCount",
    "segmentNumber": "segParams.segNumb",
    "segmentationSetId": "segParams.segId",
}


def _convert(wire: dict[str, Any], type_: type[Msg] | type[Imdn]) -> Any:
    try:
        return msgspec.convert(wire, type_)
    except msgspec.ValidationError as exc:
        text = str(exc)
        member = None
        if "at `$." in text:
            path = text.rsplit("at `$.", 1)[1].rstrip("`")
            member = _MEMBERS.get(path.split(".")[0], path)
        raise DecodeError(text, member=member) from None


def msg_from_as_delivery(body: ASMessageDelivery) -> Msg:
    """The ``MSG`` an ``ASMessageDelivery`` stands for (digest §3.9).

    Raises:
        DecodeError: a value MSGin5G cannot carry; ``member`` is the JSON path.
    """
    if body.ori_addr.addr_type != AddressType.AS:
        raise DecodeError("oriAddr.addrType must be AS", member="oriAddr.addrType")
    wire = _common(body, "originatingAsServiceId")
    priority = _priority(body.priority)
    if priority is not None:
        wire["priorityType"] = priority
    msg: Msg = _convert(wire, Msg)
    return msg


def msg_from_ue_delivery(body: UEMessageDelivery) -> Msg:
    """The ``MSG`` a gateway's ``UEMessageDelivery`` stands for.

    Raises:
        DecodeError: a value MSGin5G cannot carry; ``member`` is the JSON path.
    """
    if body.ori_addr.addr_type != AddressType.UE:
        raise DecodeError("oriAddr.addrType must be UE", member="oriAddr.addrType")
    msg: Msg = _convert(_common(body, "originatingUeServiceId"), Msg)
    return msg


def msg_from_bg_delivery(body: BgMessageDelivery) -> Msg:
    """The ``MSG`` a ``BgMessageDelivery`` stands for (digest §2.14, §3.8).

    ``oriAddr`` is an AS (``originatingAsServiceId``) or a UE
    (``originatingUeServiceId``); ``destAddr`` must be a Broadcast Area (BC).

    Raises:
        DecodeError: another address type, or a value MSGin5G cannot carry;
            ``member`` is the JSON path.
    """
    if body.dest_addr.addr_type != AddressType.BC:
        raise DecodeError("destAddr.addrType must be BC", member="destAddr.addrType")
    originator = {
        AddressType.AS: "originatingAsServiceId",
        AddressType.UE: "originatingUeServiceId",
    }.get(body.ori_addr.addr_type)
    if originator is None:
        raise DecodeError(
            "oriAddr.addrType must be AS or UE", member="oriAddr.addrType"
        )
    wire = _common(body, originator)
    priority = _priority(body.priority)
    if priority is not None:
        wire["priorityType"] = priority
    msg: Msg = _convert(wire, Msg)
    return msg


def imdn_from_report(body: DeliveryStatusReport) -> Imdn:
    """The ``IMDN`` a ``DeliveryStatusReport`` stands for.

    Raises:
        DecodeError: unknown ``delivSt`` or address type, or unusable values.
    """
    kinds = {AddressType.UE: "Ue", AddressType.AS: "As"}
    ori = kinds.get(body.ori_addr.addr_type)
    dest = kinds.get(body.dest_addr.addr_type)
    if ori is None:
        raise DecodeError("oriAddr.addrType must be UE or AS", member="oriAddr")
    if dest is None:
        raise DecodeError("destAddr.addrType must be UE or AS", member="destAddr")
    wire: dict[str, Any] = {
        "messageType": "IMDN",
        "messageId": body.msg_id,
        "deliveryStatus": body.deliv_st,
        f"originating{ori}ServiceId": body.ori_addr.addr,
        f"recipient{dest}ServiceId": body.dest_addr.addr,
    }
    if body.failure_cause is not None:
        wire["failureCause"] = body.failure_cause
    try:
        imdn: Imdn = _convert(wire, Imdn)
    except DecodeError as exc:
        if exc.member == "deliveryStatus":
            raise DecodeError(exc.detail, member="delivSt") from None
        if exc.member == "failureCause":
            raise DecodeError(exc.detail, member="failureCause") from None
        raise
    return imdn


def _address(ue: str | None, as_: str | None) -> Address:
    if as_ is not None:
        return Address(addr_type=AddressType.AS, addr=as_)
    return Address(addr_type=AddressType.UE, addr=ue or "")


def ue_delivery_from_msg(msg: Msg) -> UEMessageDelivery | ASMessageDelivery:
    """The body POSTed to an AS's ``{targetUri}/deliver-message`` (digest §3.11)."""
    params = None
    if msg.store_and_forward_params is not None:
        params = StoreAndForwardParameters(
            **present(expr_time=msg.store_and_forward_params.message_expiration_time)
        )
    seg = None
    if msg.segmentation_set_id is not None:
        seg = MessageSegmentParameters(
            **present(
                seg_id=msg.segmentation_set_id,
                total_seg_count=msg.total_segments,
                seg_numb=msg.segment_number,
                last_seg_flag=msg.last_segment_flag,
            )
        )
    fields: dict[str, Any] = {
        "ori_addr": _address(
            msg.originating_ue_service_id, msg.originating_as_service_id
        ),
        "dest_addr": _address(msg.recipient_ue_service_id, msg.recipient_as_service_id),
        "app_id": msg.application_id,
        "msg_id": msg.message_id,
        "deliv_st_req_ind": msg.delivery_status_required or None,
        "payload": (
            base64.b64encode(msg.payload).decode() if msg.payload is not None else None
        ),
        "seg_ind": True if seg is not None else None,
        "seg_params": seg,
        "sto_and_fw_ind": msg.store_and_forward_flag,
        "sto_and_fw_params": params,
    }
    if msg.originating_as_service_id is not None:
        priority = str(msg.priority_type) if msg.priority_type else None
        return ASMessageDelivery(**present(**fields, priority=priority))
    return UEMessageDelivery(**present(**fields))


def report_from_imdn(imdn: Imdn) -> DeliveryStatusReport:
    """The body POSTed to an AS's ``{targetUri}/deliver-report`` (digest §3.11)."""
    return DeliveryStatusReport(
        **present(
            ori_addr=_address(
                imdn.originating_ue_service_id, imdn.originating_as_service_id
            ),
            dest_addr=_address(
                imdn.recipient_ue_service_id, imdn.recipient_as_service_id
            ),
            msg_id=imdn.message_id,
            failure_cause=imdn.failure_cause,
            deliv_st=str(imdn.delivery_status),
        )
    )


def ack_from_response(resp: MsgResp, ori_addr: Address) -> MessageDeliveryAck:
    """``MessageDeliveryAck`` for an accepted, stored or failed message.

    ``DELY_ACCEPTED`` has no API value: ``status`` is then absent (digest §2.0.3).
    """
    status = resp.delivery_status
    return MessageDeliveryAck(
        ori_addr=ori_addr,
        msg_id=resp.message_id,
        status=None if status == DeliveryStatus.DELY_ACCEPTED else str(status),
        failure_cause=resp.failure_cause,
    )


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (``Z`` allowed) for CLI options."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
