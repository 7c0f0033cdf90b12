"""Gateway, server and constrained UEs in one process over real UDP sockets.

Real parts: the server on a SQLite file, the gateway on another SQLite file, each
constrained UE on its own UDP socket. The process-level scenarios (restart,
libcoap) are in tests/e2e and tests/interop.
"""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.coap.endpoint import Endpoint
from msgin5g.coap.message import CoapMessage, encode_uint, uri_path_options
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.config import load_config
from msgin5g.gateway import ConstrainedUE, Gateway, GatewayConfig
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Imdn, Msg
from msgin5g.server import Server, provision_ue

pytestmark = pytest.mark.timeout(60)


@dataclass
class Bed:
    server: Server
    gateway: Gateway
    server_uri: str
    gateway_uri: str


async def _bed(tmp_path: Path, **overrides: object) -> AsyncIterator[Bed]:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    for ue in ["gw", "ue1", *(f"c{i}" for i in range(12))]:
        await provision_ue(url, ue, f"s-{ue}")
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "coap.ack_timeout": "0.2",
            "coap.max_retransmit": "1",
            "rest.enabled": "false",
        },
    )
    async with Server(config) as server:
        host, port = server.coap_address
        settings: dict[str, object] = {
            "ue_service_id": "gw",
            "secret": "s-gw",
            "server": f"coap://{host}:{port}",
            "listen": "127.0.0.1:0",
            "storage": f"sqlite:///{tmp_path / 'gateway.db'}",
            "batch_size": 5,
            "max_wait": 0.5,
            "guard": 0.0,
            "retry_interval": 0.3,
        }
        settings.update(overrides)
        gwc = GatewayConfig(**settings)  # type: ignore[arg-type]
        async with Gateway(gwc) as gateway:
            for _ in range(100):
                if gateway.upstream.registered:
                    break
                await asyncio.sleep(0.05)
            gh, gp = gateway.local_address
            yield Bed(server, gateway, f"coap://{host}:{port}", f"coap://{gh}:{gp}")


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    async for b in _bed(tmp_path):
        yield b


def _bulk_count(bed: Bed) -> int:
    return bed.gateway.bulk_requests


async def test_bulk_registration_splits_with_mid_and_token(bed: Bed) -> None:
    ues = [ConstrainedUE(f"c{i}", f"s-c{i}", gateway=bed.gateway_uri) for i in range(7)]
    ues.append(ConstrainedUE("c7", "wrong-secret", gateway=bed.gateway_uri))
    for ue in ues:
        await ue.start()
    try:
        outcomes = await asyncio.gather(*(ue.register(timeout=20) for ue in ues))
    finally:
        for ue in ues:
            await ue.aclose()
    for outcome in outcomes[:7]:
        assert outcome.succeeded and not outcome.piggybacked
        assert outcome.response_mid == outcome.request_mid
        assert outcome.response_token == outcome.request_token
        assert outcome.response.msgin5g_service_id == "org.3gpp.msgin5g"
        assert outcome.response.failure_cause is None
    bad = outcomes[7]
    assert not bad.succeeded
    assert bad.response.failure_cause == "AUTHENTICATION_FAILED"
    assert bad.response_mid == bad.request_mid
    # 8 requests, batch size 5: two bulk requests, no individual one
    assert bed.gateway.bulk_requests == 2
    assert bed.gateway.individual_requests == 0
    registry = bed.server.service.registry  # type: ignore[union-attr]
    assert registry.get("c0").gateway == "gw"  # type: ignore[union-attr]
    assert registry.get("c7") is None
    status = await bed.gateway.status()
    assert status["cachedRequests"] == []
    assert status["constrainedUes"] == 7


async def test_urgent_bypasses_batching_and_dereg_in_bulk(bed: Bed) -> None:
    async with ConstrainedUE("c1", "s-c1", gateway=bed.gateway_uri) as ue:
        outcome = await ue.register(urgent=True, timeout=10)
        assert outcome.succeeded
        assert outcome.response_mid == outcome.request_mid
        assert bed.gateway.bulk_requests == 0
        assert bed.gateway.individual_requests == 1
        gone = await ue.deregister(timeout=10)
        assert gone.succeeded and gone.response.deregistration_result == "SUCCESS"
        assert gone.response_token == gone.request_token
        assert bed.gateway.bulk_requests == 1
    assert bed.server.service.registry.get("c1") is None  # type: ignore[union-attr]


