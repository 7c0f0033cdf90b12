"""The transit path end to end (service/transit.py): real server, sockets, SQLite file.

A message that asks for no storage, to a UE that takes it at once, is delivered
without ever reaching the file; one whose recipient does not acknowledge it is
answered only once it is durable, and survives a ``kill -9``.
"""

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.coap.message import CoapMessage, encode_uint
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.codec.ue_payload import encode
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Reg, UECredentialInfo
from tests.e2e.conftest import ServerProcess, stored_rows

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def register_silently(server: ServerProcess, ue: str, secret: str) -> socket.socket:
    """A UE that registers over a raw socket and then never reads it again."""
    info = UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token(secret, ue))
    reg = CoapMessage(
        Type.CON,
        Code.POST,
        mid=7,
        token=b"reg",
        options=[
            (OptionNumber.URI_PATH, b"msgin5g"),
            (OptionNumber.CONTENT_FORMAT, encode_uint(50)),
        ],
        payload=encode(Reg(ue_service_id=ue, ue_credential_info=info)),
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    sock.sendto(reg.encode(), ("127.0.0.1", server.port))
    answer = CoapMessage.decode(sock.recv(2048))
    assert answer.code in (Code.CREATED, Code.CHANGED), answer
    return sock


async def test_a_message_the_recipient_takes_at_once_is_never_written(
    server: ServerProcess,
) -> None:
    async with (
        Client("ue1", "s1", server=server.url, bind=("127.0.0.1", 0)) as ue1,
        Client("ue2", "s2", server=server.url, bind=("127.0.0.1", 0)) as ue2,
    ):
        await ue1.register()
        await ue2.register()
        for i in range(20):
            resp = await ue1.send("ue2", f"m{i}".encode(), store_and_forward=False)
            assert resp.delivery_status == "DELY_ACCEPTED"
            got = await ue2.receive(timeout=10)
            assert got.item.payload == f"m{i}".encode()
        # a message that asks for storage still goes through the file
        resp = await ue1.send("ue2", b"kept", store_and_forward=True)
        assert resp.delivery_status == "DELY_ACCEPTED"
        assert (await ue2.receive(timeout=10)).item.payload == b"kept"
    assert stored_rows(server)[1] == 1  # only the stored message left a record


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose first delivery attempt lasts well beyond the hold (5 s)."""
    srv = ServerProcess(tmp_path / "msgin5g.db", extra=("--set", "coap.ack_timeout=5"))
    srv.add_ue("ue1", "s1")
    srv.add_ue("ue2", "s2")
    srv.start()
    yield srv
    srv.stop()


async def test_an_unacknowledged_message_is_answered_once_durable_and_survives_kill_9(
    slow_server: ServerProcess,
) -> None:
    server = slow_server
    async with Client("ue1", "s1", server=server.url, bind=("127.0.0.1", 0)) as ue1:
        await ue1.register()
        silent = register_silently(server, "ue2", "s2")  # registered, never answers
        resp = await ue1.send(
            "ue2", b"after the hold", message_id="transit-1", store_and_forward=False
        )
        # answered after the hold, by the commit: the row is in the file now
        assert resp.delivery_status == "DELY_ACCEPTED"
        assert stored_rows(server) == (1, 1)
    server.kill9()
    server.start()
    async with Client("ue2", "s2", server=server.url, bind=("127.0.0.1", 0)) as ue2:
        await ue2.register()
        got = await ue2.receive(timeout=20)
        assert got.item.payload == b"after the hold"
    # open until now: the restarted server first tries the old contact
    silent.close()
