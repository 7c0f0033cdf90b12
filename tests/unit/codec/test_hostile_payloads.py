"""Hostile JSON (issue 10 items 5, 7, 8): deep nesting, huge integers, control characters.

Every case must end in a :class:`DecodeError` (4.00 on the wire), never in
``RecursionError`` / ``OverflowError`` (5.00) or a forged log line.
"""

import json

import pytest

from msgin5g.codec.ue_payload import (
    MAX_JSON_DEPTH,
    decode_config_request,
    decode_local_uplink,
    decode_uplink,
    json_depth_exceeds,
    message_type_of,
)
from msgin5g.errors import DecodeError
from msgin5g.model.messages import MAX_UINT32, Reg

REG = {
    "messageType": "REG",
    "ueServiceId": "ue1",
    "ueCredentialInfo": {"authType": "PSK_TOKEN", "credential": "x"},
}


def nested(depth: int, *, closed: bool = True) -> bytes:
    body = b"[" * depth + (b"]" * depth if closed else b"")
    return b'{"messageType":"REG","ueServiceId":"ue1","junk":' + body + b"}"


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1000, 10_000, 100_000])
@pytest.mark.parametrize("closed", [True, False])
def test_deep_nesting_is_a_decode_error(depth: int, closed: bool) -> None:
    data = nested(depth, closed=closed)
    assert json_depth_exceeds(data)
    with pytest.raises(DecodeError, match="nested deeper"):
        decode_uplink(data)
    with pytest.raises(DecodeError, match="nested deeper"):
        decode_local_uplink(data)
    with pytest.raises(DecodeError, match="nested deeper"):
        decode_config_request(data)
    assert message_type_of(data) == "REG"  # found textually, not parsed


def test_depth_limit_is_exact() -> None:
    for depth in (MAX_JSON_DEPTH - 1, MAX_JSON_DEPTH):
        # the outer object is one level
        data = b'{"a":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
        assert not json_depth_exceeds(data)
    data = b'{"a":' + b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    assert json_depth_exceeds(data)


def test_interleaved_nesting_is_measured() -> None:
    # [[],[[],[[],... : runs of '[' are broken by empty arrays
    n = MAX_JSON_DEPTH
    assert json_depth_exceeds(b"[[]," * n + b"]" * n)
    assert not json_depth_exceeds(b"[[]," * (n - 2) + b"]" * (n - 2))


def test_brackets_inside_strings_do_not_count() -> None:
    junk = "[" * 5000 + '\\"{' * 100 + "\\\\"
    data = json.dumps({**REG, "junk": junk}).encode()
    assert not json_depth_exceeds(data)
    assert isinstance(decode_uplink(data), Reg)


def test_wide_payloads_are_not_deep() -> None:
    items = [{"messageId": f"m{i}", "payload": "QQ=="} for i in range(500)]
    data = json.dumps(
        {
            "messageType": "AGGMSG",
            "messageId": "agg",
            "originatingUeServiceId": "ue1",
            "recipientUeServiceId": "ue2",
            "aggregatedMessages": items,
        }
    ).encode()
    assert not json_depth_exceeds(data)
    assert len(decode_uplink(data).aggregated_messages) == 500  # type: ignore[union-attr]


HUGE = [2**64, 2**63, MAX_UINT32 + 1, 10**400]


@pytest.mark.parametrize("value", HUGE)
@pytest.mark.parametrize(
    "payload",
    [
        {**REG, "waitTime": "V"},
        {**REG, "maxSegmentSize": "V"},
        {
            **REG,
            "commAvailability": {
                "scheduledCommTime": "2025-01-01T00:00:00Z",
                "commDurationTime": "V",
            },
        },
        {**REG, "clientPorts": [{"port": "V"}]},
        {
            "messageType": "MSG",
            "messageId": "m1",
            "originatingUeServiceId": "ue1",
            "recipientUeServiceId": "ue2",
            "segmentationSetId": "s",
            "segmentNumber": 1,
            "totalSegments": "V",
        },
        {
            "messageType": "SEGREC",
            "messageId": "m1",
            "segmentationSetId": "s",
            "missingSegments": [1, "V"],
        },
        {
            "messageType": "BULKREG",
            "ueServiceId": "gw",
            "ueCredentialInfo": {"authType": "X"},
            "numOfRegRequests": "V",
            "regRequests": [REG],
        },
    ],
)
def test_huge_integers_are_refused(payload: dict[str, object], value: int) -> None:
    text = json.dumps(payload).replace('"V"', str(value))
    with pytest.raises(DecodeError) as info:
        decode_uplink(text.encode())
    assert info.value.member


