"""Topic subscription in the Observe form (digest §3.13.4) against real CoAP peers.

libcoap's ``coap-client-notls -s`` and an aiocoap observation register with
``GET /msgin5g/topics/{topic}`` (Observe = 0) from the address they registered
from; publications of another UE (our ``msgin5g.client.Client``) must reach
them as 2.05 notifications, and stop once they deregister (libcoap: GET with
Observe = 1; aiocoap: cancel, i.e. RST to the next notification). Also: an
observation survives a server restart, and an unacknowledged CON notification
removes it. The tests without the ``interop`` marker drive the resource with
our own engine as client (deregistration by GET, status, error codes).
"""

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiocoap
import pytest

from msgin5g.client import Client
from msgin5g.coap import (
    CoapMessage,
    Code,
    Endpoint,
    OptionNumber,
    Type,
    encode_uint,
    uri_path_options,
)
from msgin5g.config import load_config
from msgin5g.model.credentials import psk_token
from msgin5g.server import Server, provision_ue
from tests.conftest import require_binary

pytestmark = pytest.mark.timeout(60)
interop = pytest.mark.interop

TOPIC = "alerts/zone-3"
TOPIC_URI_PATH = "msgin5g/topics/alerts%2Fzone-3"  # one Uri-Path segment


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_config(
    url: str, port: int = 0, *, extra: dict[str, str] | None = None
) -> Any:
    return load_config(
        None,
        {},
        {
            "coap.bind": f"127.0.0.1:{port}",
            "storage.url": url,
            "rest.enabled": "false",
            "coap.ack_timeout": "0.2",
            "coap.max_retransmit": "1",
            **(extra or {}),
        },
    )


@pytest.fixture
async def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'observe.db'}"
    for ue in ("obs", "pub"):
        await provision_ue(url, ue, f"secret-{ue}")
    return url


@pytest.fixture
async def server(url: str) -> AsyncIterator[Server]:
    async with Server(server_config(url)) as srv:
        yield srv


def base(server: Server) -> str:
    host, port = server.coap_address
    return f"coap://{host}:{port}"


def reg_json(ue: str = "obs") -> str:
    return json.dumps(
        {
            "messageType": "REG",
            "ueServiceId": ue,
            "ueCredentialInfo": {
                "authType": "PSK_TOKEN",
                "credential": psk_token(f"secret-{ue}", ue),
            },
        }
    )


def publisher(server: Server) -> Client:
    return Client("pub", "secret-pub", server=base(server), bind=("127.0.0.1", 0))


