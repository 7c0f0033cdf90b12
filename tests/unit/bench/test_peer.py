"""The bench's simulated UE without sockets: matching, ACKs, retransmission."""

import base64
import json
from typing import Any

from msgin5g.bench.peer import (
    RawUe,
    delivered_payloads,
    payload_sent_at,
    reg_body,
    stamp,
)
from msgin5g.coap import CoapMessage, Code, Type
from msgin5g.model.credentials import psk_token


class Wire:
    """An in-memory transport: what the UE sent."""

    def __init__(self) -> None:
        self.sent: list[CoapMessage] = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.sent.append(CoapMessage.decode(data))

    def close(self) -> None:
        pass


def make_ue() -> tuple[RawUe, Wire, list[bytes]]:
    got: list[bytes] = []
    ue = RawUe("bench-00001", got.append)
    wire = Wire()
    ue.connection_made(wire)
    return ue, wire, got


def msg(payload: bytes) -> bytes:
    return json.dumps(
        {"messageType": "MSG", "payload": base64.b64encode(payload).decode()}
    ).encode()


def test_reg_body_carries_the_psk_token() -> None:
    body = json.loads(reg_body("bench-00001", "s"))
    assert body["messageType"] == "REG"
    assert body["ueCredentialInfo"]["credential"] == psk_token("s", "bench-00001")


def test_stamp_round_trip() -> None:
    data = stamp(48, 12.5)
    assert len(data) == 48
    assert payload_sent_at(data) == 12.5
    assert payload_sent_at(b"short") is None


def test_delivered_payloads_of_msg_and_aggmsg() -> None:
    assert delivered_payloads(msg(b"12345678")) == [b"12345678"]
    agg = json.dumps(
        {
            "messageType": "AGGMSG",
            "aggregatedMessages": [
                {"payload": base64.b64encode(b"a" * 8).decode()},
                {"payload": base64.b64encode(b"b" * 8).decode()},
            ],
        }
    ).encode()
    assert delivered_payloads(agg) == [b"a" * 8, b"b" * 8]
    assert delivered_payloads(b"not json") == []


def test_piggybacked_answer_completes_the_request() -> None:
    ue, wire, _ = make_ue()
    answers: list[CoapMessage | None] = []
    ue.post(b"{}", lambda response, _t: answers.append(response), 1.0)
    request = wire.sent[0]
    assert (request.mtype, request.code, request.uri_path) == (
        Type.CON,
        Code.POST,
        ("msgin5g",),
    )
    assert ue.in_flight == 1
    reply = CoapMessage(Type.ACK, Code.CHANGED, request.mid, request.token, [], b"ok")
    ue.datagram_received(reply.encode(), None)
    ue.datagram_received(reply.encode(), None)  # a duplicate is ignored
    assert [a.payload for a in answers if a] == [b"ok"]
    assert ue.in_flight == 0


def test_separate_answer_after_an_empty_ack() -> None:
    ue, wire, _ = make_ue()
    answers: list[CoapMessage | None] = []
    ue.post(b"{}", lambda response, _t: answers.append(response), 1.0)
    request = wire.sent[0]
    ue.datagram_received(CoapMessage(Type.ACK, Code.EMPTY, request.mid).encode(), None)
    ue.sweep(float("inf"))  # acknowledged: no retransmission any more
    assert len(wire.sent) == 1 and not answers
    separate = CoapMessage(Type.CON, Code.CHANGED, 999, request.token, [], b"later")
    ue.datagram_received(separate.encode(), None)
    assert answers[0] is not None and answers[0].payload == b"later"
    assert (wire.sent[-1].mtype, wire.sent[-1].mid) == (Type.ACK, 999)


def test_server_post_is_acknowledged_and_counted_once() -> None:
    ue, wire, got = make_ue()
    post = CoapMessage(Type.CON, Code.POST, 77, b"tk", [], msg(b"x" * 8))
    ue.datagram_received(post.encode(), None)
    ue.datagram_received(post.encode(), None)  # retransmission: ACKed, not counted
    assert len(got) == 1
    assert [(m.mtype, m.code, m.mid, m.token) for m in wire.sent] == [
        (Type.ACK, Code.CHANGED, 77, b"tk")
    ] * 2


def test_ping_gets_a_reset_and_garbage_is_counted() -> None:
    ue, wire, _ = make_ue()
    ue.datagram_received(CoapMessage(Type.CON, Code.EMPTY, 5).encode(), None)
    assert (wire.sent[0].mtype, wire.sent[0].mid) == (Type.RST, 5)
    ue.datagram_received(b"\xff", None)
    assert ue.bad_datagrams == 1


def test_retransmits_then_gives_up() -> None:
    ue, wire, _ = make_ue()
    answers: list[CoapMessage | None] = []
    ue.post(b"{}", lambda response, _t: answers.append(response), 1.0)
    for _ in range(4):
        ue.sweep(float("inf"))
    assert len(wire.sent) == 5 and len({m.mid for m in wire.sent}) == 1
    ue.sweep(float("inf"))
    assert answers == [None]
    assert ue.in_flight == 0


def test_observe_notification_after_the_registration_is_handed_over() -> None:
    ue, wire, got = make_ue()
    answers: list[CoapMessage | None] = []
    ue.request(Code.GET, [], b"", lambda response, _t: answers.append(response))
    request = wire.sent[0]
    first = CoapMessage(Type.ACK, Code.CONTENT, request.mid, request.token, [], b"")
    ue.datagram_received(first.encode(), None)
    assert answers and answers[0] is not None
    notification = CoapMessage(
        Type.CON, Code.CONTENT, 300, request.token, [], msg(b"n" * 8)
    )
    ue.datagram_received(notification.encode(), None)
    assert got == [msg(b"n" * 8)]
    assert (wire.sent[-1].mtype, wire.sent[-1].code, wire.sent[-1].mid) == (
        Type.ACK,
        Code.EMPTY,
        300,
    )


def test_a_reused_message_id_with_a_new_token_is_a_new_message() -> None:
    ue, _, got = make_ue()
    first = CoapMessage(Type.CON, Code.POST, 9, b"t1", [], msg(b"1" * 8))
    again = CoapMessage(Type.CON, Code.POST, 9, b"t2", [], msg(b"2" * 8))
    for message in (first, again, again):  # the last one is a retransmission
        ue.datagram_received(message.encode(), None)
    assert got == [msg(b"1" * 8), msg(b"2" * 8)]
    assert ue.mid_reuses == 1


def test_the_next_message_id_goes_on_from_the_requests_sent() -> None:
    """What the C engine continues from: a set-up ID used again on the same
    socket would be answered from the server's duplicate cache."""
    ue, wire, _ = make_ue()
    ue.post(b"{}", lambda _r, _t: None, 1.0)
    ue.post(b"{}", lambda _r, _t: None, 1.0)
    first, second = (m.mid for m in wire.sent)
    assert second == (first + 1) & 0xFFFF
    handed_over = ue.next_mid()
    assert handed_over == (second + 1) & 0xFFFF
    ue.post(b"{}", lambda _r, _t: None, 1.0)
    assert wire.sent[-1].mid == (handed_over + 1) & 0xFFFF