async def test_expected_registration_time_is_reported(tmp_path: Path) -> None:
    async for bed in _bed(tmp_path, max_wait=30.0, batch_size=50):
        async with ConstrainedUE("c2", "s-c2", gateway=bed.gateway_uri) as ue:
            task = asyncio.create_task(ue.register(wait_time=20, timeout=30))
            for _ in range(100):
                when = await ue.expected_registration_time()
                if when is not None:
                    break
                await asyncio.sleep(0.02)
            assert when is not None
            assert bed.gateway.bulk_requests == 0
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_messages_both_ways_with_reports(bed: Bed) -> None:
    async with (
        ConstrainedUE("c3", "s-c3", gateway=bed.gateway_uri) as ue,
        Client("ue1", "s-ue1", server=bed.server_uri, bind=("127.0.0.1", 0)) as peer,
    ):
        assert (await ue.register(timeout=10)).succeeded
        await peer.register()
        resp = await ue.send("ue1", b"up", report=True)
        assert resp is not None and resp.delivery_status == "DELY_ACCEPTED"
        got = await peer.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.originating_ue_service_id == "c3" and got.item.payload == b"up"
        report = await ue.receive(timeout=10)
        assert isinstance(report, Imdn) and report.message_id == resp.message_id
        down = await peer.send("c3", b"down", report=True)
        assert down.delivery_status == "DELY_ACCEPTED"
        received = await ue.receive(timeout=10)
        assert isinstance(received, Msg) and received.payload == b"down"
        assert received.msgin5g_service_id == "org.3gpp.msgin5g"
        back = await peer.receive(timeout=10)
        assert isinstance(back.item, Imdn) and back.item.message_id == down.message_id


async def test_applications_are_demultiplexed_by_application_id(bed: Bed) -> None:
    async with (
        ConstrainedUE("app-a", gateway=bed.gateway_uri) as app_a,
        ConstrainedUE("app-b", gateway=bed.gateway_uri) as app_b,
        Client("ue1", "s-ue1", server=bed.server_uri, bind=("127.0.0.1", 0)) as peer,
    ):
        assert (await app_a.app_register("meter", "0a0b0c")).registration_result == (
            "SUCCESS"
        )
        await app_b.app_register("valve", "0a0b0d")
        await peer.register()
        await peer.send("gw", b"to-valve", application_id="valve")
        await peer.send("gw", b"to-meter", application_id="meter")
        got_b = await app_b.receive(timeout=10)
        got_a = await app_a.receive(timeout=10)
        assert isinstance(got_a, Msg) and got_a.payload == b"to-meter"
        assert isinstance(got_b, Msg) and got_b.payload == b"to-valve"
        resp = await app_a.send("ue1", "hi", application_id="meter", report=True)
        assert resp is not None and resp.delivery_status == "DELY_ACCEPTED"
        got = await peer.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.originating_ue_service_id == "gw"
        assert got.item.application_id == "meter"
        gone = await app_b.app_deregister("valve")
        assert gone.deregistration_result == "SUCCESS"


async def test_configuration_single_and_bulk(bed: Bed) -> None:
    async with (
        ConstrainedUE("c4", "s-c4", gateway=bed.gateway_uri) as ue,
        ConstrainedUE("c5", "bad", gateway=bed.gateway_uri) as bad,
    ):
        document, refused = await asyncio.gather(ue.configure(), bad.configure())
    assert document.result == "SUCCESS"
    assert document.msgin5g_server_address == bed.gateway.uri
    assert ue.server_address == bed.gateway.uri
    assert document.segment_size == 2048
    assert refused.result == "FAILURE"
    assert refused.failure_cause == "AUTHENTICATION_FAILED"