async def until(condition: Callable[[], bool], *, limit: float = 10.0) -> None:
    """Poll ``condition`` (no timing is asserted; ``limit`` only bounds a hang)."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.02)


def observers(server: Server) -> list[str]:
    assert server.service is not None
    return [o.subscriber for o in server.service.topics.observers(TOPIC)]


# libcoap ------------------------------------------------------------------------


@interop
async def test_libcoap_observes_a_topic(server: Server) -> None:
    binary = require_binary("coap-client-notls")
    port = free_port()
    reg = await asyncio.create_subprocess_exec(
        binary,
        *("-B", "10", "-p", str(port), "-m", "post", "-t", "50"),
        *("-e", reg_json(), f"{base(server)}/msgin5g"),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(reg.communicate(), 30)
    assert json.loads(out)["registrationResult"] == "SUCCESS"
    # observe for a few seconds, then libcoap deregisters (GET, Observe = 1)
    watch = await asyncio.create_subprocess_exec(
        binary,
        *("-B", "20", "-w", "-s", "4", "-p", str(port), "-A", "50"),
        f"{base(server)}/{TOPIC_URI_PATH}?exp=600",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until(lambda: observers(server) == ["obs"])
        async with publisher(server) as pub:
            await pub.register()
            resp = await pub.publish(TOPIC, "storm")
            assert resp.delivery_status == "DELY_ACCEPTED"
            out, _ = await asyncio.wait_for(watch.communicate(), 30)
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.strip()]
    answer, notification = lines[0], lines[1]
    assert answer["messageType"] == "TOPICSUBRESP"
    assert answer["topicResults"] == [{"messagingTopic": TOPIC, "result": "SUCCESS"}]
    assert "expiration" in answer
    assert notification["messageType"] == "MSG"
    assert notification["messagingTopic"] == TOPIC
    assert notification["recipientUeServiceId"] == "obs"
    assert notification["originatingUeServiceId"] == "pub"
    assert notification["payload"] == "c3Rvcm0="  # "storm"
    # libcoap deregistered when its observation time was over
    await until(lambda: observers(server) == [])


@interop
async def test_libcoap_unregistered_observer_is_refused(server: Server) -> None:
    binary = require_binary("coap-client-notls")
    proc = await asyncio.create_subprocess_exec(
        binary,
        *("-B", "10", "-s", "2", f"{base(server)}/{TOPIC_URI_PATH}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = (out + err).decode()
    assert "4.03" in text
    assert '"failureCause":"NOT_REGISTERED"' in text
    assert observers(server) == []


# aiocoap ------------------------------------------------------------------------


@pytest.fixture
async def aio() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context()
    yield ctx
    await ctx.shutdown()


async def aio_register(ctx: aiocoap.Context, server: Server) -> None:
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"{base(server)}/msgin5g",
        payload=reg_json().encode(),
        content_format=50,
    )
    response = await ctx.request(request).response
    assert json.loads(response.payload)["registrationResult"] == "SUCCESS"


def aio_observe(ctx: aiocoap.Context, server: Server) -> Any:
    request = aiocoap.Message(
        code=aiocoap.GET, uri=f"{base(server)}/{TOPIC_URI_PATH}", observe=0
    )
    return ctx.request(request)


async def observation_ends(iterator: Any) -> bool:
    """Consume notifications until aiocoap ends the observation."""
    try:
        while True:
            await asyncio.wait_for(iterator.__anext__(), 10)
    except (StopAsyncIteration, aiocoap.error.Error):
        return True


async def next_notification(iterator: Any) -> dict[str, Any]:
    message = await asyncio.wait_for(iterator.__anext__(), 10)
    assert message.code == aiocoap.CONTENT
    assert message.opt.content_format == 50
    assert message.opt.observe is not None
    body: dict[str, Any] = json.loads(message.payload)
    return body


@interop
async def test_aiocoap_observes_then_cancels(
    server: Server, aio: aiocoap.Context
) -> None:
    await aio_register(aio, server)
    pending = aio_observe(aio, server)
    first = await pending.response
    assert first.code == aiocoap.CONTENT and first.opt.observe is not None
    answer = json.loads(first.payload)
    assert answer["messageType"] == "TOPICSUBRESP"
    assert answer["originatingUeServiceId"] == "obs"
    assert observers(server) == ["obs"]
    iterator = pending.observation.__aiter__()
    async with publisher(server) as pub:
        await pub.register()
        await pub.publish(TOPIC, "one")
        await pub.publish(TOPIC, "two")
        got = [await next_notification(iterator) for _ in range(2)]
        assert [g["payload"] for g in got] == ["b25l", "dHdv"]
        assert {g["recipientUeServiceId"] for g in got} == {"obs"}
        assert {g["messagingTopic"] for g in got} == {TOPIC}
        # cancel: aiocoap answers the next notifications with RST
        pending.observation.cancel()
        for _ in range(20):
            await pub.publish(TOPIC, "ignored")
            if not observers(server):
                break
            await asyncio.sleep(0.1)
        assert observers(server) == []


@interop
async def test_observation_survives_a_server_restart(
    url: str, aio: aiocoap.Context
) -> None:
    port = free_port()
    async with Server(server_config(url, port)) as first:
        await aio_register(aio, first)
        pending = aio_observe(aio, first)
        await pending.response
        assert observers(first) == ["obs"]
    iterator = pending.observation.__aiter__()
    async with Server(server_config(url, port)) as second:
        assert observers(second) == ["obs"]
        async with publisher(second) as pub:
            await pub.register()
            await pub.publish(TOPIC, "after restart")
            got = await next_notification(iterator)
    assert got["payload"] == "YWZ0ZXIgcmVzdGFydA=="
    assert got["recipientUeServiceId"] == "obs"


@interop
async def test_unacknowledged_notification_removes_the_observation(
    server: Server,
) -> None:
    ctx = await aiocoap.Context.create_client_context()
    try:
        await aio_register(ctx, server)
        await aio_observe(ctx, server).response
    finally:
        await ctx.shutdown()  # the observer is gone: nobody ACKs
    assert observers(server) == ["obs"]
    async with publisher(server) as pub:
        await pub.register()
        await pub.publish(TOPIC, "into the void")
    await until(lambda: observers(server) == [])


@interop
async def test_deregistration_ends_the_observation(
    server: Server, aio: aiocoap.Context
) -> None:
    await aio_register(aio, server)
    pending = aio_observe(aio, server)
    await pending.response
    iterator = pending.observation.__aiter__()
    dereg = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"{base(server)}/msgin5g",
        payload=json.dumps({"messageType": "DEREG", "ueServiceId": "obs"}).encode(),
        content_format=50,
    )
    response = await aio.request(dereg).response
    assert json.loads(response.payload)["deregistrationResult"] == "SUCCESS"
    assert observers(server) == []
    # the server's final 2.05 without Observe ends the client's observation
    assert await observation_ends(iterator)


# our own engine as client (no third-party peer) ----------------------------------


def get(observe: int | None, topic: str = TOPIC, *, query: str = "") -> CoapMessage:
    options = uri_path_options(("msgin5g", "topics", topic))
    if observe is not None:
        options.append((OptionNumber.OBSERVE, encode_uint(observe)))
    if query:
        options.append((OptionNumber.URI_QUERY, query.encode()))
    return CoapMessage(Type.CON, Code.GET, options=options)


async def test_get_status_deregistration_and_errors(server: Server) -> None:
    peer = server.coap_address
    async with await Endpoint.create(("127.0.0.1", 0)) as ue:
        refused = await ue.request(get(0), peer)
        assert refused.code == Code.FORBIDDEN
        assert json.loads(refused.payload)["failureCause"] == "NOT_REGISTERED"
        reg = CoapMessage(
            Type.CON,
            Code.POST,
            options=[
                *uri_path_options(("msgin5g",)),
                (OptionNumber.CONTENT_FORMAT, encode_uint(50)),
            ],
            payload=reg_json().encode(),
        )
        assert (await ue.request(reg, peer)).code == Code.CREATED
        assert (await ue.request(get(None), peer)).code == Code.NOT_FOUND
        answer = await ue.request(get(0, query="exp=120"), peer, token=b"tk")
        assert answer.code == Code.CONTENT and answer.observe is not None
        assert answer.content_format == 50
        body = json.loads(answer.payload)
        assert body["messageType"] == "TOPICSUBRESP" and "expiration" in body
        assert observers(server) == ["obs"]
        status = await ue.request(get(None), peer)
        assert status.code == Code.CONTENT and status.observe is None
        assert json.loads(status.payload)["expiration"] == body["expiration"]
        gone = await ue.request(get(1), peer, token=b"tk")
        assert gone.code == Code.CONTENT and gone.observe is None
        assert json.loads(gone.payload)["messageType"] == "TOPICUNSUBRESP"
        assert observers(server) == []
        for bad in (get(0, "a+b"), get(0, query="exp=soon"), get(0, query="exp=0")):
            answer = await ue.request(bad, peer)
            assert answer.code == Code.BAD_REQUEST
        assert (
            json.loads((await ue.request(get(0, "#"), peer)).payload)["failureCause"]
            == "INVALID_TOPIC"
        )
        deeper = get(0)
        deeper.options.append((OptionNumber.URI_PATH, b"more"))
        assert (await ue.request(deeper, peer)).code == Code.NOT_FOUND
        post = CoapMessage(
            Type.CON, Code.POST, options=uri_path_options(("msgin5g", "topics", "x"))
        )
        assert (await ue.request(post, peer)).code == Code.METHOD_NOT_ALLOWED


@interop
async def test_aiocoap_non_notifications_and_rst(
    url: str, aio: aiocoap.Context
) -> None:
    config = server_config(url, extra={"delivery.observe_con_every": "2"})
    async with Server(config) as server:
        await aio_register(aio, server)
        pending = aio_observe(aio, server)
        await pending.response
        iterator = pending.observation.__aiter__()
        types = []
        async with publisher(server) as pub:
            await pub.register()
            for text in ("one", "two", "three"):
                await pub.publish(TOPIC, text)
                message = await asyncio.wait_for(iterator.__anext__(), 10)
                types.append(message.mtype)
            assert types == [aiocoap.CON, aiocoap.NON, aiocoap.CON]
            # cancelled: aiocoap answers a later notification (CON or NON) with RST
            pending.observation.cancel()
            for _ in range(20):
                await pub.publish(TOPIC, "ignored")
                if not observers(server):
                    break
                await asyncio.sleep(0.1)
            assert observers(server) == []
