"""CoAP numbers: message types, codes, option numbers, content formats, timing.

What: the constants of RFC 7252 and its IANA registries that the engine needs,
plus :class:`TransmissionParameters` (RFC 7252 §4.8) with the derived times of
§4.8.2.

RFC clauses:
    * §3 (message format): :class:`Type`.
    * §5.2 and §12.1 (codes, "c.dd" notation): :class:`Code`, :func:`code_str`,
      :func:`is_request`, :func:`is_response`, :func:`is_success`.
    * §5.4.1 and §12.2 (options, critical = odd number): :class:`OptionNumber`,
      :func:`is_critical`, :data:`KNOWN_OPTIONS`. Block1/Block2/Size2 (RFC 7959)
      and Observe (RFC 7641) are listed so that they are *recognised* (an
      endpoint that ignores them still must not answer 4.02 for Block options
      it understands enough to reject); the engine implements neither.
    * §12.3 (content formats): :class:`ContentFormat`.
    * §4.8 and §4.8.2 (transmission parameters and derived times).

Design choices:
    * ``IntEnum`` everywhere, so a plain ``int`` taken from the wire compares
      equal to the member without conversion on the hot path.
    * :class:`TransmissionParameters` is a frozen value object; tests override
      fields (e.g. ``ack_timeout=0.05``) and the derived times follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "KNOWN_OPTIONS",
    "Code",
    "ContentFormat",
    "OptionNumber",
    "TransmissionParameters",
    "Type",
    "code_str",
    "is_critical",
    "is_request",
    "is_response",
    "is_success",
]


class Type(IntEnum):
    """Message type (RFC 7252 §3, the 2-bit T field)."""

    CON = 0
    NON = 1
    ACK = 2
    RST = 3


class Code(IntEnum):
    """Method and response codes (RFC 7252 §12.1; FETCH/PATCH/iPATCH RFC 8132).

    The value is the raw 8-bit code byte ``class << 5 | detail``.
    """

    EMPTY = 0
    GET = 1
    POST = 2
    PUT = 3
    DELETE = 4
    FETCH = 5
    PATCH = 6
    IPATCH = 7
    CREATED = 65
    DELETED = 66
    VALID = 67
    CHANGED = 68
    CONTENT = 69
    CONTINUE = 95
    BAD_REQUEST = 128
    UNAUTHORIZED = 129
    BAD_OPTION = 130
    FORBIDDEN = 131
    NOT_FOUND = 132
    METHOD_NOT_ALLOWED = 133
    NOT_ACCEPTABLE = 134
    REQUEST_ENTITY_INCOMPLETE = 136
    CONFLICT = 137
    PRECONDITION_FAILED = 140
    REQUEST_ENTITY_TOO_LARGE = 141
    UNSUPPORTED_CONTENT_FORMAT = 143
    INTERNAL_SERVER_ERROR = 160
    NOT_IMPLEMENTED = 161
    BAD_GATEWAY = 162
    SERVICE_UNAVAILABLE = 163
    GATEWAY_TIMEOUT = 164
    PROXYING_NOT_SUPPORTED = 165


def code_str(code: int) -> str:
    """Return the "c.dd" notation of a code byte (RFC 7252 §5.2).

    Args:
        code: the raw code byte (0-255).

    Returns:
        e.g. ``"2.04"`` for 68.
    """
    return f"{code >> 5}.{code & 0x1F:02d}"


def is_request(code: int) -> bool:
    """Return True for a method code (class 0, detail 1-31)."""
    return 1 <= code <= 31


def is_response(code: int) -> bool:
    """Return True for a response code (classes 2-5, i.e. 64-191)."""
    return 64 <= code <= 191


def is_success(code: int) -> bool:
    """Return True for a success response (class 2)."""
    return code >> 5 == 2


class OptionNumber(IntEnum):
    """Option numbers (RFC 7252 §12.2; Observe RFC 7641; Block RFC 7959)."""

    IF_MATCH = 1
    URI_HOST = 3
    ETAG = 4
    IF_NONE_MATCH = 5
    OBSERVE = 6
    URI_PORT = 7
    OSCORE = 9
    LOCATION_PATH = 8
    URI_PATH = 11
    CONTENT_FORMAT = 12
    MAX_AGE = 14
    URI_QUERY = 15
    ACCEPT = 17
    LOCATION_QUERY = 20
    BLOCK2 = 23
    BLOCK1 = 27
    SIZE2 = 28
    PROXY_URI = 35
    PROXY_SCHEME = 39
    SIZE1 = 60
    ECHO = 252


def is_critical(number: int) -> bool:
    """Return True if the option is critical (odd number, RFC 7252 §5.4.6)."""
    return bool(number & 1)


KNOWN_OPTIONS: frozenset[int] = frozenset(int(o) for o in OptionNumber)
"""Option numbers the engine recognises; other critical options get 4.02."""


class ContentFormat(IntEnum):
    """Content-Format numbers (RFC 7252 §12.3)."""

    TEXT_PLAIN = 0
    LINK_FORMAT = 40
    XML = 41
    OCTET_STREAM = 42
    EXI = 47
    JSON = 50
    CBOR = 60


@dataclass(frozen=True, slots=True)
class TransmissionParameters:
    """Transmission parameters of RFC 7252 §4.8 and the derived times of §4.8.2.

    Attributes:
        ack_timeout: initial retransmission timeout in seconds.
        ack_random_factor: the initial timeout is uniform in
            ``[ack_timeout, ack_timeout * ack_random_factor]``.
        max_retransmit: retransmissions of a CON before giving up.
        nstart: outstanding interactions allowed per peer.
        default_leisure: multicast leisure (unused; kept for completeness).
        probing_rate: bytes/s towards an unresponsive peer (unused).
        max_latency: assumed maximum one-way datagram latency (100 s).
    """

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4
    nstart: int = 1
    default_leisure: float = 5.0
    probing_rate: float = 1.0
    max_latency: float = 100.0

    @property
    def max_transmit_span(self) -> float:
        """Time from first transmission to last retransmission (45 s default)."""
        return (
            self.ack_timeout * ((1 << self.max_retransmit) - 1) * self.ack_random_factor
        )

    @property
    def max_transmit_wait(self) -> float:
        """Time from first transmission until the sender gives up (93 s)."""
        return (
            self.ack_timeout
            * ((1 << (self.max_retransmit + 1)) - 1)
            * self.ack_random_factor
        )

    @property
    def processing_delay(self) -> float:
        """Time a node takes to turn a CON into an ACK (= ack_timeout)."""
        return self.ack_timeout

    @property
    def max_rtt(self) -> float:
        """Maximum round-trip time: ``2 * max_latency + processing_delay``."""
        return 2 * self.max_latency + self.processing_delay

    @property
    def exchange_lifetime(self) -> float:
        """How long a CON Message ID is remembered (247 s with defaults)."""
        return self.max_transmit_span + 2 * self.max_latency + self.processing_delay

    @property
    def non_lifetime(self) -> float:
        """How long a NON Message ID is remembered (145 s with defaults)."""
        return self.max_transmit_span + self.max_latency
