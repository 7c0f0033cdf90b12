"""The single exception tree of msgin5g.

Every exception we raise on purpose derives from :class:`MSGin5GError`::

    MSGin5GError                      every exception we raise on purpose
    ├── ConfigError                   invalid configuration; names the offending key
    ├── CodecError
    │   ├── DecodeError               ANY malformed input; the only exception decoders raise
    │   │   └── UnsupportedMessageType  well-formed JSON with an unknown ``messageType``
    │   └── EncodeError               model not representable
    ├── ServiceError                  a domain outcome; .cause (FailureCause) and .detail
    │   ├── InvalidRequest
    │   ├── NotRegistered             unknown or unregistered originator
    │   ├── NotAuthorized
    │   ├── PayloadTooLarge
    │   ├── RecipientUnreachable      not deliverable now
    │   ├── DeliveryRejected          the recipient refused the message (4.xx)
    │   ├── UpstreamError             a NEF refused or garbled an answer
    │   └── Overloaded                back-pressure
    ├── WorkerError                   a worker process of ``serve --workers`` failed
    ├── StorageError                  a backend failed; driver errors chained with ``from``
    │   ├── StorageUnavailable
    │   └── StorageConflict
    └── TransportError                client side: the peer could not be reached or refused
        ├── ConnectError
        │   └── BrokerUnreachable     the MQTT broker is not there or refused us
        ├── RequestTimeout            retransmissions exhausted
        ├── PortUnreachable           ICMP port unreachable: nothing listens there
        ├── ServerUnreachable         the HTTP server cannot be reached
        ├── RemoteReset               the peer answered with a CoAP RST
        └── RemoteError               the peer answered with an error code

Domain errors know nothing about wire codes: the CoAP transport maps them in
``msgin5g.transports.coap.codes``.
"""

from msgin5g.spec.causes import FailureCause

__all__ = [
    "BrokerUnreachable",
    "CodecError",
    "ConfigError",
    "ConnectError",
    "DecodeError",
    "DeliveryRejected",
    "EncodeError",
    "InvalidRequest",
    "MSGin5GError",
    "NotAuthorized",
    "NotRegistered",
    "Overloaded",
    "PayloadTooLarge",
    "PortUnreachable",
    "RecipientUnreachable",
    "RemoteError",
    "RemoteReset",
    "RequestTimeout",
    "ServerUnreachable",
    "ServiceError",
    "StorageConflict",
    "StorageError",
    "StorageUnavailable",
    "TransportError",
    "UnsupportedMessageType",
    "UpstreamError",
    "WorkerError",
]


class MSGin5GError(Exception):
    """Root of every exception msgin5g raises on purpose."""

    def hint(self) -> str | None:
        """Return advice for a CLI user, or None."""
        return None


class ConfigError(MSGin5GError):
    """Invalid configuration; the message starts with the offending key path."""


class CodecError(MSGin5GError):
    """A wire format could not be read or written."""


