"""Error → CoAP response table (digest §5.1): the single mapping for MSGin5G-1.

Service errors that reach the CoAP edge (most application outcomes are carried
inside 2.0x payloads instead) and codec errors map to a CoAP code and the
``failureCause`` of the JSON diagnostic body. A unit test walks the whole
:class:`~msgin5g.errors.ServiceError` tree and checks every class has an entry.
"""

from msgin5g.coap.numbers import Code
from msgin5g.errors import (
    DecodeError,
    DeliveryRejected,
    InvalidRequest,
    MSGin5GError,
    NotAuthorized,
    NotRegistered,
    Overloaded,
    PayloadTooLarge,
    RecipientUnreachable,
    ServiceError,
    StorageError,
    UnsupportedMessageType,
    UpstreamError,
)
from msgin5g.spec.causes import FailureCause

__all__ = ["ERROR_CODES", "code_for"]

ERROR_CODES: dict[type[MSGin5GError], tuple[int, FailureCause]] = {
    UnsupportedMessageType: (Code.BAD_REQUEST, FailureCause.UNSUPPORTED_MESSAGE_TYPE),
    DecodeError: (Code.BAD_REQUEST, FailureCause.INVALID_MESSAGE),
    InvalidRequest: (Code.BAD_REQUEST, FailureCause.INVALID_MESSAGE),
    NotRegistered: (Code.FORBIDDEN, FailureCause.NOT_REGISTERED),
    NotAuthorized: (Code.FORBIDDEN, FailureCause.NOT_AUTHORIZED),
    PayloadTooLarge: (Code.REQUEST_ENTITY_TOO_LARGE, FailureCause.PAYLOAD_TOO_LARGE),
    RecipientUnreachable: (
        Code.SERVICE_UNAVAILABLE,
        FailureCause.RECIPIENT_NOT_REACHABLE,
    ),
    DeliveryRejected: (Code.INTERNAL_SERVER_ERROR, FailureCause.INTERNAL_ERROR),
    Overloaded: (Code.SERVICE_UNAVAILABLE, FailureCause.SERVER_CONGESTION),
    UpstreamError: (Code.BAD_GATEWAY, FailureCause.INTERNAL_ERROR),
    ServiceError: (Code.INTERNAL_SERVER_ERROR, FailureCause.INTERNAL_ERROR),
    StorageError: (Code.SERVICE_UNAVAILABLE, FailureCause.SERVER_CONGESTION),
}


def code_for(exc: MSGin5GError) -> tuple[int, FailureCause]:
    """The CoAP code and failure cause for an error (most specific class wins)."""
    for cls in type(exc).__mro__:
        entry = ERROR_CODES.get(cls)
        if entry is not None:
            return entry
    return Code.INTERNAL_SERVER_ERROR, FailureCause.INTERNAL_ERROR
