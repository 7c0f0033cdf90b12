"""The Client on an in-memory transport: procedures, errors, retries, reception.

No sockets and no real sleeping: :class:`~msgin5g.client.MockTransport` plays
the server (a handler answers the client's requests, ``deliver`` pushes the
server's requests) and a :class:`~msgin5g.testing.ManualClock` drives time.
"""

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from msgin5g.client import Client, MockTransport
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code, Type
from msgin5g.codec.ue_payload import decode_uplink, encode
from msgin5g.errors import (
    DecodeError,
    NotAuthorized,
    RemoteError,
    RemoteReset,
    RequestTimeout,
)
from msgin5g.model.messages import (
    ConfReq,
    ConfResp,
    ErrorBody,
    Imdn,
    Msg,
    MsgResp,
    Reg,
    RegResp,
)
from msgin5g.model.segmentation import split
from msgin5g.spec.coap import CONTENT_FORMAT_JSON
from msgin5g.testing import ManualClock

pytestmark = pytest.mark.timeout(10)

Answer = Callable[[msgspec.Struct], msgspec.Struct | None]


class FakeServer:
    """Answers what the client sends; records the decoded requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[tuple[str, ...], object, bytes]] = []
        self.refuse_next: list[Exception | CoapMessage] = []
        self.registered = True

    def __call__(self, message: CoapMessage) -> CoapMessage:
        path = message.uri_path
        if path[-1] == "config":
            item: object = msgspec.json.decode(message.payload)
        else:
            item = decode_uplink(message.payload)
        self.requests.append((path, item, message.token))
        if self.refuse_next:
            refusal = self.refuse_next.pop(0)
            if isinstance(refusal, Exception):
                raise refusal
            refusal.token = message.token
            return refusal
        if isinstance(item, Reg):
            self.registered = True
            body: msgspec.Struct | None = RegResp(
                ue_service_id=item.ue_service_id, registration_result="SUCCESS"
            )
        elif isinstance(item, Msg):
            status = "DELY_ACCEPTED" if self.registered else "DELY_REJECTED"
            body = MsgResp(
                message_id=item.message_id,
                delivery_status=status,
                failure_cause=None if self.registered else "NOT_REGISTERED",
            )
        elif path[-1] == "config":
            body = ConfResp(ue_service_id="ue-1", result="SUCCESS", segment_size=512)
        else:
            body = None
        if body is None:
            return make_response(message, Code.CHANGED)
        return make_response(
            message, Code.CHANGED, encode(body), content_format=CONTENT_FORMAT_JSON
        )

    def sent(self, kind: type) -> list[object]:
        return [item for _, item, _ in self.requests if isinstance(item, kind)]


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(server: FakeServer, clock: ManualClock) -> AsyncIterator[Client]:
    transport = MockTransport(server)
    async with Client("ue-1", "secret", transport=transport, clock=clock) as ue:
        yield ue
    assert ue.task_failures == 0


def _downlink(item: msgspec.Struct, token: bytes = b"\x77\x01") -> CoapMessage:
    from msgin5g.client.wire import post_options

    return CoapMessage(
        Type.CON,
        Code.POST,
        mid=0x1234,
        token=token,
        options=post_options(("msgin5g",)),
        payload=encode(item),
    )


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_register_sends_psk_token_and_returns_regresp(
    client: Client, server: FakeServer
) -> None:
    resp = await client.register()
    assert resp.registration_result == "SUCCESS" and client.registered
    (reg,) = server.sent(Reg)
    assert isinstance(reg, Reg)
    assert reg.ue_credential_info.auth_type == "PSK_TOKEN"
    assert reg.ue_credential_info == client.credential_info


async def test_refused_registration_raises_not_authorized(
    client: Client, server: FakeServer
) -> None:
    refusal = RegResp(
        ue_service_id="ue-1",
        registration_result="FAILURE",
        failure_cause="AUTHENTICATION_FAILED",
    )
    server.refuse_next.append(
        CoapMessage(
            Type.ACK,
            Code.CHANGED,
            payload=encode(refusal),
            options=[(12, b"\x32")],
        )
    )
    with pytest.raises(NotAuthorized) as refused:
        await client.register()
    assert refused.value.cause == "AUTHENTICATION_FAILED"
    assert not client.registered


async def test_error_code_becomes_remote_error_with_code_cause_and_body(
    client: Client, server: FakeServer
) -> None:
    body = ErrorBody(message_type="MSG", failure_cause="INVALID_MESSAGE", detail="x")
    server.refuse_next.append(
        CoapMessage(Type.ACK, Code.BAD_REQUEST, payload=encode(body))
    )
    with pytest.raises(RemoteError) as failed:
        await client.send("ue-2", b"hi")
    error = failed.value
    assert error.code == Code.BAD_REQUEST and error.status == "4.00"
    assert error.is_client_error
    assert error.cause == "INVALID_MESSAGE"
    assert error.body == body


async def test_request_api_decodes_the_expected_type(
    client: Client, server: FakeServer
) -> None:
    conf = ConfReq(ue_service_id="ue-1", ue_credential_info=client.credential_info)
    answer = await client.request(conf, ConfResp, resource="config")
    assert answer.segment_size == 512
    assert server.requests[-1][0] == ("msgin5g", "config")
    with pytest.raises(DecodeError):
        await client.request(conf, RegResp, resource="config")
    # no expected type: the body is ignored
    assert await client.request(conf, resource="config") is None


async def test_transport_errors_propagate(client: Client, server: FakeServer) -> None:
    server.refuse_next.append(RequestTimeout("no answer"))
    with pytest.raises(RequestTimeout):
        await client.register()


async def test_reset_triggers_one_reregistration_and_a_repeat(
    client: Client, server: FakeServer
) -> None:
    await client.register()
    server.refuse_next.append(RemoteReset("RST"))
    resp = await client.send("ue-2", b"payload")
    assert resp.delivery_status == "DELY_ACCEPTED"
    kinds = [type(item).__name__ for _, item, _ in server.requests]
    assert kinds == ["Reg", "Msg", "Reg", "Msg"]


async def test_not_registered_answer_triggers_reregistration(
    client: Client, server: FakeServer
) -> None:
    await client.register()
    server.registered = False  # the server lost us: MSGRESP NOT_REGISTERED
    resp = await client.send("ue-2", b"payload")
    assert resp.delivery_status == "DELY_ACCEPTED"
    assert len(server.sent(Reg)) == 2


async def test_long_payload_is_segmented(client: Client, server: FakeServer) -> None:
    client.segment_size = 100
    progress: list[tuple[int, int]] = []
    resp = await client.send(
        "ue-2", b"x" * 250, progress=lambda a, b: progress.append((a, b))
    )
    assert resp.delivery_status == "DELY_ACCEPTED"
    segments = server.sent(Msg)
    assert len(segments) == 3
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert all(isinstance(s, Msg) and s.segmentation_set_id for s in segments)


async def test_received_message_is_queued_once_and_reported_with_its_token(
    client: Client, server: FakeServer
) -> None:
    """Digest §3.9.3 step 2: the IMDN re-uses the Token of the server's MSG POST."""
    msg = Msg(
        message_id="m-1",
        originating_ue_service_id="ue-2",
        recipient_ue_service_id="ue-1",
        delivery_status_required=True,
        payload=b"hello",
    )
    transport = client._transport
    assert isinstance(transport, MockTransport)
    answer = await transport.deliver(_downlink(msg, token=b"\x77\x01"))
    assert answer.code == Code.CHANGED
    again = await transport.deliver(_downlink(msg, token=b"\x77\x02"))
    assert again.code == Code.CHANGED  # duplicate: acknowledged, not queued
    got = await client.receive(timeout=1)
    assert isinstance(got.item, Msg) and got.item.payload == b"hello"
    await _settle()
    reports = [
        (item, token) for _, item, token in server.requests if isinstance(item, Imdn)
    ]
    assert len(reports) == 1
    report, token = reports[0]
    assert isinstance(report, Imdn)
    assert report.message_id == "m-1" and report.recipient_ue_service_id == "ue-2"
    assert report.delivery_status == "REPT_DELY_SUCCESS"
    assert token == b"\x77\x01"
    # a report the application sends itself re-uses the Token as well
    await client.send_report(got.item)
    assert server.requests[-1][2] == b"\x77\x01"


