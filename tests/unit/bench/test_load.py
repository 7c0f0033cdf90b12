"""The ``p2p`` message bodies the load generator sends."""

from __future__ import annotations

import msgspec

from msgin5g.bench.load import p2p_body
from msgin5g.codec.ue_payload import decode_uplink as decode
from msgin5g.model.messages import Msg

_PREFIX = (
    b'{"messageType":"MSG","originatingUeServiceId":"bench-00001",'
    b'"recipientUeServiceId":"bench-00002","messageId":"bench-00001-r-'
)


def test_a_p2p_body_is_a_valid_msg_that_does_not_ask_for_storage() -> None:
    msg = decode(p2p_body(_PREFIX, 7, b"12345678", store=False))
    assert isinstance(msg, Msg)
    assert msg.message_id == "bench-00001-r-7"
    assert msg.payload == b"12345678"
    assert msg.store_and_forward_flag is False


def test_store_asks_for_storage() -> None:
    msg = decode(p2p_body(_PREFIX, 8, b"x" * 48, store=True))
    assert isinstance(msg, Msg)
    assert msg.store_and_forward_flag is True
    assert msgspec.json.decode(p2p_body(_PREFIX, 8, b"x", True))["messageId"]
