"""Hypothesis fuzzing of the codec and the message layer.

Any input gives a CoapMessage or CoapDecodeError, nothing else; valid messages
round-trip byte-exactly; MessageLayer.receive never raises.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from msgin5g.coap import CoapDecodeError, CoapMessage, MessageLayer, Send

options = st.lists(
    st.tuples(st.integers(0, 65535), st.binary(max_size=300)), max_size=8
)


@st.composite
def messages(draw: st.DrawFn) -> CoapMessage:
    mtype = draw(st.integers(0, 3))
    code = draw(st.one_of(st.just(0), st.integers(1, 31), st.integers(64, 191)))
    mid = draw(st.integers(0, 0xFFFF))
    if code == 0:
        return CoapMessage(mtype, 0, mid)
    return CoapMessage(
        mtype,
        code,
        mid,
        draw(st.binary(max_size=8)),
        draw(options),
        draw(st.binary(max_size=200)),
    )


def decode_or_error(data: bytes) -> CoapMessage | None:
    try:
        return CoapMessage.decode(data)
    except CoapDecodeError:
        return None


@settings(max_examples=2000)
@given(st.binary(max_size=64))
def test_fuzz_arbitrary_bytes_decode_or_decode_error(data: bytes) -> None:
    msg = decode_or_error(data)
    if msg is not None:
        # the wire form is canonical: whatever decodes re-encodes identically
        assert msg.encode() == data


@settings(max_examples=500)
@given(
    st.binary(min_size=4, max_size=8).map(
        lambda b: bytes((0x40 | b[0] & 0x3F,)) + b[1:]
    )
)
def test_fuzz_version1_headers_decode_or_decode_error(data: bytes) -> None:
    decode_or_error(data)


@settings(max_examples=500)
@given(messages())
def test_fuzz_round_trip(msg: CoapMessage) -> None:
    wire = msg.encode()
    decoded = CoapMessage.decode(wire)
    assert decoded.encode() == wire
    assert decoded.mtype == msg.mtype
    assert decoded.code == msg.code
    assert decoded.mid == msg.mid
    assert decoded.token == msg.token
    assert decoded.payload == msg.payload
    assert decoded.options == sorted(msg.options, key=lambda o: o[0])


@settings(max_examples=500)
@given(messages(), st.data())
def test_fuzz_mutated_messages(msg: CoapMessage, data: st.DataObject) -> None:
    wire = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        bit = data.draw(st.integers(0, len(wire) * 8 - 1))
        wire[bit // 8] ^= 1 << (bit % 8)
    cut = data.draw(st.integers(0, len(wire)))
    for candidate in (bytes(wire), bytes(wire[:cut])):
        decoded = decode_or_error(candidate)
        if decoded is not None:
            assert decoded.encode() == candidate


@settings(max_examples=1000)
@given(
    st.lists(
        st.one_of(st.binary(max_size=40), messages().map(CoapMessage.encode)),
        max_size=6,
    )
)
def test_fuzz_layer_receive_never_raises(datagrams: list[bytes]) -> None:
    now = [0.0]
    layer = MessageLayer(lambda: now[0], rng=random.Random(0))
    peer = ("127.0.0.1", 1)
    layer.send_request(CoapMessage(0, 2), peer, "h", mid=1, token=b"t")
    for datagram in datagrams:
        for action in layer.receive(datagram, peer):
            if isinstance(action, Send):
                CoapMessage.decode(action.data)
        now[0] += 10
        layer.poll()