async def test_gateway_answers_bad_input_with_coap_errors(bed: Bed) -> None:
    host, port = bed.gateway.local_address
    async with await Endpoint.create(("127.0.0.1", 0)) as client:
        cf = (OptionNumber.CONTENT_FORMAT, encode_uint(50))
        path = (OptionNumber.URI_PATH, b"msgin5g")
        bad_json = CoapMessage(Type.CON, Code.POST, options=[path, cf], payload=b"{")
        response = await client.request(bad_json, (host, port))
        assert response.code == Code.BAD_REQUEST
        assert b"INVALID_MESSAGE" in response.payload
        wrong_sid = CoapMessage(
            Type.CON,
            Code.POST,
            options=[path, cf],
            payload=b'{"msgin5gServiceId":"org.example","messageType":"REG",'
            b'"ueServiceId":"x","ueCredentialInfo":{"authType":"NONE"}}',
        )
        response = await client.request(wrong_sid, (host, port))
        assert response.code == Code.BAD_REQUEST
        assert b"msgin5gServiceId" in response.payload
        no_sid_msg = CoapMessage(
            Type.CON,
            Code.POST,
            options=[path, cf],
            payload=b'{"messageType":"MSG","targetAddress":"ue1","targetType":"UE",'
            b'"messageId":"m-1","payload":"AA=="}',
        )
        response = await client.request(no_sid_msg, (host, port))
        assert response.code == Code.BAD_REQUEST
        assert b"msgin5gServiceId" in response.payload
        unknown = CoapMessage(
            Type.CON,
            Code.POST,
            options=[path, cf],
            payload=b'{"msgin5gServiceId":"org.3gpp.msgin5g","messageType":"NOPE"}',
        )
        response = await client.request(unknown, (host, port))
        assert response.code == Code.BAD_REQUEST
        assert b"UNSUPPORTED_MESSAGE_TYPE" in response.payload
        text = CoapMessage(Type.CON, Code.POST, options=[path], payload=b"x")
        response = await client.request(text, (host, port))
        assert response.code == Code.UNSUPPORTED_CONTENT_FORMAT
    # still serving
    async with ConstrainedUE("c6", "s-c6", gateway=bed.gateway_uri) as ue:
        assert (await ue.register(urgent=True, timeout=10)).succeeded


async def _post_config(
    bed: Bed, payload: bytes, accept: int | None = None
) -> CoapMessage:
    host, port = bed.server.coap_address
    options = [
        (OptionNumber.URI_PATH, b"msgin5g"),
        (OptionNumber.URI_PATH, b"config"),
        (OptionNumber.CONTENT_FORMAT, encode_uint(50)),
    ]
    if accept is not None:
        options.append((OptionNumber.ACCEPT, encode_uint(accept)))
    async with await Endpoint.create(("127.0.0.1", 0)) as client:
        request = CoapMessage(Type.CON, Code.POST, options=options, payload=payload)
        return await client.request(request, (host, port))


async def test_server_configuration_resource(bed: Bed) -> None:
    from msgin5g.codec.ue_payload import encode
    from msgin5g.model.credentials import psk_token
    from msgin5g.model.messages import BulkConfReq, ConfReq, UECredentialInfo

    def conf(ue: str, secret: str) -> ConfReq:
        info = UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token(secret, ue))
        return ConfReq(ue_service_id=ue, ue_credential_info=info)

    xml = await _post_config(bed, encode(conf("ue1", "s-ue1")), accept=41)
    assert xml.code == Code.CONTENT and xml.content_format == 41
    host, port = bed.server.coap_address
    assert (
        f"<m5g:MSGin5G-Server-address>coap://{host}:{port}/msgin5g<".encode()
        in xml.payload
    )
    assert b"<m5g:MSGin5G-UE-Service-id>ue1<" in xml.payload
    assert b"urn:3gpp:ns:seal:MSGin5GUEConfig:1.0" in xml.payload
    bogus = conf("gw", "not-the-secret")
    bulk = BulkConfReq(
        ue_service_id="gw",
        ue_credential_info=bogus.ue_credential_info,
        num_of_conf_requests=1,
        conf_requests=[conf("ue1", "s-ue1")],
    )
    refused = await _post_config(bed, encode(bulk))
    assert refused.code == Code.CONTENT
    assert b'"failureCause":"NOT_AUTHORIZED"' in refused.payload
    broken = await _post_config(bed, b'{"messageType":"CONFREQ"}')
    assert broken.code == Code.BAD_REQUEST and b"ueServiceId" in broken.payload


