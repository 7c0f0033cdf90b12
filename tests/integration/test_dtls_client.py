"""The msgin5g client over coaps:// against the real server."""

from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.errors import ConnectError, TransportError
from msgin5g.model.messages import Msg
from tests.dtls_peer import dtls_stats, secure_address, secure_server, wait_for

pytestmark = pytest.mark.timeout(120)


async def test_client_registers_sends_and_receives_over_coaps(tmp_path: Path) -> None:
    async with secure_server(tmp_path) as server:
        host, port = secure_address(server)
        uri = f"coaps://{host}:{port}"
        async with (
            Client("ue1", "secret-ue1", server=uri, bind=("127.0.0.1", 0)) as ue1,
            Client("ue2", "secret-ue2", server=uri, bind=("127.0.0.1", 0)) as ue2,
        ):
            await ue1.register()
            await ue2.register()
            await ue1.send("ue2", b"over dtls")
            got = await ue2.receive(timeout=20)
            assert isinstance(got.item, Msg) and got.item.payload == b"over dtls"
        assert server.service is not None
        registration = server.service.registry.get("ue1")
        assert registration is not None and registration.source.host == "psk:ue1"


async def test_client_with_a_wrong_secret_fails_with_a_hint(tmp_path: Path) -> None:
    async with secure_server(tmp_path) as server:
        host, port = secure_address(server)
        client = Client("ue1", "wrong", server=f"coaps://{host}:{port}")
        with pytest.raises(ConnectError, match="check the PSK identity and key"):
            await client.start()


async def test_client_to_a_closed_port_fails_fast(tmp_path: Path) -> None:
    async with secure_server(tmp_path) as server:
        host, port = secure_address(server)
    client = Client("ue1", "secret-ue1", server=f"coaps://{host}:{port}")
    with pytest.raises(ConnectError, match="nothing listens"):
        await client.start()


async def test_client_after_the_server_ended_the_session_fails_cleanly(
    tmp_path: Path,
) -> None:
    async with secure_server(tmp_path, dtls_idle_timeout="1") as server:
        host, port = secure_address(server)
        async with Client(
            "ue1", "secret-ue1", server=f"coaps://{host}:{port}", bind=("127.0.0.1", 0)
        ) as ue1:
            await ue1.register()
            await wait_for(lambda: dtls_stats(server)["sessions"] == 0)
            with pytest.raises(TransportError, match="no secure session"):
                await ue1.register()