async def test_message_for_another_ue_is_rejected_in_a_msgresp(
    client: Client,
) -> None:
    msg = Msg(
        message_id="m-2",
        originating_ue_service_id="ue-2",
        recipient_ue_service_id="ue-9",
        payload=b"x",
    )
    transport = client._transport
    assert isinstance(transport, MockTransport)
    answer = await transport.deliver(_downlink(msg))
    assert answer.code == Code.CHANGED
    assert json.loads(answer.payload)["failureCause"] == "RECIPIENT_UNKNOWN"


async def test_wrong_content_format_gets_4_15(client: Client) -> None:
    transport = client._transport
    assert isinstance(transport, MockTransport)
    request = CoapMessage(Type.CON, Code.POST, token=b"\x01", payload=b"{}")
    answer = await transport.deliver(request)
    assert answer.code == Code.UNSUPPORTED_CONTENT_FORMAT


async def test_claim_hook_takes_messages_before_the_inbox(
    server: FakeServer, clock: ManualClock
) -> None:
    claimed: list[object] = []

    async def claim(item: Msg | Imdn) -> bool | None:
        if item.recipient_ue_service_id == "behind-gw":
            claimed.append(item)
            return True
        return None

    transport = MockTransport(server)
    async with Client("gw", "s", transport=transport, clock=clock, claim=claim) as gw:
        for_ue = Msg(
            message_id="m-3",
            originating_ue_service_id="a",
            recipient_ue_service_id="behind-gw",
            payload=b"x",
        )
        assert (await transport.deliver(_downlink(for_ue))).code == Code.CHANGED
        assert len(claimed) == 1
        with pytest.raises(TimeoutError):
            await gw.receive(timeout=0)


async def test_receive_timeout_runs_on_the_clock(
    client: Client, clock: ManualClock
) -> None:
    waiting = asyncio.create_task(client.receive(timeout=30))
    await clock.run_for(29)
    assert not waiting.done()
    await clock.run_for(2)
    with pytest.raises(TimeoutError):
        await waiting


async def test_segmented_downlink_is_recovered_with_segrec_on_the_clock(
    client: Client, server: FakeServer, clock: ManualClock
) -> None:
    """A missing segment: after the gap timer (fake time) the client sends SEGREC."""
    from msgin5g.model.messages import SegRec

    whole = Msg(
        message_id="m-seg",
        originating_ue_service_id="ue-2",
        recipient_ue_service_id="ue-1",
        payload=b"y" * 300,
    )
    segments = split(whole, 100)
    transport = client._transport
    assert isinstance(transport, MockTransport)
    for segment in (segments[0], segments[2]):
        await transport.deliver(_downlink(segment))
    assert server.sent(SegRec) == []
    await clock.run_for(31)
    recovery = server.sent(SegRec)
    assert recovery and isinstance(recovery[0], SegRec)
    assert recovery[0].missing_segments == [2]
