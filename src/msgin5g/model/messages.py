"""MSGin5G messages exchanged on MSGin5G-1 (TS 24.538 digest §3, IE tables).

Each message is a ``msgspec.Struct``: Python attributes are snake_case, and the one
class keyword ``rename="camel"`` declares the wire spelling (``ue_service_id`` ↔
``ueServiceId``), so no camelCase string appears in service code. ``messageType`` is
the tag of a tagged union, which lets :mod:`msgin5g.codec.ue_payload` decode and
validate any payload in one C-level step (PERFORMANCE.md: msgspec typed Structs
decode 1.4 M messages/s). Structs are frozen; use :func:`msgspec.structs.replace`
to derive copies (e.g. the server's copy with ``recipientUeServiceId`` set).

``payload`` is ``bytes``: on the wire it is base64 (RFC 4648 §4, padded), which
msgspec checks and converts. Time stamps are ``datetime`` (RFC 3339 on the wire).
Optional members default to ``None`` (or ``False`` for booleans, digest §2.6) and
are omitted when encoding.

Why one module of ~670 lines (issue 11 asks for a reason above ~500): it is the IE
catalogue of one wire format, one small Struct per Message Type, and the tagged
unions the codec decodes (``Uplink``, ``DownlinkItem``) must name them all; split by
procedure, every module would import every other for the unions. It holds no logic
beyond field constraints and a few properties.
"""

from datetime import datetime
from typing import Annotated, Final

import msgspec

from msgin5g.model.credentials import redacted_repr
from msgin5g.spec.delivery import (
    DeliveryStatus,
    PriorityType,
    ReportDeliveryStatus,
)

__all__ = [
    "AggImdn",
    "AggMsg",
    "AggregatedItem",
    "AppDereg",
    "AppDeregResp",
    "AppReg",
    "AppRegResp",
    "BulkConfReq",
    "BulkConfResp",
    "BulkDereg",
    "BulkDeregResp",
    "BulkReg",
    "BulkRegResp",
    "ClientPort",
    "CommAvailability",
    "ConfReq",
    "ConfResp",
    "Dereg",
    "DeregResp",
    "DeregResult",
    "DownlinkItem",
    "ErrorBody",
    "GwDereg",
    "GwDeregResp",
    "GwReg",
    "GwRegResp",
    "Imdn",
    "ItemResponse",
    "LocalImdn",
    "LocalMsg",
    "Msg",
    "MsgResp",
    "MsgUpd",
    "Reg",
    "RegResp",
    "RegResult",
    "ReportItem",
    "SegConfir",
    "SegRec",
    "StoreAndForwardParams",
    "TopicResult",
    "TopicSub",
    "TopicSubResp",
    "TopicUnsub",
    "TopicUnsubResp",
    "TriggeringInfo",
    "UECredentialInfo",
    "UeLocation",
]

_CONTROLS = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029"
"""C0 controls, DEL, C1 controls and the Unicode line/paragraph separators:
never part of an identifier or a short text member (issue 10 item 5, a newline
in a UE Service ID forged a log line). Patterns end in ``\\Z``, not ``$``,
which would also match before a trailing newline."""

ServiceId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=255, pattern=f"^[^/+#{_CONTROLS}]+\\Z"),
]
"""UE / AS / Group Service ID: 1-255 chars, no ``/``, ``+``, ``#`` (digest §1.2),
no control characters."""

MessageId = Annotated[
    str, msgspec.Meta(min_length=1, max_length=255, pattern=f"^[^{_CONTROLS}]+\\Z")
]
"""MSGin5G Message ID: project clients send a UUID; any 1-255 char string without
control characters is accepted."""

ShortText = Annotated[str, msgspec.Meta(max_length=255, pattern=f"^[^{_CONTROLS}]*\\Z")]
"""Any other short text member (application ID, segmentation set ID, ...): at
most 255 characters, no control characters."""