def test_largest_integer_is_accepted() -> None:
    reg = decode_uplink(json.dumps({**REG, "waitTime": MAX_UINT32}).encode())
    assert isinstance(reg, Reg) and reg.wait_time == MAX_UINT32


BAD_CHARACTERS = [
    "\n",
    "\r",
    "\x00",
    "\x1b",
    "\x7f",
    "\x85",
    "\x9b",
    "\u2028",
    "\u2029",
]


@pytest.mark.parametrize("char", BAD_CHARACTERS)
@pytest.mark.parametrize(
    ("payload", "member"),
    [
        ({**REG, "ueServiceId": "a{c}FORGED"}, "ueServiceId"),
        (
            {
                "messageType": "MSG",
                "messageId": "m{c}1",
                "originatingUeServiceId": "ue1",
                "recipientUeServiceId": "ue2",
            },
            "messageId",
        ),
        (
            {
                "messageType": "MSG",
                "messageId": "m1",
                "originatingUeServiceId": "ue1",
                "recipientGroupServiceId": "g{c}",
            },
            "recipientGroupServiceId",
        ),
        (
            {
                "messageType": "MSG",
                "messageId": "m1",
                "originatingUeServiceId": "ue1",
                "recipientBroadcastAreaId": "area{c}",
            },
            "recipientBroadcastAreaId",
        ),
        (
            {
                "messageType": "MSG",
                "messageId": "m1",
                "originatingUeServiceId": "ue1",
                "messagingTopic": "t{c}",
            },
            "messagingTopic",
        ),
        (
            {
                "messageType": "MSG",
                "messageId": "m1",
                "originatingUeServiceId": "ue1",
                "recipientUeServiceId": "ue2",
                "applicationId": "app{c}",
            },
            "applicationId",
        ),
        (
            {
                "messageType": "TOPICSUB",
                "originatingUeServiceId": "ue1",
                "messagingTopics": ["ok", "t{c}"],
            },
            "messagingTopics[1]",
        ),
        (
            {**REG, "ueCredentialInfo": {"authType": "PSK{c}"}},
            "ueCredentialInfo.authType",
        ),
    ],
)
def test_control_characters_in_identifiers_are_refused(
    payload: dict[str, object], member: str, char: str
) -> None:
    text = json.dumps(payload).replace("{c}", json.dumps(char)[1:-1])
    with pytest.raises(DecodeError) as info:
        decode_uplink(text.encode())
    assert info.value.member == member
    assert "not allowed" in str(info.value)


def test_raw_c1_and_separator_bytes_are_refused_too() -> None:
    # not escaped: the UTF-8 octets themselves
    for char in ("\x85", "\u2028", "\x7f"):
        data = json.dumps({**REG, "ueServiceId": f"a{char}b"}, ensure_ascii=False)
        with pytest.raises(DecodeError):
            decode_uplink(data.encode())


def test_trailing_newline_does_not_slip_past_the_pattern() -> None:
    # "$" would match before a final newline; the patterns use "\Z"
    with pytest.raises(DecodeError):
        decode_uplink(json.dumps({**REG, "ueServiceId": "ue1\n"}).encode())


def test_printable_unicode_identifiers_still_work() -> None:
    reg = decode_uplink(json.dumps({**REG, "ueServiceId": "zähler-€-東京"}).encode())
    assert isinstance(reg, Reg) and reg.ue_service_id == "zähler-€-東京"
