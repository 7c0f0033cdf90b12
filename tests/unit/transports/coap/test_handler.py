"""The /msgin5g CoAP handler fed CoapMessage objects (no sockets)."""

import json
from collections.abc import AsyncIterator

import pytest

from msgin5g.coap.endpoint import Request
from msgin5g.coap.message import CoapMessage, encode_uint, uri_path_options
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.config import CoapConfig
from msgin5g.model.credentials import psk_token
from msgin5g.service import MessagingService
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import RecordingDeliverer
from msgin5g.transports.coap import CoapTransport

PEER = ("192.0.2.1", 40000)


@pytest.fixture
async def transport() -> AsyncIterator[CoapTransport]:
    backend = MemoryBackend()
    await backend.start()
    service = MessagingService(backend, RecordingDeliverer())
    await service.provision("ue1", psk_token("s1", "ue1"))
    await service.start(sweeper=False)
    coap = CoapTransport(CoapConfig())
    coap._service = service  # wired without a socket
    yield coap
    await service.aclose()
    await backend.aclose()


def post(payload: bytes, *, cf: int | None = 50, block1: bool = False) -> Request:
    options = uri_path_options(("msgin5g",))
    if cf is not None:
        options.append((OptionNumber.CONTENT_FORMAT, encode_uint(cf)))
    if block1:
        options.append((OptionNumber.BLOCK1, encode_uint(0x0E)))
    message = CoapMessage(
        Type.CON, Code.POST, mid=7, token=b"tk", options=options, payload=payload
    )
    return Request(message, PEER, None)  # type: ignore[arg-type]


def reg(secret: str = "s1") -> bytes:
    return json.dumps(
        {
            "messageType": "REG",
            "ueServiceId": "ue1",
            "ueCredentialInfo": {
                "authType": "PSK_TOKEN",
                "credential": psk_token(secret, "ue1"),
            },
        }
    ).encode()


async def test_registration_created_then_changed(transport: CoapTransport) -> None:
    first = await transport.render_post(post(reg()))
    assert first.code == Code.CREATED
    assert first.token == b"tk"
    assert first.content_format == 50
    assert json.loads(first.payload)["registrationResult"] == "SUCCESS"
    second = await transport.render_post(post(reg()))
    assert second.code == Code.CHANGED


async def test_failed_registration_is_changed_with_cause(
    transport: CoapTransport,
) -> None:
    response = await transport.render_post(post(reg("wrong")))
    assert response.code == Code.CHANGED
    body = json.loads(response.payload)
    assert body == {
        "messageType": "REGRESP",
        "ueServiceId": "ue1",
        "registrationResult": "FAILURE",
        "failureCause": "AUTHENTICATION_FAILED",
    }


@pytest.mark.parametrize(
    ("payload", "cf", "code", "cause"),
    [
        (b"{}", 0, Code.UNSUPPORTED_CONTENT_FORMAT, "INVALID_MESSAGE"),
        (b"{}", None, Code.UNSUPPORTED_CONTENT_FORMAT, "INVALID_MESSAGE"),
        (b"nope", 50, Code.BAD_REQUEST, "INVALID_MESSAGE"),
        (b'{"messageType":"FOO"}', 50, Code.BAD_REQUEST, "UNSUPPORTED_MESSAGE_TYPE"),
        (
            b'{"messageType":"MSG","messageId":"m"}',
            50,
            Code.BAD_REQUEST,
            "INVALID_MESSAGE",
        ),
    ],
)
async def test_bad_requests_get_json_diagnostics(
    transport: CoapTransport, payload: bytes, cf: int | None, code: int, cause: str
) -> None:
    response = await transport.render_post(post(payload, cf=cf))
    assert response.code == code
    assert response.content_format == 50
    assert json.loads(response.payload)["failureCause"] == cause


async def test_missing_member_is_named(transport: CoapTransport) -> None:
    response = await transport.render_post(post(b'{"messageType":"DEREG"}'))
    body = json.loads(response.payload)
    assert body["messageType"] == "DEREG"
    assert "ueServiceId" in body["detail"]


async def test_block1_is_refused_with_size1(transport: CoapTransport) -> None:
    response = await transport.render_post(post(b"{", block1=True))
    assert response.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert response.uint_opt(OptionNumber.SIZE1) == 4096


async def test_unregistered_sender_rejected_in_msgresp(
    transport: CoapTransport,
) -> None:
    msg = {
        "messageType": "MSG",
        "messageId": "m",
        "originatingUeServiceId": "ue1",
        "recipientUeServiceId": "ue1",
    }
    response = await transport.render_post(post(json.dumps(msg).encode()))
    assert response.code == Code.CHANGED
    body = json.loads(response.payload)
    assert (body["deliveryStatus"], body["failureCause"]) == (
        "DELY_REJECTED",
        "NOT_REGISTERED",
    )


def test_every_uplink_message_type_has_exactly_one_handler() -> None:
    """The dispatch table covers what the codec decodes, and nothing else."""
    from typing import get_args

    from msgin5g.codec.ue_payload import Uplink
    from msgin5g.transports.dispatch import PROCEDURES

    assert set(PROCEDURES) == set(get_args(Uplink))