MAX_UINT32: Final = 2**32 - 1
"""Upper bound of every integer member (issue 10 item 8: an integer above 2^64
decoded fine and overflowed SQLite's 64-bit INTEGER when stored). Durations
(seconds) and sizes (octets) up to 2^32 - 1 also keep date arithmetic safe."""

NonNegative = Annotated[int, msgspec.Meta(ge=0, le=MAX_UINT32)]
Positive = Annotated[int, msgspec.Meta(gt=0, le=MAX_UINT32)]


class _Element(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """Nested JSON object (no ``messageType``)."""


class _Message(
    msgspec.Struct,
    rename="camel",
    omit_defaults=True,
    frozen=True,
    tag_field="messageType",
    gc=False,
):
    """Base of every MSGin5G-1 payload; the tag is ``messageType``."""


class UECredentialInfo(_Element, frozen=True):
    """``ueCredentialInfo`` (digest §3.2.4): authentication type and data."""

    auth_type: ShortText
    credential: Annotated[str, msgspec.Meta(max_length=1024)] = ""

    def __repr__(self) -> str:
        return redacted_repr(self, "credential")  # a bearer token (PSK_TOKEN)


class ClientPort(_Element, frozen=True):
    """An entry of ``clientPorts``: device-trigger port and protocol (SMS/NIDD)."""

    port: Annotated[int, msgspec.Meta(ge=0, le=65535)]
    protocol: ShortText | None = None


class TriggeringInfo(_Element, frozen=True):
    """``triggeringInfo``: UE identifier plus ports for device triggering."""

    msisdn: ShortText | None = None
    external_id: ShortText | None = None
    client_ports: list[ClientPort] | None = None


class UeLocation(_Element, frozen=True):
    """``ueLocation`` (PROJECT CHOICE, issue #4): where the UE is, for broadcast.

    A Broadcast Area is a named set of cells and tracking areas; a UE that
    reports its serving cell (NCGI/ECGI as text) or tracking area (TAI as text)
    in its registration is in every area listing it.
    """

    cell_id: ShortText | None = None
    tracking_area_id: ShortText | None = None


class CommAvailability(_Element, frozen=True):
    """``commAvailability`` (TS 24.538-R18 §6.3.1.1.1 d) 5))."""

    scheduled_comm_time: datetime
    comm_duration_time: NonNegative
    periodic_comm_indicator: bool | None = None
    periodic_comm_interval: NonNegative | None = None
    data_size_indication: NonNegative | None = None
    store_and_forward_option: ShortText | None = None


class StoreAndForwardParams(_Element, frozen=True):
    """``storeAndForwardParams`` (TS 23.554 Table 8.3.2-2)."""

    message_expiration_time: datetime | None = None


class ItemResponse(_Element, frozen=True):
    """Per-item outcome in an ``MSGRESP`` for an aggregate (digest §3.7.3)."""

    message_id: MessageId
    delivery_status: DeliveryStatus
    failure_cause: ShortText | None = None


class Reg(_Message, tag="REG", frozen=True):
    """Registration request (digest §3.2.5)."""

    ue_service_id: ServiceId
    ue_credential_info: UECredentialInfo
    msgin5g_ue_id: ShortText | None = None
    client_ports: list[ClientPort] | None = None
    triggering_info: TriggeringInfo | None = None
    comm_availability: CommAvailability | None = None
    max_segment_size: Positive | None = None
    client_address: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    msgin5g_service_id: ShortText | None = None
    registration_urgent_degree: ShortText | None = None
    wait_time: NonNegative | None = None
    ue_location: UeLocation | None = None


class RegResp(_Message, tag="REGRESP", frozen=True):
    """Registration response (piggybacked 2.01/2.04)."""

    ue_service_id: str
    registration_result: str
    failure_cause: str | None = None
    msgin5g_service_id: str | None = None


class Dereg(_Message, tag="DEREG", frozen=True):
    """De-registration request (digest §3.3.4)."""

    ue_service_id: ServiceId
    ue_credential_info: UECredentialInfo | None = None
    msgin5g_service_id: ShortText | None = None
    registration_urgent_degree: ShortText | None = None
    wait_time: NonNegative | None = None


class DeregResp(_Message, tag="DEREGRESP", frozen=True):
    """De-registration response (piggybacked 2.04)."""

    ue_service_id: str
    deregistration_result: str
    failure_cause: str | None = None
    msgin5g_service_id: str | None = None


class Msg(_Message, tag="MSG", frozen=True):
    """MSGin5G message (digest §3.7.2)."""

    message_id: MessageId
    originating_ue_service_id: ServiceId | None = None
    originating_as_service_id: ServiceId | None = None
    recipient_ue_service_id: ServiceId | None = None
    recipient_as_service_id: ServiceId | None = None
    recipient_group_service_id: ServiceId | None = None
    recipient_broadcast_area_id: ServiceId | None = None
    messaging_topic: (
        Annotated[
            str,
            msgspec.Meta(min_length=1, max_length=255, pattern=f"^[^{_CONTROLS}]+\\Z"),
        ]
        | None
    ) = None
    delivery_status_required: bool = False
    application_id: ShortText | None = None
    payload: bytes | None = None
    priority_type: PriorityType | None = None
    security_credentials: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    store_and_forward_flag: bool = False
    store_and_forward_params: StoreAndForwardParams | None = None
    segmentation_set_id: ShortText | None = None
    total_segments: Positive | None = None
    segment_number: Positive | None = None
    last_segment_flag: bool = False
    msgin5g_service_id: ShortText | None = None

    @property
    def originator(self) -> str | None:
        """The originating UE or AS Service ID."""
        return self.originating_ue_service_id or self.originating_as_service_id


class MsgResp(_Message, tag="MSGRESP", frozen=True):
    """Message response (digest §3.7.3)."""

    message_id: str
    delivery_status: DeliveryStatus
    originating_ue_service_id: str | None = None
    originating_as_service_id: str | None = None
    failure_cause: str | None = None
    item_responses: list[ItemResponse] | None = None


class Imdn(_Message, tag="IMDN", frozen=True):
    """Delivery status report (digest §3.9.2)."""

    message_id: MessageId
    delivery_status: ReportDeliveryStatus
    originating_ue_service_id: ServiceId | None = None
    originating_as_service_id: ServiceId | None = None
    recipient_ue_service_id: ServiceId | None = None
    recipient_as_service_id: ServiceId | None = None
    failure_cause: ShortText | None = None
    security_credentials: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    recipient_group_service_id: ServiceId | None = None
    messaging_topic: ShortText | None = None
    msgin5g_service_id: ShortText | None = None

    @property
    def originator(self) -> str | None:
        """The reporting UE or AS Service ID."""
        return self.originating_ue_service_id or self.originating_as_service_id

    @property
    def recipient(self) -> str | None:
        """The UE or AS that receives the report (the original sender)."""
        return self.recipient_ue_service_id or self.recipient_as_service_id


class MsgUpd(_Message, tag="MSGUPD", frozen=True):
    """Update or discard a stored message (digest §3.8 step 5)."""

    originating_ue_service_id: ServiceId
    recipient_ue_service_id: ServiceId
    message_id: MessageId
    store_and_forward_params: StoreAndForwardParams | None = None
    msgin5g_service_id: ShortText | None = None


class AggregatedItem(_Element, frozen=True):
    """One message inside an ``AGGMSG`` (digest §3.10.2)."""

    message_id: MessageId
    application_id: ShortText | None = None
    delivery_status_required: bool = False
    payload: bytes | None = None
    priority_type: PriorityType | None = None
    store_and_forward_flag: bool = False
    store_and_forward_params: StoreAndForwardParams | None = None


class AggMsg(_Message, tag="AGGMSG", frozen=True):
    """Aggregated MSGin5G message (digest §3.10.2): items for one common target."""

    message_id: MessageId
    aggregated_messages: Annotated[
        list[AggregatedItem], msgspec.Meta(min_length=1, max_length=1000)
    ]
    originating_ue_service_id: ServiceId | None = None
    originating_as_service_id: ServiceId | None = None
    recipient_ue_service_id: ServiceId | None = None
    recipient_as_service_id: ServiceId | None = None
    recipient_group_service_id: ServiceId | None = None
    recipient_broadcast_area_id: ServiceId | None = None
    messaging_topic: ShortText | None = None
    security_credentials: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    msgin5g_service_id: ShortText | None = None


class ReportItem(_Element, frozen=True):
    """One report inside an ``AGGIMDN`` (digest §3.11).

    ``originatingUeServiceId`` / ``originatingAsServiceId`` on an item (PROJECT
    CHOICE, issue #4) name its reporter when it differs from the aggregate's:
    the server aggregates the per-member reports of a group, topic or broadcast
    message, which come from different members, for one originator.
    """

    message_id: MessageId
    delivery_status: ReportDeliveryStatus
    failure_cause: ShortText | None = None
    originating_ue_service_id: ServiceId | None = None
    originating_as_service_id: ServiceId | None = None


class AggImdn(_Message, tag="AGGIMDN", frozen=True):
    """Aggregated delivery status report (digest §3.11)."""

    delivery_reports: Annotated[
        list[ReportItem], msgspec.Meta(min_length=1, max_length=1000)
    ]
    originating_ue_service_id: ServiceId | None = None
    originating_as_service_id: ServiceId | None = None
    recipient_ue_service_id: ServiceId | None = None
    recipient_as_service_id: ServiceId | None = None
    security_credentials: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    msgin5g_service_id: ShortText | None = None


class SegRec(_Message, tag="SEGREC", frozen=True):
    """Segments recovery: the reassembler asks for missing segments (§3.12.3)."""

    message_id: MessageId
    segmentation_set_id: ShortText
    missing_segments: Annotated[list[Positive], msgspec.Meta(max_length=10_000)]
    originating_ue_service_id: ServiceId | None = None
    originating_as_service_id: ServiceId | None = None
    recipient_ue_service_id: ServiceId | None = None
    recipient_as_service_id: ServiceId | None = None
    total_segments_unknown: bool = False
    msgin5g_service_id: ShortText | None = None


class SegConfir(_Message, tag="SEGCONFIR", frozen=True):
    """Message segments received confirmation (§3.12.3)."""

    message_id: MessageId
    segmentation_set_id: ShortText
    total_segments: Positive
    originating_ue_service_id: ServiceId | None = None
    originating_as_service_id: ServiceId | None = None
    recipient_ue_service_id: ServiceId | None = None
    recipient_as_service_id: ServiceId | None = None
    msgin5g_service_id: ShortText | None = None


class RegResult(_Element, frozen=True):
    """One entry of ``regResponses`` (digest §3.4.5)."""

    ue_service_id: str
    registration_result: str
    failure_cause: str | None = None


class DeregResult(_Element, frozen=True):
    """One entry of ``deregResponses`` (digest §3.5)."""

    ue_service_id: str
    deregistration_result: str
    failure_cause: str | None = None


class BulkReg(_Message, tag="BULKREG", frozen=True):
    """Bulk registration from a Gateway UE (TS 23.554 §8.2.7, digest §3.4.5)."""

    ue_service_id: ServiceId
    ue_credential_info: UECredentialInfo
    num_of_reg_requests: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    reg_requests: Annotated[list[Reg], msgspec.Meta(min_length=1, max_length=10_000)]
    msgin5g_service_id: ShortText | None = None


class BulkRegResp(_Message, tag="BULKREGRESP", frozen=True):
    """Bulk registration response (2.01/2.04 piggybacked)."""

    num_of_reg_responses: NonNegative
    reg_responses: list[RegResult]


class BulkDereg(_Message, tag="BULKDEREG", frozen=True):
    """Bulk de-registration from a Gateway UE (TS 23.554 §8.2.9, digest §3.5)."""

    ue_service_id: ServiceId
    ue_credential_info: UECredentialInfo
    num_of_dereg_requests: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    dereg_requests: Annotated[
        list[Dereg], msgspec.Meta(min_length=1, max_length=10_000)
    ]
    msgin5g_service_id: ShortText | None = None


class BulkDeregResp(_Message, tag="BULKDEREGRESP", frozen=True):
    """Bulk de-registration response (2.04 piggybacked)."""

    num_of_dereg_responses: NonNegative
    dereg_responses: list[DeregResult]


Layer2Id = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F]{6}\Z")]
"""PC5 Layer-2 ID: 24 bits as 6 hex digits (digest §1.2)."""


