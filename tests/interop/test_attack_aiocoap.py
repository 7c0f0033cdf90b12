"""aiocoap (a client we did not write) sends hostile JSON: 4.00, never 5.00."""

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiocoap
import pytest

from msgin5g.config import load_config
from msgin5g.server import Server, provision_ue

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    url = f"sqlite:///{tmp_path / 'msgin5g.db'}"
    await provision_ue(url, "ue1", "secret-ue1")
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "rest.enabled": "false",
        },
    )
    async with Server(config) as srv:
        yield srv


@pytest.fixture
async def aio_client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context()
    yield ctx
    await ctx.shutdown()


@pytest.mark.parametrize(
    "payload",
    [
        # aiocoap sends payloads above 1 KiB block-wise (answered 4.13), so
        # these stay below: the limit is 32 levels
        b'{"messageType":"REG","x":' + b"[" * 480 + b"]" * 480 + b"}",
        b'{"messageType":"REG","x":' + b'{"a":' * 150 + b"1" + b"}" * 150 + b"}",
        json.dumps(
            {
                "messageType": "REG",
                "ueServiceId": "ue1\nFORGED",
                "ueCredentialInfo": {"authType": "NONE"},
            }
        ).encode(),
        b'{"messageType":"REG","ueServiceId":"ue1","ueCredentialInfo":'
        b'{"authType":"NONE"},"waitTime":' + b"9" * 30 + b"}",
    ],
    ids=["deep-arrays", "deep-objects", "newline-id", "huge-integer"],
)
async def test_aiocoap_hostile_payload_gets_400(
    server: Server,
    aio_client: aiocoap.Context,
    payload: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    host, port = server.coap_address
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"coap://{host}:{port}/msgin5g",
        payload=payload,
        content_format=50,
    )
    response = await aio_client.request(request).response
    assert response.code == aiocoap.BAD_REQUEST
    body = json.loads(response.payload)
    assert body["failureCause"] == "INVALID_MESSAGE"
    assert body["messageType"] == "REG"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
