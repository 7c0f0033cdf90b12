"""Byte-exact vectors and error cases for msgin5g.coap.message (RFC 7252 §3)."""

from __future__ import annotations

import pytest

from msgin5g.coap import (
    CoapDecodeError,
    CoapMessage,
    Code,
    ContentFormat,
    OptionNumber,
    Type,
    code_str,
    decode_uint,
    encode_uint,
    is_critical,
    is_request,
    is_response,
    is_success,
    make_response,
    uri_path_options,
)
from msgin5g.coap.numbers import TransmissionParameters
from msgin5g.errors import DecodeError, EncodeError

VECTORS: list[tuple[str, CoapMessage, bytes]] = [
    ("empty CON", CoapMessage(Type.CON, Code.EMPTY), bytes((0x40, 0, 0, 0))),
    (
        "empty ACK",
        CoapMessage(Type.ACK, Code.EMPTY, mid=0xBEEF),
        bytes((0x60, 0, 0xBE, 0xEF)),
    ),
    (
        "empty RST",
        CoapMessage(Type.RST, Code.EMPTY, mid=7),
        bytes((0x70, 0, 0, 7)),
    ),
    (
        "CON GET token Uri-Path",
        CoapMessage(
            Type.CON,
            Code.GET,
            mid=0x1234,
            token=b"\x01\x02",
            options=uri_path_options(("temp",)),
        ),
        bytes((0x42, 0x01, 0x12, 0x34, 0x01, 0x02, 0xB4)) + b"temp",
    ),
    (
        "two path segments then Content-Format 50 and payload",
        CoapMessage(
            Type.NON,
            Code.POST,
            mid=1,
            options=[(11, b"a"), (11, b"bc"), (12, b"\x32")],
            payload=b"{}",
        ),
        bytes((0x50, 0x02, 0, 1, 0xB1))
        + b"a"
        + bytes((0x02,))
        + b"bc"
        + bytes((0x11, 0x32, 0xFF))
        + b"{}",
    ),
    (
        "delta 13 form (option 20)",
        CoapMessage(Type.CON, Code.GET, options=[(20, b"q")]),
        bytes((0x40, 1, 0, 0, 0xD1, 20 - 13)) + b"q",
    ),
    (
        "delta 14 form (option 2000)",
        CoapMessage(Type.CON, Code.GET, options=[(2000, b"v")]),
        bytes((0x40, 1, 0, 0, 0xE1)) + (2000 - 269).to_bytes(2, "big") + b"v",
    ),
    (
        "length 13 form (20-byte value)",
        CoapMessage(Type.CON, Code.GET, options=[(11, b"x" * 20)]),
        bytes((0x40, 1, 0, 0, 0xBD, 20 - 13)) + b"x" * 20,
    ),
    (
        "length 14 form (300-byte value)",
        CoapMessage(Type.CON, Code.GET, options=[(11, b"y" * 300)]),
        bytes((0x40, 1, 0, 0, 0xBE)) + (300 - 269).to_bytes(2, "big") + b"y" * 300,
    ),
    (
        "delta 13 and length 13 together",
        CoapMessage(Type.CON, Code.GET, options=[(20, b"z" * 13)]),
        bytes((0x40, 1, 0, 0, 0xDD, 7, 0)) + b"z" * 13,
    ),
    (
        "delta 14 and length 14 together",
        CoapMessage(Type.CON, Code.GET, options=[(400, b"w" * 269)]),
        bytes((0x40, 1, 0, 0, 0xEE))
        + (400 - 269).to_bytes(2, "big")
        + b"\0\0"
        + b"w" * 269,
    ),
    (
        "ACK 2.05 with 8-byte token and payload",
        CoapMessage(
            Type.ACK, Code.CONTENT, mid=0xFFFF, token=b"12345678", payload=b"hi"
        ),
        bytes((0x68, 0x45, 0xFF, 0xFF)) + b"12345678" + b"\xffhi",
    ),
    (
        "zero-length option value",
        CoapMessage(Type.CON, Code.GET, options=[(5, b"")]),
        bytes((0x40, 1, 0, 0, 0x50)),
    ),
]


@pytest.mark.parametrize(
    ("name", "message", "wire"), VECTORS, ids=[v[0] for v in VECTORS]
)
def test_message_encode_matches_vector(
    name: str, message: CoapMessage, wire: bytes
) -> None:
    assert message.encode() == wire


@pytest.mark.parametrize(
    ("name", "message", "wire"), VECTORS, ids=[v[0] for v in VECTORS]
)
def test_message_decode_matches_vector(
    name: str, message: CoapMessage, wire: bytes
) -> None:
    assert CoapMessage.decode(wire) == message
    assert CoapMessage.decode(bytearray(wire)) == message