class DecodeError(CodecError):
    """Malformed input. ``member`` names the offending JSON member when known."""

    def __init__(self, detail: str, *, member: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.member = member


class UnsupportedMessageType(DecodeError):
    """The payload is a JSON object whose ``messageType`` this receiver does not handle."""


class EncodeError(CodecError):
    """A value cannot be represented on the wire."""


class ServiceError(MSGin5GError):
    """A domain outcome that stops a procedure.

    Attributes:
        cause: the ``failureCause`` value that describes it on the wire.
        detail: human-readable text (never contains secrets).
    """

    default_cause: FailureCause = FailureCause.INTERNAL_ERROR

    def __init__(self, detail: str = "", *, cause: FailureCause | None = None) -> None:
        super().__init__(detail or self.__class__.__name__)
        self.detail = detail
        self.cause = cause if cause is not None else self.default_cause


class InvalidRequest(ServiceError):
    """The request is well-formed but semantically invalid."""

    default_cause = FailureCause.INVALID_MESSAGE


class NotRegistered(ServiceError):
    """The originator is not registered (or not from its registered address)."""

    default_cause = FailureCause.NOT_REGISTERED


class NotAuthorized(ServiceError):
    """The originator may not do this."""

    default_cause = FailureCause.NOT_AUTHORIZED


class PayloadTooLarge(ServiceError):
    """The payload exceeds the configured limit."""

    default_cause = FailureCause.PAYLOAD_TOO_LARGE


class RecipientUnreachable(ServiceError):
    """The recipient cannot be reached now."""

    default_cause = FailureCause.RECIPIENT_NOT_REACHABLE


class DeliveryRejected(ServiceError):
    """The recipient answered a delivery with an error: retrying will not help."""

    default_cause = FailureCause.RECIPIENT_NOT_REACHABLE


class UpstreamError(ServiceError):
    """A network function the server calls (a NEF) refused or garbled an answer."""

    default_cause = FailureCause.INTERNAL_ERROR


class Overloaded(ServiceError):
    """The server sheds load; ``retry_after`` says when to try again (seconds)."""

    default_cause = FailureCause.SERVER_CONGESTION

    def __init__(self, detail: str = "", *, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class WorkerError(MSGin5GError):
    """A worker process of ``msgin5g serve --workers N`` could not start, or kept dying.

    The message is the worker's own error when it reported one; ``hint`` is
    the worker's hint, if any.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self._hint = hint

    def hint(self) -> str | None:
        return self._hint


class StorageError(MSGin5GError):
    """A storage backend failed."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached or opened."""


class StorageConflict(StorageError):
    """A write conflicted with existing data."""


class TransportError(MSGin5GError):
    """The peer could not be reached, or refused the exchange."""


class ConnectError(TransportError):
    """The local socket could not be opened or the address is invalid."""

    def hint(self) -> str | None:
        return "check the host and port, and that no other process uses the port"


class BrokerUnreachable(ConnectError):
    """The MQTT broker could not be reached or refused the connection (docs/mqtt.md)."""

    def hint(self) -> str | None:
        return (
            "is the MQTT broker running there? check the URL (mqtt.url, --mqtt or "
            "--server), the user name and password, and the broker's log"
        )


class RequestTimeout(TransportError):
    """No answer after all CoAP retransmissions."""

    def hint(self) -> str | None:
        return "is an MSGin5G server running at that address?"


class PortUnreachable(TransportError):
    """The peer's host answered ICMP port unreachable: nothing listens on that port."""

    def hint(self) -> str | None:
        return (
            "is an MSGin5G server running at that address? "
            "(--server URI or MSGIN5G_SERVER)"
        )


class ServerUnreachable(TransportError):
    """The HTTP server (TS 29.538 APIs) could not be reached or did not answer."""

    def hint(self) -> str | None:
        return (
            "is 'msgin5g serve' running? give its REST address with "
            "--server http://HOST:PORT (the --http of serve)"
        )


class RemoteReset(TransportError):
    """The peer answered with a CoAP RST (it holds no state for the exchange)."""


class RemoteError(TransportError):
    """The peer answered with an error response (CoAP 4.xx/5.xx).

    Shaped like httpx's ``HTTPStatusError``: it carries the whole answer.

    Attributes:
        code: the CoAP code byte (e.g. 128 for 4.00).
        status: the same as "c.dd" text (e.g. "4.00").
        payload: the response body as received.
        cause: the ``failureCause`` of the JSON error body, when there is one.
        body: the decoded error body (an ``ErrorBody``), or None.
    """

    def __init__(
        self,
        code: int | str,
        payload: bytes = b"",
        *,
        cause: str | None = None,
        body: object = None,
    ) -> None:
        if isinstance(code, str):
            major, _, minor = code.partition(".")
            code = (int(major) << 5) | int(minor or 0)
        status = f"{code >> 5}.{code & 0x1F:02d}"
        text = payload.decode("utf-8", "replace")[:200]
        super().__init__(f"{status} {text}".strip())
        self.code = code
        self.status = status
        self.payload = payload
        self.cause = cause
        self.body = body

    @property
    def is_client_error(self) -> bool:
        """A 4.xx answer: the request itself was refused (repeating it won't help)."""
        return 128 <= self.code < 160