class AppReg(_Message, tag="APPREG", frozen=True):
    """Application registration at a Gateway UE (MSGin5G-5, digest §3.6.1).

    ``ueCredentialInfo`` is a project addition: with ``ueServiceId`` it lets the
    gateway register that UE Service ID with the server on the application's behalf.
    """

    application_id: Annotated[
        str, msgspec.Meta(min_length=1, max_length=255, pattern=f"^[^{_CONTROLS}]+\\Z")
    ]
    layer2_id: Layer2Id
    ue_service_id: ServiceId | None = None
    ue_credential_info: UECredentialInfo | None = None
    msgin5g_service_id: ShortText | None = None


class AppRegResp(_Message, tag="APPREGRESP", frozen=True):
    """Piggybacked answer to ``APPREG`` (digest §3.6.1)."""

    registration_result: str
    application_id: str | None = None
    failure_cause: str | None = None


class AppDereg(_Message, tag="APPDEREG", frozen=True):
    """Application de-registration at a Gateway UE (digest §3.6.1)."""

    application_id: Annotated[
        str, msgspec.Meta(min_length=1, max_length=255, pattern=f"^[^{_CONTROLS}]+\\Z")
    ]
    layer2_id: Layer2Id | None = None
    ue_service_id: ServiceId | None = None
    msgin5g_service_id: ShortText | None = None