def test_message_encode_matches_aiocoap() -> None:
    from aiocoap import Message
    from aiocoap.numbers import codes, types

    theirs_message = Message(
        code=codes.POST,
        uri_path=("msgin5g", "x"),
        content_format=50,
        payload=b'{"a":1}',
    )
    # (constructor arguments for these are deprecated in aiocoap)
    theirs_message.mid = 0x4321
    theirs_message.mtype = types.CON
    theirs_message.token = b"\xaa\xbb\xcc\xdd"
    theirs = theirs_message.encode()
    ours = CoapMessage(
        Type.CON,
        Code.POST,
        0x4321,
        b"\xaa\xbb\xcc\xdd",
        [*uri_path_options(("msgin5g", "x")), (12, encode_uint(50))],
        b'{"a":1}',
    ).encode()
    assert ours == theirs


def test_message_encode_sorts_options_stably() -> None:
    msg = CoapMessage(
        Type.CON, Code.POST, options=[(12, b"\x32"), (11, b"a"), (11, b"b")]
    )
    decoded = CoapMessage.decode(msg.encode())
    assert decoded.options == [(11, b"a"), (11, b"b"), (12, b"\x32")]
    assert decoded.uri_path == ("a", "b")


def test_message_accessors() -> None:
    msg = CoapMessage(
        Type.CON,
        Code.POST,
        options=[(11, b"a"), (11, "é".encode()), (12, b"\x32"), (14, b"\x01\x00")],
    )
    assert msg.uri_path == ("a", "é")
    assert msg.content_format == ContentFormat.JSON
    assert msg.opt(11) == b"a"
    assert msg.opt(99) is None
    assert msg.opts(11) == [b"a", "é".encode()]
    assert msg.uint_opt(OptionNumber.MAX_AGE) == 256
    assert msg.uint_opt(60) is None
    assert CoapMessage(Type.CON, Code.GET).content_format is None


def test_message_uri_path_invalid_utf8_raises_decode_error() -> None:
    msg = CoapMessage(Type.CON, Code.GET, mid=9, options=[(11, b"\xff\xfe")])
    with pytest.raises(CoapDecodeError) as info:
        _ = msg.uri_path
    assert info.value.header == (Type.CON, Code.GET, 9)


def test_uint_helpers() -> None:
    assert encode_uint(0) == b""
    assert encode_uint(1) == b"\x01"
    assert encode_uint(255) == b"\xff"
    assert encode_uint(256) == b"\x01\x00"
    assert encode_uint(2**32 - 1) == b"\xff" * 4
    assert decode_uint(b"") == 0
    assert decode_uint(b"\x00\x05") == 5
    with pytest.raises(EncodeError):
        encode_uint(-1)


def test_make_response_copies_token_and_sets_content_format() -> None:
    req = CoapMessage(Type.CON, Code.POST, mid=5, token=b"tk")
    resp = make_response(
        req, Code.CHANGED, b"{}", content_format=50, options=[(14, b"\x3c")]
    )
    assert resp.token == b"tk"
    assert resp.code == Code.CHANGED
    assert resp.payload == b"{}"
    assert resp.options == [(14, b"\x3c"), (12, b"\x32")]
    assert resp.mtype == Type.ACK
    non = make_response(CoapMessage(Type.NON, Code.GET), Code.CONTENT)
    assert non.mtype == Type.NON


def test_numbers_helpers() -> None:
    assert code_str(Code.CHANGED) == "2.04"
    assert code_str(Code.NOT_FOUND) == "4.04"
    assert code_str(Code.INTERNAL_SERVER_ERROR) == "5.00"
    assert is_request(Code.POST)
    assert not is_request(Code.EMPTY)
    assert not is_request(Code.CHANGED)
    assert is_response(Code.CONTENT)
    assert is_response(Code.PROXYING_NOT_SUPPORTED)
    assert not is_response(Code.GET)
    assert is_success(Code.CREATED)
    assert not is_success(Code.BAD_REQUEST)
    assert is_critical(OptionNumber.URI_PATH)
    assert not is_critical(OptionNumber.CONTENT_FORMAT)


def test_transmission_parameters_derived_times() -> None:
    p = TransmissionParameters()
    assert p.max_transmit_span == 45
    assert p.max_transmit_wait == 93
    assert p.max_latency == 100
    assert p.processing_delay == 2
    assert p.max_rtt == 202
    assert p.exchange_lifetime == 247
    assert p.non_lifetime == 145
    fast = TransmissionParameters(ack_timeout=0.05)
    assert fast.max_transmit_wait == pytest.approx(0.05 * 31 * 1.5)


HEADER_CON_POST = bytes((0x40, 0x02, 0x12, 0x34))

