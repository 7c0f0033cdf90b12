"""aiocoap's OSCORE client (a stack we did not write) against our server.

The aiocoap security context is written from the MSGin5G profile
(``oscore_profile.aiocoap_settings``): nothing is shared with our OSCORE code
but the PSK_TOKEN.
"""

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiocoap
import aiocoap.credentials
import aiocoap.resource
import pytest
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
from aiocoap.transports.oscore import OSCOREAddress

from msgin5g.client import Client
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg
from msgin5g.oscore_profile import aiocoap_settings
from msgin5g.server import Server

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


def context_dir(tmp_path: Path, ue: str, credential: str) -> Path:
    folder = tmp_path / f"oscore-{ue}"
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps(aiocoap_settings(ue, credential)))
    return folder


@pytest.fixture
async def aio_oscore(server: Server, tmp_path: Path) -> AsyncIterator[aiocoap.Context]:
    host, port = server.coap_address
    folder = context_dir(tmp_path, "ue1", psk_token("secret-ue1", "ue1"))
    ctx = await aiocoap.Context.create_client_context()
    ctx.client_credentials.load_from_dict(
        {f"coap://{host}:{port}/*": {"oscore": {"contextfile": str(folder)}}}
    )
    yield ctx
    await ctx.shutdown()


async def post(ctx: aiocoap.Context, server: Server, body: object) -> aiocoap.Message:
    host, port = server.coap_address
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"coap://{host}:{port}/msgin5g",
        payload=json.dumps(body).encode(),
        content_format=50,
    )
    return await ctx.request(request).response


REG = {
    "messageType": "REG",
    "ueServiceId": "ue1",
    "ueCredentialInfo": {
        "authType": "PSK_TOKEN",
        "credential": psk_token("secret-ue1", "ue1"),
    },
}


async def test_aiocoap_oscore_client_registers_and_sends(
    server: Server, aio_oscore: aiocoap.Context
) -> None:
    response = await post(aio_oscore, server, REG)  # Echo round trip inside
    assert response.code == aiocoap.CREATED, response.payload
    assert json.loads(response.payload)["registrationResult"] == "SUCCESS"
    edge = server.coap.oscore  # type: ignore[attr-defined]
    assert edge is not None and edge.is_bound("ue1")
    host, port = server.coap_address
    async with Client(
        "ue2", "secret-ue2", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0),
        oscore=True,
    ) as ue2:  # fmt: skip
        await ue2.register()
        msg = {
            "messageType": "MSG",
            "originatingUeServiceId": "ue1",
            "recipientUeServiceId": "ue2",
            "messageId": "aio-oscore-1",
            "payload": "c2VhbGVk",
        }
        response = await post(aio_oscore, server, msg)
        assert response.code == aiocoap.CHANGED
        assert json.loads(response.payload)["deliveryStatus"] == "DELY_ACCEPTED"
        got = await ue2.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.payload == b"sealed"


async def test_aiocoap_oscore_cannot_act_for_another_ue(
    server: Server, aio_oscore: aiocoap.Context
) -> None:
    await post(aio_oscore, server, REG)
    forged = {
        "messageType": "MSG",
        "originatingUeServiceId": "ue2",
        "recipientUeServiceId": "ue1",
        "messageId": "aio-forged",
        "payload": "eA==",
    }
    response = await post(aio_oscore, server, forged)
    assert response.code == aiocoap.FORBIDDEN
    assert json.loads(response.payload)["failureCause"] == "NOT_AUTHORIZED"


async def test_aiocoap_with_a_wrong_secret_is_refused(
    server: Server, tmp_path: Path
) -> None:
    host, port = server.coap_address
    folder = context_dir(tmp_path, "ue1", "not-the-token")
    ctx = await aiocoap.Context.create_client_context()
    ctx.client_credentials.load_from_dict(
        {f"coap://{host}:{port}/*": {"oscore": {"contextfile": str(folder)}}}
    )
    try:
        with pytest.raises(aiocoap.error.Error):
            await post(ctx, server, REG)
    finally:
        await ctx.shutdown()


class _Inbox(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, object]] = []
        self.protected: list[bool] = []
        self.arrived = asyncio.Event()

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.received.append(json.loads(request.payload))
        self.protected.append(isinstance(request.remote, OSCOREAddress))
        self.arrived.set()
        return aiocoap.Message(code=aiocoap.CHANGED)


async def test_aiocoap_oscore_ue_receives_protected_downlink(
    server: Server, tmp_path: Path
) -> None:
    """aiocoap as the UE: registers over OSCORE and receives a MSG the server
    protected with the same context (aiocoap's OSCORE server side verifies it)."""
    host, port = server.coap_address
    folder = context_dir(tmp_path, "ue1", psk_token("secret-ue1", "ue1"))
    inbox = _Inbox()
    site = aiocoap.resource.Site()
    site.add_resource(["msgin5g"], inbox)
    credentials = aiocoap.credentials.CredentialsMap()
    credentials.load_from_dict(
        {f"coap://{host}:{port}/*": {"oscore": {"contextfile": str(folder)}}}
    )
    shared = credentials[f"coap://{host}:{port}/*"]
    server_credentials = aiocoap.credentials.CredentialsMap()
    server_credentials[":msgin5g-server"] = shared
    wrapped = OscoreSiteWrapper(site, server_credentials)
    ctx = await aiocoap.Context.create_server_context(wrapped, bind=("127.0.0.1", 0))
    ctx.client_credentials = credentials
    try:
        response = await post(ctx, server, REG)
        assert response.code == aiocoap.CREATED, response.payload
        async with Client(
            "ue2", "secret-ue2", server=f"coap://{host}:{port}",
            bind=("127.0.0.1", 0),
        ) as ue2:  # fmt: skip
            await ue2.register()
            await ue2.send("ue1", b"for aiocoap")
            await asyncio.wait_for(inbox.arrived.wait(), 15)
        assert inbox.protected == [True]  # verified by aiocoap's OSCORE layer
        item = inbox.received[0]
        assert item["messageType"] == "MSG"
        assert base64.b64decode(str(item["payload"])) == b"for aiocoap"
    finally:
        await ctx.shutdown()