class AppDeregResp(_Message, tag="APPDEREGRESP", frozen=True):
    """Piggybacked answer to ``APPDEREG``."""

    deregistration_result: str
    application_id: str | None = None
    failure_cause: str | None = None


class GwReg(_Message, tag="GWREG", frozen=True):
    """Registration to gateway services (MSGin5G-6, digest §3.6.2)."""

    layer2_id: Layer2Id
    ue_service_id: ServiceId
    required_packet_size: Positive
    msgin5g_ue_id: ShortText | None = None
    msgin5g_service_id: ShortText | None = None


class GwRegResp(_Message, tag="GWREGRESP", frozen=True):
    """Piggybacked answer to ``GWREG``: the gateway's identity and packet size."""

    layer2_id: str
    ue_service_id: str
    allowed_packet_size: NonNegative
    registration_result: str
    msgin5g_ue_id: str | None = None
    failure_cause: str | None = None


class GwDereg(_Message, tag="GWDEREG", frozen=True):
    """Leave a gateway (digest §3.6.2)."""

    ue_service_id: ServiceId
    layer2_id: Layer2Id | None = None
    msgin5g_service_id: ShortText | None = None


class GwDeregResp(_Message, tag="GWDEREGRESP", frozen=True):
    """Piggybacked answer to ``GWDEREG``."""

    ue_service_id: str
    deregistration_result: str


