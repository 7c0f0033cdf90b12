"""Server and Client in one process over real UDP sockets and a real SQLite file."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.errors import NotAuthorized
from msgin5g.model.messages import Imdn, Msg
from msgin5g.server import Server
from tests.integration.attack_support import attack_server

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for srv in attack_server(tmp_path):
        yield srv


def uri(server: Server) -> str:
    host, port = server.coap_address
    return f"coap://{host}:{port}"


async def test_p2p_with_delivery_report(server: Server) -> None:
    async with (
        Client("ue1", "secret-ue1", server=uri(server), bind=("127.0.0.1", 0)) as ue1,
        Client("ue2", "secret-ue2", server=uri(server), bind=("127.0.0.1", 0)) as ue2,
    ):
        assert (await ue1.register()).registration_result == "SUCCESS"
        await ue2.register()
        resp = await ue1.send("ue2", b"hello ue2", report=True)
        assert resp.delivery_status == "DELY_ACCEPTED"
        got = await ue2.receive(timeout=5)
        assert isinstance(got.item, Msg) and got.item.payload == b"hello ue2"
        report = await ue1.receive(timeout=5)
        assert isinstance(report.item, Imdn)
        assert report.item.delivery_status == "REPT_DELY_SUCCESS"
        assert report.item.message_id == resp.message_id


async def test_wrong_secret_is_refused(server: Server) -> None:
    async with Client("ue1", "wrong", server=uri(server), bind=("127.0.0.1", 0)) as ue1:
        with pytest.raises(NotAuthorized) as info:
            await ue1.register()
        assert info.value.cause == "AUTHENTICATION_FAILED"


async def test_offline_recipient_gets_stored_message_on_registration(
    server: Server,
) -> None:
    async with Client(
        "ue1", "secret-ue1", server=uri(server), bind=("127.0.0.1", 0)
    ) as ue1:
        await ue1.register()
        resp = await ue1.send("ue2", "while you were away", report=True)
        assert resp.delivery_status == "DELY_STORED"
        async with Client(
            "ue2", "secret-ue2", server=uri(server), bind=("127.0.0.1", 0)
        ) as ue2:
            await ue2.register()
            got = await ue2.receive(timeout=5)
            assert isinstance(got.item, Msg)
            assert got.item.payload == b"while you were away"
            report = await ue1.receive(timeout=5)
            assert isinstance(report.item, Imdn)


async def test_recipient_gone_silent_then_back(server: Server) -> None:
    async with Client(
        "ue1", "secret-ue1", server=uri(server), bind=("127.0.0.1", 0)
    ) as ue1:
        await ue1.register()
        ue2 = Client("ue2", "secret-ue2", server=uri(server), bind=("127.0.0.1", 0))
        await ue2.start()
        port = ue2.local_address[1]
        await ue2.register()
        await ue2.aclose()  # the UE disappears without de-registering
        resp = await ue1.send("ue2", "are you there?")
        assert resp.delivery_status == "DELY_ACCEPTED"
        for _ in range(100):  # retransmissions (0.2 s, 1 retry) exhaust
            await asyncio.sleep(0.05)
            assert server.service is not None
            if server.service.delivery.is_unreachable("ue2"):
                break
        assert server.service is not None and server.service.delivery.is_unreachable(
            "ue2"
        )
        again = await ue1.send("ue2", "second")
        assert again.delivery_status == "DELY_STORED"
        async with Client(
            "ue2", "secret-ue2", server=uri(server), bind=("127.0.0.1", port)
        ) as back:
            await back.register()
            texts = [(await back.receive(timeout=5)).item for _ in range(2)]
            assert [t.payload for t in texts if isinstance(t, Msg)] == [
                b"are you there?",
                b"second",
            ]


async def test_client_registers_again_when_server_lost_it(server: Server) -> None:
    async with (
        Client("ue1", "secret-ue1", server=uri(server), bind=("127.0.0.1", 0)) as ue1,
        Client("ue2", "secret-ue2", server=uri(server), bind=("127.0.0.1", 0)) as ue2,
    ):
        await ue1.register()
        await ue2.register()
        assert server.service is not None
        await server.service.registry.deregister("ue1")  # the server forgets ue1
        resp = await ue1.send("ue2", "still here")
        assert resp.delivery_status == "DELY_ACCEPTED"
        assert server.service.registry.get("ue1") is not None
        got = await ue2.receive(timeout=5)
        assert isinstance(got.item, Msg) and got.item.payload == b"still here"


async def test_server_survives_garbage_datagrams(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    import random
    import socket

    from msgin5g.coap.message import CoapMessage, encode_uint, uri_path_options

    rng = random.Random(7)
    valid = CoapMessage(
        0,
        2,
        mid=1,
        token=b"ab",
        options=[*uri_path_options(("msgin5g",)), (12, encode_uint(50))],
        payload=b'{"messageType":"REG","ueServiceId":"ue1"}',
    ).encode()
    host, port = server.coap_address
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(600):
            if i % 3 == 0:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
            else:
                raw = bytearray(valid)
                for _ in range(rng.randrange(1, 4)):
                    raw[rng.randrange(len(raw))] = rng.getrandbits(8)
                data = bytes(raw[: rng.randrange(1, len(raw) + 1)])
            sock.sendto(data, (host, port))
        await asyncio.sleep(0.5)
    async with Client(
        "ue1", "secret-ue1", server=uri(server), bind=("127.0.0.1", 0)
    ) as ue1:
        assert (await ue1.register()).registration_result == "SUCCESS"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