async def test_dereg_from_a_foreign_address_is_refused_and_keeps_the_ue(
    bed: Bed,
) -> None:
    """Attack: anyone on the local link de-registered a constrained UE."""
    async with ConstrainedUE("c4", "s-c4", gateway=bed.gateway_uri) as ue:
        assert (await ue.register(urgent=True, timeout=10)).succeeded
        request = CoapMessage(
            Type.CON,
            Code.POST,
            mid=0x4242,
            token=b"\x42",
            options=[
                *uri_path_options(("msgin5g",)),
                (OptionNumber.CONTENT_FORMAT, encode_uint(50)),
            ],
            payload=json.dumps(
                {
                    "messageType": "DEREG",
                    "ueServiceId": "c4",
                    "msgin5gServiceId": "org.3gpp.msgin5g",
                    "registrationUrgentDegree": "URGENT",
                }
            ).encode(),
        )
        loop = asyncio.get_running_loop()
        host, port = bed.gateway.local_address
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))
            await loop.sock_sendto(sock, request.encode(), (host, port))
            answer = CoapMessage.decode(
                await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            )
        assert answer.code == Code.CHANGED
        body = json.loads(answer.payload)
        assert body["deregistrationResult"] == "FAILURE"
        assert body["failureCause"] == "NOT_AUTHORIZED"
        assert bed.gateway.individual_requests == 1  # only c4's own REG went up
    registry = bed.server.service.registry  # type: ignore[union-attr]
    assert registry.get("c4") is not None
    status = await bed.gateway.status()
    assert status["constrainedUes"] == 1


async def test_reg_without_msgin5g_service_id_is_accepted(bed: Bed) -> None:
    """Conformance: TS 24.538-R18 puts ``msgin5gServiceId`` on the answer, not the REG."""
    reg = {
        "messageType": "REG",
        "ueServiceId": "c8",
        "ueCredentialInfo": {
            "authType": "PSK_TOKEN",
            "credential": psk_token("s-c8", "c8"),
        },
        "registrationUrgentDegree": "URGENT",
    }
    request = CoapMessage(
        Type.CON,
        Code.POST,
        mid=0x5151,
        token=b"\x51\x52",
        options=[
            *uri_path_options(("msgin5g",)),
            (OptionNumber.CONTENT_FORMAT, encode_uint(50)),
        ],
        payload=json.dumps(reg).encode(),
    )
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        await loop.sock_sendto(sock, request.encode(), bed.gateway.local_address)
        ack = CoapMessage.decode(await asyncio.wait_for(loop.sock_recv(sock, 4096), 5))
        assert (ack.mtype, ack.code, ack.mid) == (Type.ACK, 0, 0x5151)  # empty ACK
        answer = CoapMessage.decode(
            await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
        )
        reply = CoapMessage(Type.ACK, Code.CHANGED, mid=answer.mid, token=answer.token)
        await loop.sock_sendto(sock, reply.encode(), bed.gateway.local_address)
    assert answer.code == Code.POST
    assert (answer.mid, answer.token) == (0x5151, b"\x51\x52")
    body = json.loads(answer.payload)
    assert body["messageType"] == "REGRESP"
    assert body["registrationResult"] == "SUCCESS"
    assert body["msgin5gServiceId"] == "org.3gpp.msgin5g"
    assert bed.server.service.registry.get("c8") is not None  # type: ignore[union-attr]


async def test_oscore_ue_talks_to_the_server_through_the_gateway_unread(
    bed: Bed,
) -> None:
    """An OSCORE UE registers, sends and receives end to end through the
    gateway; the gateway only forwards ciphertext (it has no context)."""
    relay = bed.gateway.oscore_relay
    async with (
        Client("c1", "s-c1", server=bed.gateway_uri, bind=("127.0.0.1", 0),
               oscore=True) as device,
        Client("ue1", "s-ue1", server=bed.server_uri, bind=("127.0.0.1", 0)) as ue1,
    ):  # fmt: skip
        assert (await device.register()).registration_result == "SUCCESS"
        registry = bed.server.service.registry  # type: ignore[union-attr]
        registration = registry.get("c1")
        assert registration.source.port == relay.address[1]  # the relay socket
        await ue1.register()
        resp = await device.send("ue1", b"through the gateway")
        assert resp.delivery_status == "DELY_ACCEPTED"
        got = await ue1.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.payload == b"through the gateway"
        await ue1.send("c1", b"back down")
        back = await device.receive(timeout=10)
        assert isinstance(back.item, Msg)
        assert back.item.payload == b"back down"
    assert relay.relayed_up >= 3  # REG (twice: Echo), MSG
    assert relay.relayed_down >= 1