class LocalMsg(_Message, tag="MSG", frozen=True):
    """``MSG`` from a constrained UE to its gateway, Annex A.3 form (digest §3.17.3).

    Not part of the MSGin5G-1 unions (it shares the ``MSG`` tag with :class:`Msg`).
    """

    target_address: ServiceId
    message_id: MessageId
    payload: bytes
    target_type: ShortText = "UE"
    application_id: ShortText | None = None
    delivery_status_required: bool = False
    priority_type: PriorityType | None = None
    msgin5g_service_id: ShortText | None = None


class LocalImdn(_Message, tag="IMDN", frozen=True):
    """``IMDN`` from a constrained UE to its gateway, Annex A.3 form (§3.17.3)."""

    target_address: ServiceId
    message_id: MessageId
    delivery_status: ReportDeliveryStatus
    target_type: ShortText = "UE"
    failure_cause: ShortText | None = None
    application_id: ShortText | None = None
    msgin5g_service_id: ShortText | None = None


class ConfReq(_Message, tag="CONFREQ", frozen=True):
    """Request for the MSGin5G UE configuration document (digest §3.1, project form).

    The stage-3 carriage (SEAL CM over HTTP/XCAP) is out of scope; the project
    serves the same content on ``/msgin5g/config`` (see docs/gateway.md).
    """

    ue_service_id: ServiceId
    ue_credential_info: UECredentialInfo
    msgin5g_ue_id: ShortText | None = None
    msgin5g_ue_info: dict[str, str] | None = None
    msgin5g_service_id: ShortText | None = None


