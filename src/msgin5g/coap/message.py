"""Sans-I/O CoAP message codec: ``bytes`` <-> :class:`CoapMessage`.

What: the binary message format of RFC 7252 §3 (header, token, options with
delta/length nibbles and their 1- and 2-byte extensions, payload marker) plus
small helpers for uint options (§3.2) and Uri-Path (§6.4).

RFC clauses enforced by :meth:`CoapMessage.decode` (every violation is a
"message format error", raised as :class:`CoapDecodeError`):
    * §3: fewer than 4 bytes; Version != 1; TKL 9-15 (reserved); token
      truncated.
    * §3.1: option delta or length nibble 15 when the byte is not the payload
      marker 0xFF (reserved); extended delta/length running past the end; option
      value running past the end; payload marker followed by a zero-length
      payload.
    * §4.1: an Empty message (code 0.00) with anything after the Message ID.
    * §12.1: codes of the reserved classes 1, 6 and 7.
    * Option numbers above 65535 (the registry is 16 bits wide).

:class:`CoapDecodeError` carries ``header = (type, code, mid)`` whenever the
first four bytes were readable and the version was 1, so that the message layer
can answer a malformed CON with RST (§4.2) and silently drop anything else.

Design choices:
    * The decoder is one hand-rolled loop over the byte string (no ``struct``
      per option, no intermediate objects); options are kept as a flat list of
      ``(number, raw value bytes)`` in wire order. Interpretation (uint,
      string) is lazy, via :meth:`CoapMessage.uint_opt` and friends.
    * The extended delta/length forms are canonical (13 + 1 byte covers
      13..268, 14 + 2 bytes covers 269..65804), so every decodable datagram
      re-encodes to the same bytes; the fuzz tests rely on this.
    * :class:`CoapMessage` is a slotted dataclass, not frozen: building and
      passing it must be cheap, and the exchange layer never mutates it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

from msgin5g.coap.numbers import OptionNumber, Type
from msgin5g.errors import DecodeError, EncodeError

__all__ = [
    "CoapDecodeError",
    "CoapMessage",
    "decode_uint",
    "encode_uint",
    "make_response",
    "uri_path_options",
]

_URI_PATH = int(OptionNumber.URI_PATH)
_OBSERVE = int(OptionNumber.OBSERVE)
_CONTENT_FORMAT = int(OptionNumber.CONTENT_FORMAT)
_ACK = int(Type.ACK)
_NON = int(Type.NON)
_CON = int(Type.CON)
_RESERVED_CLASSES = frozenset((1, 6, 7))
_by_number = itemgetter(0)


class CoapDecodeError(DecodeError):
    """A datagram is not a well-formed CoAP message (RFC 7252 message format error).

    Attributes:
        header: ``(mtype, code, mid)`` when the 4-byte header was readable and the
            version was 1, else None. Lets the caller RST a malformed CON.
    """

    def __init__(self, detail: str, header: tuple[int, int, int] | None = None) -> None:
        super().__init__(detail)
        self.header = header


def encode_uint(value: int) -> bytes:
    """Encode an unsigned integer option value in the minimal number of bytes.

    Args:
        value: a non-negative integer; 0 encodes to ``b""`` (RFC 7252 §3.2).

    Returns:
        big-endian bytes without leading zero bytes.

    Raises:
        EncodeError: the value is negative.
    """
    if value < 0:
        raise EncodeError(f"uint option value {value} is negative")
    return value.to_bytes((value.bit_length() + 7) >> 3, "big")


def decode_uint(data: bytes) -> int:
    """Decode a uint option value (big-endian, leading zeros allowed)."""
    return int.from_bytes(data, "big")


def uri_path_options(path: tuple[str, ...]) -> list[tuple[int, bytes]]:
    """Return Uri-Path options for ``path`` (one option per segment, UTF-8)."""
    return [(_URI_PATH, segment.encode()) for segment in path]


@dataclass(slots=True, init=False)
class CoapMessage:
    """One CoAP message (RFC 7252 §3).

    Attributes:
        mtype: message type (:class:`~msgin5g.coap.numbers.Type`).
        code: raw code byte (:class:`~msgin5g.coap.numbers.Code`).
        mid: Message ID, 0-65535.
        token: 0-8 bytes.
        options: ``(number, value)`` pairs; the order of options with the same
            number is significant and preserved; :meth:`encode` sorts stably by
            number.
        payload: the payload (may be empty).
    """

    mtype: int
    code: int
    mid: int = 0
    token: bytes = b""
    options: list[tuple[int, bytes]] = field(default_factory=list)
    payload: bytes = b""

    def __init__(  # noqa: PLR0917 - the fields in order, as the dataclass had
        self,
        mtype: int,
        code: int,
        mid: int = 0,
        token: bytes = b"",
        options: list[tuple[int, bytes]] | None = None,
        payload: bytes = b"",
    ) -> None:
        # written out (init=False): several are built per message, and the
        # __init__ dataclasses generates stays interpreted under mypyc
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = [] if options is None else options
        self.payload = payload

    def encode(self) -> bytes:
        """Serialise the message.

        Returns:
            the datagram.

        Raises:
            EncodeError: the message cannot be represented (bad type, code or
                Message ID, token longer than 8 bytes, an Empty message with
                token/options/payload, an option number or length out of range).
        """
        mtype = self.mtype
        code = self.code
        mid = self.mid
        token = self.token
        options = self.options
        payload = self.payload
        tkl = len(token)
        if not 0 <= mtype <= 3:
            raise EncodeError(f"invalid message type {mtype}")
        if not 0 <= code <= 255 or (code >> 5) in _RESERVED_CLASSES:
            raise EncodeError(f"invalid code {code}")
        if not 0 <= mid <= 0xFFFF:
            raise EncodeError(f"message ID {mid} out of range")
        if tkl > 8:
            raise EncodeError(f"token of {tkl} bytes is longer than 8")
        if code == 0 and (tkl or options or payload):
            raise EncodeError("an Empty message has no token, options or payload")
        out = bytearray((0x40 | mtype << 4 | tkl, code, mid >> 8, mid & 0xFF))
        out += token
        if options:
            _encode_options(out, options)
        if payload:
            out.append(0xFF)
            out += payload
        return bytes(out)

    @staticmethod
    def decode(data: bytes | bytearray | memoryview) -> CoapMessage:
        """Parse a datagram.

        Args:
            data: the datagram.

        Returns:
            the message.

        Raises:
            CoapDecodeError: any message format error (see the module docstring).
        """
        # compiled (mypyc), a parameter typed bytes accepts bytes only: a bytearray
        # is copied here, once, and _decode works on bytes
        return _decode(data if isinstance(data, bytes) else bytes(data))

    def opt(self, number: int) -> bytes | None:
        """Return the value of the first option ``number``, or None."""
        for num, value in self.options:
            if num == number:
                return value
        return None

    def opts(self, number: int) -> list[bytes]:
        """Return the values of all options ``number``, in order."""
        return [value for num, value in self.options if num == number]

    def uint_opt(self, number: int) -> int | None:
        """Return the first option ``number`` decoded as uint, or None."""
        for num, value in self.options:
            if num == number:
                return int.from_bytes(value, "big")
        return None

    @property
    def uri_path(self) -> tuple[str, ...]:
        """The Uri-Path segments, UTF-8 decoded.

        Raises:
            CoapDecodeError: a segment is not valid UTF-8.
        """
        try:
            return tuple(v.decode() for n, v in self.options if n == _URI_PATH)
        except UnicodeDecodeError as exc:
            raise CoapDecodeError(
                "Uri-Path is not valid UTF-8", (self.mtype, self.code, self.mid)
            ) from exc

    @property
    def content_format(self) -> int | None:
        """The Content-Format option as int, or None when absent."""
        return self.uint_opt(_CONTENT_FORMAT)

    @property
    def observe(self) -> int | None:
        """The Observe option (RFC 7641) as int, or None when absent.

        In a GET: 0 registers, 1 deregisters; in a response: the sequence number.
        """
        return self.uint_opt(_OBSERVE)


def _decode(data: bytes) -> CoapMessage:  # noqa: C901, PLR0912, PLR0915
    n = len(data)
    if n < 4:
        raise CoapDecodeError("shorter than the 4-byte header")
    b0 = data[0]
    if b0 >> 6 != 1:
        raise CoapDecodeError(f"unsupported CoAP version {b0 >> 6}")
    mtype = (b0 >> 4) & 3
    code = data[1]
    mid = data[2] << 8 | data[3]
    tkl = b0 & 0x0F
    if tkl > 8:
        raise CoapDecodeError(f"reserved token length {tkl}", (mtype, code, mid))
    if (code >> 5) in _RESERVED_CLASSES:
        raise CoapDecodeError(f"reserved code class {code >> 5}", (mtype, code, mid))
    if code == 0:
        if n > 4 or tkl:
            raise CoapDecodeError(
                "Empty message with a token or bytes after the Message ID",
                (mtype, code, mid),
            )
        return CoapMessage(mtype, 0, mid)
    pos = 4 + tkl
    if pos > n:
        raise CoapDecodeError("token truncated", (mtype, code, mid))
    token = data[4:pos]
    options: list[tuple[int, bytes]] = []
    payload = b""
    number = 0
    while pos < n:
        byte = data[pos]
        pos += 1
        if byte == 0xFF:
            if pos == n:
                raise CoapDecodeError(
                    "payload marker without payload", (mtype, code, mid)
                )
            payload = data[pos:]
            break
        delta = byte >> 4
        length = byte & 0x0F
        if delta >= 13:
            if delta == 13:
                if pos >= n:
                    raise CoapDecodeError(
                        "extended option delta truncated", (mtype, code, mid)
                    )
                delta = data[pos] + 13
                pos += 1
            elif delta == 14:
                if pos + 1 >= n:
                    raise CoapDecodeError(
                        "extended option delta truncated", (mtype, code, mid)
                    )
                delta = (data[pos] << 8 | data[pos + 1]) + 269
                pos += 2
            else:
                raise CoapDecodeError("reserved option delta 15", (mtype, code, mid))
        if length >= 13:
            if length == 13:
                if pos >= n:
                    raise CoapDecodeError(
                        "extended option length truncated", (mtype, code, mid)
                    )
                length = data[pos] + 13
                pos += 1
            elif length == 14:
                if pos + 1 >= n:
                    raise CoapDecodeError(
                        "extended option length truncated", (mtype, code, mid)
                    )
                length = (data[pos] << 8 | data[pos + 1]) + 269
                pos += 2
            else:
                raise CoapDecodeError("reserved option length 15", (mtype, code, mid))
        number += delta
        if number > 0xFFFF:
            raise CoapDecodeError(
                f"option number {number} out of range", (mtype, code, mid)
            )
        end = pos + length
        if end > n:
            raise CoapDecodeError("option value truncated", (mtype, code, mid))
        options.append((number, data[pos:end]))
        pos = end
    return CoapMessage(mtype, code, mid, token, options, payload)


def _encode_options(out: bytearray, options: list[tuple[int, bytes]]) -> None:
    """Append ``options`` (stable-sorted by number) in delta encoding."""
    count = len(options)
    # two options in order (Uri-Path + Content-Format, a request to
    # /msgin5g) need no sort: the common case skips sorted() and its key calls
    if count > 2 or (count == 2 and options[0][0] > options[1][0]):
        options = sorted(options, key=_by_number)
    last = 0
    for number, value in options:
        delta = number - last
        if delta < 0 or number > 0xFFFF:
            raise EncodeError(f"option number {number} out of range")
        last = number
        length = len(value)
        if delta < 13:
            if length < 13:
                out.append(delta << 4 | length)
            else:
                _put_long(out, delta << 4, length, b"")
        elif delta < 269:
            if length < 13:
                out.append(0xD0 | length)
                out.append(delta - 13)
            else:
                _put_long(out, 0xD0, length, (delta - 13).to_bytes(1, "big"))
        else:
            ext = (delta - 269).to_bytes(2, "big")
            if length < 13:
                out.append(0xE0 | length)
                out += ext
            else:
                _put_long(out, 0xE0, length, ext)
        out += value


def _put_long(out: bytearray, first: int, length: int, ext: bytes) -> None:
    """Append an option header whose length needs an extension byte or two."""
    if length < 269:
        out.append(first | 13)
        out += ext
        out.append(length - 13)
    elif length <= 65804:
        out.append(first | 14)
        out += ext
        out += (length - 269).to_bytes(2, "big")
    else:
        raise EncodeError(f"option value of {length} bytes is too long")


def make_response(
    request: CoapMessage,
    code: int,
    payload: bytes = b"",
    *,
    content_format: int | None = None,
    options: list[tuple[int, bytes]] | None = None,
) -> CoapMessage:
    """Build a response to ``request`` (token copied; type and MID set later).

    The message layer (:meth:`MessageLayer.respond`) decides between a
    piggybacked ACK, a separate CON or a NON and fills ``mtype``/``mid``.

    Args:
        request: the request being answered.
        code: response code.
        payload: response body.
        content_format: adds a Content-Format option when not None.
        options: further options (copied).

    Returns:
        the response message.
    """
    opts = list(options) if options else []
    if content_format is not None:
        opts.append((_CONTENT_FORMAT, encode_uint(content_format)))
    mtype = _ACK if request.mtype == _CON else _NON
    return CoapMessage(mtype, code, 0, request.token, opts, payload)
