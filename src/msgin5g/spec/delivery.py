"""Message types and delivery enumerations (TS 24.538 §7.1, TS 29.538 enums).

See ``protocol-ts24538.md`` §4 (Message Type values) and §5.3.
"""

from enum import IntEnum, StrEnum

__all__ = [
    "DEFAULT_PRIORITY",
    "MSGIN5G_SERVICE_ID",
    "AuthType",
    "DeliveryStatus",
    "MessageType",
    "PriorityRank",
    "PriorityType",
    "ReportDeliveryStatus",
]

MSGIN5G_SERVICE_ID = "org.3gpp.msgin5g"
"""Value of the MSGin5G service identifier (PROJECT CHOICE, digest §1.2)."""


class MessageType(StrEnum):
    """``messageType`` values (digest §4.1-§4.3); case-sensitive."""

    REG = "REG"
    REGRESP = "REGRESP"
    DEREG = "DEREG"
    DEREGRESP = "DEREGRESP"
    MSG = "MSG"
    MSGRESP = "MSGRESP"
    IMDN = "IMDN"
    SEGREC = "SEGREC"
    SEGCONFIR = "SEGCONFIR"
    BULKREG = "BULKREG"
    BULKREGRESP = "BULKREGRESP"
    BULKDEREG = "BULKDEREG"
    BULKDEREGRESP = "BULKDEREGRESP"
    AGGMSG = "AGGMSG"
    AGGIMDN = "AGGIMDN"
    TOPICSUB = "TOPICSUB"
    TOPICSUBRESP = "TOPICSUBRESP"
    TOPICUNSUB = "TOPICUNSUB"
    TOPICUNSUBRESP = "TOPICUNSUBRESP"
    APPREG = "APPREG"
    APPREGRESP = "APPREGRESP"
    APPDEREG = "APPDEREG"
    APPDEREGRESP = "APPDEREGRESP"
    GWREG = "GWREG"
    GWREGRESP = "GWREGRESP"
    GWDEREG = "GWDEREG"
    GWDEREGRESP = "GWDEREGRESP"
    MSGUPD = "MSGUPD"


class DeliveryStatus(StrEnum):
    """``deliveryStatus`` of an ``MSGRESP`` (TS 29.538 ``DeliveryStatus`` + project values)."""

    DELY_ACCEPTED = "DELY_ACCEPTED"
    DELY_STORED = "DELY_STORED"
    DELY_FAILED = "DELY_FAILED"
    DELY_REJECTED = "DELY_REJECTED"


class ReportDeliveryStatus(StrEnum):
    """``deliveryStatus`` of an ``IMDN`` (TS 29.538 ``ReportDeliveryStatus``)."""

    REPT_DELY_SUCCESS = "REPT_DELY_SUCCESS"
    REPT_DELY_FAILED = "REPT_DELY_FAILED"


class PriorityType(StrEnum):
    """``priorityType`` (TS 29.538 ``Priority``)."""

    HIGH = "HIGH"
    MIDDLE = "MIDDLE"
    LOW = "LOW"


class PriorityRank(IntEnum):
    """Sort key for stored messages: lower is delivered first (TS 23.554 §8.3.6)."""

    HIGH = 0
    MIDDLE = 1
    LOW = 2


DEFAULT_PRIORITY = PriorityType.MIDDLE
"""Priority of a message without ``priorityType`` (PROJECT CHOICE, digest §3.7.2)."""


class AuthType(StrEnum):
    """``ueCredentialInfo.authType`` values (digest §3.2.4)."""

    PSK_TOKEN = "PSK_TOKEN"  # noqa: S105 - a type name, not a secret
    AKMA = "AKMA"
    NONE = "NONE"
