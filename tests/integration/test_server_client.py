"""Server and Client in one process over real UDP sockets and a real SQLite file."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.errors import NotAuthorized
from msgin5g.model.messages import Imdn, Msg
from msgin5g.server import Server, provision_ue

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    url = f"sqlite:///{tmp_path / 'msgin5g.db'}"
    for ue in ("ue1", "ue2"):
        await provision_ue(url, ue, f"secret-{ue}")
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "coap.ack_timeout": "0.2",
            "coap.max_retransmit": "1",
        },
    )
    async with Server(config) as srv:
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