DECODE_ERRORS: list[tuple[str, bytes, tuple[int, int, int] | None]] = [
    ("empty datagram", b"", None),
    ("three bytes", b"\x40\x01\x00", None),
    ("version 0", bytes((0x00, 0x01, 0, 1)), None),
    ("version 2", bytes((0x80, 0x01, 0, 1)), None),
    ("version 3", bytes((0xC0, 0x01, 0, 1)), None),
    ("TKL 9", bytes((0x49, 0x02, 0x12, 0x34)) + b"x" * 9, (0, 2, 0x1234)),
    ("TKL 15", bytes((0x4F, 0x02, 0x12, 0x34)) + b"x" * 15, (0, 2, 0x1234)),
    ("token truncated", bytes((0x44, 0x02, 0x12, 0x34)) + b"abc", (0, 2, 0x1234)),
    ("option delta 15", HEADER_CON_POST + b"\xf1a", (0, 2, 0x1234)),
    ("option length 15", HEADER_CON_POST + b"\xbf", (0, 2, 0x1234)),
    ("extended delta 13 truncated", HEADER_CON_POST + b"\xd0", (0, 2, 0x1234)),
    ("extended delta 14 truncated", HEADER_CON_POST + b"\xe0\x01", (0, 2, 0x1234)),
    ("extended length 13 truncated", HEADER_CON_POST + b"\xbd", (0, 2, 0x1234)),
    ("extended length 14 truncated", HEADER_CON_POST + b"\xbe\x00", (0, 2, 0x1234)),
    ("option value truncated", HEADER_CON_POST + b"\xb4ab", (0, 2, 0x1234)),
    ("payload marker without payload", HEADER_CON_POST + b"\xff", (0, 2, 0x1234)),
    ("empty message with token", bytes((0x41, 0, 0, 1)) + b"t", (0, 0, 1)),
    ("empty message with TKL but no token", bytes((0x41, 0, 0, 1)), (0, 0, 1)),
    ("empty message with payload", bytes((0x60, 0, 0, 1)) + b"\xffp", (2, 0, 1)),
    ("empty message with option", bytes((0x70, 0, 0, 1, 0xB0)), (3, 0, 1)),
    ("code class 1", bytes((0x40, 0x20, 0, 1)), (0, 0x20, 1)),
    ("code class 6", bytes((0x50, 0xC0, 0, 1)), (1, 0xC0, 1)),
    ("code class 7", bytes((0x40, 0xFF, 0, 1)), (0, 0xFF, 1)),
    (
        "option number > 65535",
        HEADER_CON_POST + b"\xe0\xff\xff\xe0\xff\xff",
        (0, 2, 0x1234),
    ),
]


@pytest.mark.parametrize(
    ("name", "wire", "header"), DECODE_ERRORS, ids=[e[0] for e in DECODE_ERRORS]
)
def test_message_decode_rejects_format_error(
    name: str, wire: bytes, header: tuple[int, int, int] | None
) -> None:
    with pytest.raises(CoapDecodeError) as info:
        CoapMessage.decode(wire)
    assert isinstance(info.value, DecodeError)
    assert info.value.header == header


ENCODE_ERRORS: list[tuple[str, CoapMessage]] = [
    ("token of 9 bytes", CoapMessage(Type.CON, Code.GET, token=b"123456789")),
    ("mid negative", CoapMessage(Type.CON, Code.GET, mid=-1)),
    ("mid too large", CoapMessage(Type.CON, Code.GET, mid=0x10000)),
    ("type 4", CoapMessage(4, Code.GET)),
    ("code 256", CoapMessage(Type.CON, 256)),
    ("reserved code class", CoapMessage(Type.CON, 0x20)),
    ("empty with token", CoapMessage(Type.CON, Code.EMPTY, token=b"t")),
    ("empty with options", CoapMessage(Type.ACK, Code.EMPTY, options=[(11, b"a")])),
    ("empty with payload", CoapMessage(Type.RST, Code.EMPTY, payload=b"p")),
    (
        "option number too large",
        CoapMessage(Type.CON, Code.GET, options=[(70000, b"")]),
    ),
    ("negative option number", CoapMessage(Type.CON, Code.GET, options=[(-1, b"")])),
    (
        "option value too long",
        CoapMessage(Type.CON, Code.GET, options=[(11, b"x" * 65805)]),
    ),
]


@pytest.mark.parametrize(
    ("name", "message"), ENCODE_ERRORS, ids=[e[0] for e in ENCODE_ERRORS]
)
def test_message_encode_rejects_unrepresentable(
    name: str, message: CoapMessage
) -> None:
    with pytest.raises(EncodeError):
        message.encode()


def test_message_largest_extended_forms_round_trip() -> None:
    msg = CoapMessage(
        Type.CON,
        Code.GET,
        options=[(268, b""), (268 + 269, b"a" * 268), (65535, b"b" * 269)],
    )
    assert CoapMessage.decode(msg.encode()) == msg


def test_two_options_out_of_order_are_sorted_and_same_numbers_keep_order() -> None:
    in_order = CoapMessage(0, 2, 7, b"", [(11, b"a"), (12, b"2")]).encode()
    swapped = CoapMessage(0, 2, 7, b"", [(12, b"2"), (11, b"a")]).encode()
    assert swapped == in_order
    assert CoapMessage.decode(swapped).options == [(11, b"a"), (12, b"2")]
    repeated = CoapMessage(0, 2, 7, b"", [(11, b"b"), (11, b"a")]).encode()
    assert CoapMessage.decode(repeated).options == [(11, b"b"), (11, b"a")]
    three = CoapMessage(0, 2, 7, b"", [(12, b"2"), (11, b"b"), (11, b"a")]).encode()
    assert CoapMessage.decode(three).options == [(11, b"b"), (11, b"a"), (12, b"2")]
