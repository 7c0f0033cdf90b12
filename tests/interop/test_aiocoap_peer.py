"""aiocoap (a CoAP stack we did not write) as client of our server and as a UE we deliver to."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import aiocoap
import aiocoap.resource
import pytest

from msgin5g.client import Client
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg
from msgin5g.server import Server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


@pytest.fixture
async def aio_client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context()
    yield ctx
    await ctx.shutdown()


def uri(server: Server) -> str:
    host, port = server.coap_address
    return f"coap://{host}:{port}/msgin5g"


async def post(
    ctx: aiocoap.Context, url: str, body: dict[str, object]
) -> aiocoap.Message:
    request = aiocoap.Message(
        code=aiocoap.POST, uri=url, payload=json.dumps(body).encode(), content_format=50
    )
    return await ctx.request(request).response


async def test_aiocoap_client_registers_and_sends(
    server: Server, aio_client: aiocoap.Context
) -> None:
    reg = {
        "messageType": "REG",
        "ueServiceId": "ue1",
        "ueCredentialInfo": {
            "authType": "PSK_TOKEN",
            "credential": psk_token("secret-ue1", "ue1"),
        },
    }
    response = await post(aio_client, uri(server), reg)
    assert response.code == aiocoap.CREATED
    assert response.opt.content_format == 50
    assert json.loads(response.payload)["registrationResult"] == "SUCCESS"
    again = await post(aio_client, uri(server), reg)
    assert again.code == aiocoap.CHANGED
    host, port = server.coap_address
    async with Client(
        "ue2", "secret-ue2", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0)
    ) as ue2:
        await ue2.register()
        msg = {
            "messageType": "MSG",
            "originatingUeServiceId": "ue1",
            "recipientUeServiceId": "ue2",
            "messageId": "aio-1",
            "payload": "YWlv",
        }
        response = await post(aio_client, uri(server), msg)
        assert response.code == aiocoap.CHANGED
        assert json.loads(response.payload)["deliveryStatus"] == "DELY_ACCEPTED"
        got = await ue2.receive(timeout=5)
        assert isinstance(got.item, Msg) and got.item.payload == b"aio"


class _Inbox(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.received: asyncio.Queue[dict[str, object]] = asyncio.Queue()

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.received.put_nowait(json.loads(request.payload))
        return aiocoap.Message(code=aiocoap.CHANGED)


async def test_our_server_delivers_to_an_aiocoap_ue(
    server: Server, aio_client: aiocoap.Context
) -> None:
    inbox = _Inbox()
    site = aiocoap.resource.Site()
    site.add_resource(["msgin5g"], inbox)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        aio_port = probe.getsockname()[1]
    aio_server = await aiocoap.Context.create_server_context(
        site, bind=("127.0.0.1", aio_port), transports=["udp6"]
    )
    try:
        host, port = server.coap_address
        # ue2 registers through our client but asks to be reached at the aiocoap UE
        async with (
            Client(
                "ue2",
                "secret-ue2",
                server=f"coap://{host}:{port}",
                bind=("127.0.0.1", 0),
            ) as ue2,
            Client(
                "ue1",
                "secret-ue1",
                server=f"coap://{host}:{port}",
                bind=("127.0.0.1", 0),
            ) as ue1,
        ):
            await ue2.register(client_address=f"coap://127.0.0.1:{aio_port}/msgin5g")
            await ue1.register()
            resp = await ue1.send("ue2", b"to aiocoap")
            assert resp.delivery_status == "DELY_ACCEPTED"
            body = await asyncio.wait_for(inbox.received.get(), 10)
            assert body["messageType"] == "MSG"
            assert body["payload"] == "dG8gYWlvY29hcA=="
            assert body["recipientUeServiceId"] == "ue2"
    finally:
        await aio_server.shutdown()