class ConfResp(_Message, tag="CONFRESP", frozen=True):
    """The configuration document's elements (TS 24.538 §7.2.3) or a failure."""

    ue_service_id: str
    result: str
    msgin5g_server_address: str | None = None
    segment_size: NonNegative | None = None
    failure_cause: str | None = None


class BulkConfReq(_Message, tag="BULKCONFREQ", frozen=True):
    """Bulk configuration by a Gateway UE (TS 23.554 §8.1.4, project form)."""

    ue_service_id: ServiceId
    ue_credential_info: UECredentialInfo
    num_of_conf_requests: Annotated[int, msgspec.Meta(ge=1, le=10_000)]
    conf_requests: Annotated[
        list[ConfReq], msgspec.Meta(min_length=1, max_length=10_000)
    ]
    msgin5g_service_id: ShortText | None = None


class BulkConfResp(_Message, tag="BULKCONFRESP", frozen=True):
    """Per-device configurations, in request order."""

    num_of_conf_responses: NonNegative
    conf_responses: list[ConfResp]


TopicName = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=255, pattern=f"^[^+#{_CONTROLS}]+\\Z"),
]
"""Messaging Topic: 1-255 chars, no ``+``/``#`` (digest §1.2), no control characters."""


class TopicResult(_Element, frozen=True):
    """Per-topic outcome in ``TOPICSUBRESP``/``TOPICUNSUBRESP`` (digest §3.13.2)."""

    messaging_topic: str
    result: str
    failure_cause: str | None = None


class TopicSub(_Message, tag="TOPICSUB", frozen=True):
    """Messaging topic subscription, POST form (TS 23.554 §8.8.1, digest §3.13.2)."""

    originating_ue_service_id: ServiceId
    messaging_topics: Annotated[
        list[TopicName], msgspec.Meta(min_length=1, max_length=100)
    ]
    expiration: datetime | None = None
    msgin5g_service_id: ShortText | None = None


class TopicSubResp(_Message, tag="TOPICSUBRESP", frozen=True):
    """Subscription response (piggybacked 2.04)."""

    originating_ue_service_id: str
    topic_results: list[TopicResult]
    expiration: datetime | None = None


class TopicUnsub(_Message, tag="TOPICUNSUB", frozen=True):
    """Unsubscription; an empty list means every topic of the subscriber."""

    originating_ue_service_id: ServiceId
    messaging_topics: Annotated[list[TopicName], msgspec.Meta(max_length=100)] = []
    msgin5g_service_id: ShortText | None = None


class TopicUnsubResp(_Message, tag="TOPICUNSUBRESP", frozen=True):
    """Unsubscription response (piggybacked 2.04)."""

    originating_ue_service_id: str
    topic_results: list[TopicResult]


DownlinkItem = Msg | Imdn | AggMsg | AggImdn | SegRec | SegConfir
"""Anything the server pushes to a client with a CON POST."""


class ErrorBody(msgspec.Struct, rename="camel", omit_defaults=True, frozen=True):
    """JSON diagnostic carried by CoAP 4.xx/5.xx responses (digest §5.1)."""

    message_type: str
    failure_cause: str
    detail: str | None = None
