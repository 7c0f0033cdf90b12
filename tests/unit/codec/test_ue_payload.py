"""MSGin5G-1 JSON codec: spec example vectors, validation errors, fuzzing."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgin5g.codec.ue_payload import (
    decode_downlink,
    decode_error_body,
    decode_response,
    decode_uplink,
    encode,
    message_type_of,
)
from msgin5g.errors import DecodeError, UnsupportedMessageType
from msgin5g.model.messages import (
    Dereg,
    DeregResp,
    ErrorBody,
    Imdn,
    Msg,
    MsgResp,
    MsgUpd,
    Reg,
    RegResp,
)

# digest §3.2.5 example
REG_EXAMPLE = b"""{"messageType":"REG","ueServiceId":"meter-000123",
 "ueCredentialInfo":{"authType":"PSK_TOKEN","credential":"q83v"},
 "msgin5gUeId":"imei-35","clientPorts":[{"port":5683,"protocol":"NIDD"},{"port":9200,"protocol":"SMS"}],
 "commAvailability":{"scheduledCommTime":"2025-01-31T02:00:00Z","commDurationTime":120,
                     "periodicCommIndicator":true,"periodicCommInterval":3600}}"""

# digest §3.7.8 example
MSG_EXAMPLE = b"""{"messageType":"MSG","originatingUeServiceId":"meter-000123","recipientUeServiceId":"valve-0007",
 "messageId":"3f0c9a2e-5b7d-4e59-9f4e-5d8d2c6f0a11","deliveryStatusRequired":true,
 "applicationId":"flow-ctl","payload":"AQIDBA==","priorityType":"MIDDLE"}"""

IMDN_EXAMPLE = b"""{"messageType":"IMDN","originatingUeServiceId":"valve-0007","recipientUeServiceId":"meter-000123",
 "messageId":"3f0c9a2e-5b7d-4e59-9f4e-5d8d2c6f0a11","deliveryStatus":"REPT_DELY_SUCCESS"}"""


def test_reg_example_decodes() -> None:
    reg = decode_uplink(REG_EXAMPLE)
    assert isinstance(reg, Reg)
    assert reg.ue_service_id == "meter-000123"
    assert reg.ue_credential_info.auth_type == "PSK_TOKEN"
    assert reg.client_ports is not None and reg.client_ports[1].port == 9200
    assert reg.comm_availability is not None
    assert reg.comm_availability.periodic_comm_interval == 3600
    assert reg.comm_availability.scheduled_comm_time.year == 2025


def test_msg_example_decodes_payload_base64() -> None:
    msg = decode_uplink(MSG_EXAMPLE)
    assert isinstance(msg, Msg)
    assert msg.payload == b"\x01\x02\x03\x04"
    assert msg.delivery_status_required is True
    assert msg.priority_type == "MIDDLE"
    assert msg.store_and_forward_flag is False  # absent boolean = false (§2.6)


def test_imdn_example_decodes() -> None:
    imdn = decode_uplink(IMDN_EXAMPLE)
    assert isinstance(imdn, Imdn)
    assert imdn.originator == "valve-0007" and imdn.recipient == "meter-000123"


def test_encode_is_camel_case_and_omits_absent() -> None:
    resp = MsgResp(
        message_id="m", originating_ue_service_id="a", delivery_status="DELY_STORED"
    )
    assert json.loads(encode(resp)) == {
        "messageType": "MSGRESP",
        "messageId": "m",
        "originatingUeServiceId": "a",
        "deliveryStatus": "DELY_STORED",
    }
    body = json.loads(
        encode(
            Msg(
                message_id="x",
                originating_ue_service_id="a",
                recipient_ue_service_id="b",
                payload=b"\xff",
            )
        )
    )
    assert body["payload"] == "/w==" and body["messageType"] == "MSG"


@pytest.mark.parametrize(
    "message",
    [
        RegResp(ue_service_id="a", registration_result="SUCCESS"),
        DeregResp(
            ue_service_id="a", deregistration_result="FAILURE", failure_cause="X"
        ),
        MsgResp(message_id="m", delivery_status="DELY_ACCEPTED"),
    ],
)
def test_responses_round_trip(message: RegResp | DeregResp | MsgResp) -> None:
    assert decode_response(encode(message)) == message


@pytest.mark.parametrize(
    "message",
    [
        Dereg(ue_service_id="a"),
        MsgUpd(
            originating_ue_service_id="a", recipient_ue_service_id="b", message_id="m"
        ),
        decode_uplink(MSG_EXAMPLE),
        decode_uplink(REG_EXAMPLE),
    ],
)
def test_uplink_round_trip(message: object) -> None:
    assert decode_uplink(encode(message)) == message  # type: ignore[arg-type]


def test_downlink_accepts_msg_and_imdn_only() -> None:
    assert isinstance(decode_downlink(MSG_EXAMPLE), Msg)
    with pytest.raises(UnsupportedMessageType):
        decode_downlink(REG_EXAMPLE)


def test_unknown_members_are_ignored() -> None:
    data = json.loads(IMDN_EXAMPLE)
    data["futureMember"] = {"x": 1}
    assert isinstance(decode_uplink(json.dumps(data).encode()), Imdn)


@pytest.mark.parametrize(
    ("payload", "member", "fragment"),
    [
        (
            b'{"messageType":"REG","ueCredentialInfo":{"authType":"PSK_TOKEN"}}',
            "ueServiceId",
            "ueServiceId",
        ),
        (
            b'{"messageType":"REG","ueServiceId":"a","ueCredentialInfo":{}}',
            "ueCredentialInfo.authType",
            "authType",
        ),
        (
            b'{"messageType":"REG","ueServiceId":7,"ueCredentialInfo":{"authType":"x"}}',
            "ueServiceId",
            "str",
        ),
        (
            b'{"messageType":"MSG","originatingUeServiceId":"a","recipientUeServiceId":"b"}',
            "messageId",
            "messageId",
        ),
        (
            b'{"messageType":"MSG","messageId":"m","originatingUeServiceId":"a","recipientUeServiceId":"b","payload":"@@@"}',
            "payload",
            "base64",
        ),
        (
            b'{"messageType":"MSG","messageId":"m","originatingUeServiceId":"a","recipientUeServiceId":"b","priorityType":"URGENT"}',
            "priorityType",
            "URGENT",
        ),
        (
            b'{"messageType":"MSG","messageId":"m","originatingUeServiceId":"a"}',
            "recipientUeServiceId",
            "exactly one",
        ),
        (
            b'{"messageType":"MSG","messageId":"m","originatingUeServiceId":"a","recipientUeServiceId":"b","messagingTopic":"t"}',
            "messagingTopic",
            "exactly one",
        ),
        (
            b'{"messageType":"MSG","messageId":"m","recipientUeServiceId":"b"}',
            "originatingUeServiceId",
            "originatingUeServiceId",
        ),
        (
            b'{"messageType":"REG","ueServiceId":"a/b","ueCredentialInfo":{"authType":"x"}}',
            "ueServiceId",
            "not allowed",
        ),
        (
            b'{"messageType":"REG","ueServiceId":"a","ueCredentialInfo":{"authType":"x"},"commAvailability":{"scheduledCommTime":"2025-01-01T00:00:00Z","commDurationTime":1,"periodicCommIndicator":true}}',
            "commAvailability.periodicCommInterval",
            "periodicCommInterval",
        ),
        (
            b'{"messageType":"DEREG","ueServiceId":"a","msgin5gServiceId":"other"}',
            "msgin5gServiceId",
            "org.3gpp.msgin5g",
        ),
        (
            b'{"messageType":"IMDN","messageId":"m","deliveryStatus":"REPT_DELY_SUCCESS","originatingUeServiceId":"a"}',
            "recipientUeServiceId",
            "recipient",
        ),
    ],
)
def test_validation_errors_name_the_member(
    payload: bytes, member: str, fragment: str
) -> None:
    with pytest.raises(DecodeError) as info:
        decode_uplink(payload)
    assert not isinstance(info.value, UnsupportedMessageType)
    assert info.value.member == member
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[1,2]",
        b'"text"',
        b"{",
        b"\xff\xfe",
        b"{}",
        b'{"messageType":7}',
    ],
)
def test_malformed_payloads(payload: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_uplink(payload)


@pytest.mark.parametrize("kind", ["FOO", "GWREG", "REGRESP", "msg"])
def test_unsupported_message_type(kind: str) -> None:
    with pytest.raises(UnsupportedMessageType) as info:
        decode_uplink(json.dumps({"messageType": kind}).encode())
    assert info.value.member == "messageType"


def test_message_type_of_never_raises() -> None:
    assert message_type_of(MSG_EXAMPLE) == "MSG"
    assert message_type_of(b"\x00garbage") is None
    assert message_type_of(b"[]") is None
    assert message_type_of(b'{"messageType":"\xfa"}') is None


def test_error_body() -> None:
    body = ErrorBody(message_type="MSG", failure_cause="INVALID_MESSAGE", detail="x")
    assert decode_error_body(encode(body)) == body
    assert decode_error_body(b"nope") is None


@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_decode_error(data: bytes) -> None:
    for decoder in (decode_uplink, decode_downlink, decode_response):
        try:
            decoder(data)
        except DecodeError:
            pass


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(
    st.sampled_from(["REG", "DEREG", "MSG", "IMDN", "MSGUPD", "X"]),
    st.dictionaries(
        st.sampled_from(
            [
                "ueServiceId",
                "messageId",
                "payload",
                "ueCredentialInfo",
                "recipientUeServiceId",
                "originatingUeServiceId",
                "deliveryStatus",
                "commAvailability",
                "storeAndForwardParams",
            ]
        ),
        _json,
        max_size=6,
    ),
)
def test_structured_garbage_decode_or_decode_error(
    kind: str, members: dict[str, object]
) -> None:
    members["messageType"] = kind
    try:
        decode_uplink(json.dumps(members).encode())
    except DecodeError:
        pass


@given(st.binary(max_size=40), st.sampled_from([b"messageType", b"ueServiceId", b"x"]))
def test_invalid_utf8_inside_json_is_decode_error(raw: bytes, key: bytes) -> None:
    data = b'{"' + key + b'":"' + raw + b'","messageType":"REG"}'
    for decoder in (decode_uplink, decode_downlink, decode_response):
        try:
            decoder(data)
        except DecodeError:
            pass
    message_type_of(data)


def test_bulk_registration_example_decodes() -> None:
    data = b"""{"messageType":"BULKREG","ueServiceId":"gw-0001",
      "ueCredentialInfo":{"authType":"PSK_TOKEN","credential":"x"},
      "numOfRegRequests":2,
      "regRequests":[
        {"messageType":"REG","ueServiceId":"sensor-17","ueCredentialInfo":{"authType":"PSK_TOKEN"}},
        {"ueServiceId":"sensor-18","ueCredentialInfo":{"authType":"PSK_TOKEN"}}]}"""
    from msgin5g.model.messages import BulkReg

    bulk = decode_uplink(data)
    assert isinstance(bulk, BulkReg)
    assert [r.ue_service_id for r in bulk.reg_requests] == ["sensor-17", "sensor-18"]


@pytest.mark.parametrize(
    ("payload", "member"),
    [
        (
            b'{"messageType":"BULKREG","ueServiceId":"g","ueCredentialInfo":{"authType":"x"},'
            b'"numOfRegRequests":2,"regRequests":[{"ueServiceId":"a","ueCredentialInfo":{"authType":"x"}}]}',
            "numOfRegRequests",
        ),
        (
            b'{"messageType":"BULKDEREG","ueServiceId":"g","ueCredentialInfo":{"authType":"x"},'
            b'"numOfDeregRequests":2,"deregRequests":[{"ueServiceId":"a"},{"ueServiceId":"a"}]}',
            "numOfDeregRequests",
        ),
        (
            b'{"messageType":"BULKREG","ueServiceId":"g","ueCredentialInfo":{"authType":"x"},'
            b'"numOfRegRequests":1,"regRequests":[{"messageType":"DEREG","ueServiceId":"a"}]}',
            "regRequests[0].messageType",
        ),
    ],
)
def test_bulk_validation(payload: bytes, member: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_uplink(payload)
    assert info.value.member == member
