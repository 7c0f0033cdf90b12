"""Conformance of the server's CoAP answers, checked with raw datagrams on loopback.

* A ``REG`` (and the other registration requests) sent NON: the CR requires CON
  (digest §2.2 rule 1, §3.2.2 step 1); the server answers the documented 4.00
  ``INVALID_MESSAGE`` error body (digest §5.1), as a NON, and registers nothing.
* ``clientAddress`` in a ``REG``: the piggybacked answer echoes its path as
  Location-Path (digest §2.3) and the server keeps its host and port: downlink
  goes there (digest §2.3 "unless the client supplied clientAddress").
"""

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from msgin5g.coap.message import CoapMessage, uri_path_options
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.model.credentials import psk_token
from msgin5g.server import Server
from tests.integration.attack_support import attack_server

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for srv in attack_server(tmp_path, ("ue1", "ue2")):
        yield srv


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        s.bind(("127.0.0.1", 0))
        yield s


def request(body: dict[str, object], mid: int, mtype: int = Type.CON) -> bytes:
    return CoapMessage(
        mtype=mtype,
        code=Code.POST,
        mid=mid,
        token=mid.to_bytes(2, "big"),
        options=[
            *uri_path_options(("msgin5g",)),
            (OptionNumber.CONTENT_FORMAT, bytes([50])),
        ],
        payload=json.dumps(body).encode(),
    ).encode()


def reg(ue: str, **extra: object) -> dict[str, object]:
    return {
        "messageType": "REG",
        "ueServiceId": ue,
        "ueCredentialInfo": {
            "authType": "PSK_TOKEN",
            "credential": psk_token(f"secret-{ue}", ue),
        },
        **extra,
    }


async def exchange(server: Server, sock: socket.socket, datagram: bytes) -> CoapMessage:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, datagram, server.coap_address)
    data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
    return CoapMessage.decode(data)


def registered(server: Server, ue: str) -> bool:
    assert server.service is not None
    return server.service.registry.get(ue) is not None


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (reg("ue1"), "REG"),
        (
            {
                "messageType": "DEREG",
                "ueServiceId": "ue1",
                "ueCredentialInfo": {
                    "authType": "PSK_TOKEN",
                    "credential": psk_token("secret-ue1", "ue1"),
                },
            },
            "DEREG",
        ),
    ],
)
async def test_registration_sent_non_gets_the_documented_error(
    server: Server, sock: socket.socket, body: dict[str, object], name: str
) -> None:
    if name == "DEREG":  # something to deregister
        answer = await exchange(server, sock, request(reg("ue1"), 0x0100))
        assert answer.code == Code.CREATED
    answer = await exchange(server, sock, request(body, 0x0101, Type.NON))
    assert answer.mtype == Type.NON
    assert answer.token == (0x0101).to_bytes(2, "big")
    assert answer.code == Code.BAD_REQUEST
    assert answer.content_format == 50
    error = json.loads(answer.payload)
    assert error["messageType"] == name
    assert error["failureCause"] == "INVALID_MESSAGE"
    assert "Confirmable" in error["detail"]
    # the procedure did not run
    assert registered(server, "ue1") is (name == "DEREG")


async def test_reg_sent_non_then_con_creates_the_registration(
    server: Server, sock: socket.socket
) -> None:
    answer = await exchange(server, sock, request(reg("ue1"), 0x0200, Type.NON))
    assert answer.code == Code.BAD_REQUEST
    assert not registered(server, "ue1")
    answer = await exchange(server, sock, request(reg("ue1"), 0x0201))
    assert (answer.mtype, answer.mid, answer.code) == (Type.ACK, 0x0201, Code.CREATED)
    assert json.loads(answer.payload)["registrationResult"] == "SUCCESS"


async def test_msg_sent_non_is_still_accepted(
    server: Server, sock: socket.socket
) -> None:
    answer = await exchange(server, sock, request(reg("ue1"), 0x0300))
    assert answer.code == Code.CREATED
    msg = {
        "messageType": "MSG",
        "messageId": "non-1",
        "originatingUeServiceId": "ue1",
        "recipientUeServiceId": "ue2",
        "payload": base64.b64encode(b"hi").decode(),
    }
    answer = await exchange(server, sock, request(msg, 0x0301, Type.NON))
    assert (answer.mtype, answer.code) == (Type.NON, Code.CHANGED)


async def test_client_address_echoed_as_location_path_and_used_for_downlink(
    server: Server, sock: socket.socket
) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inbox:
        inbox.setblocking(False)
        inbox.bind(("127.0.0.1", 0))
        port = inbox.getsockname()[1]
        address = f"coap://127.0.0.1:{port}/dev/inbox"
        answer = await exchange(
            server, sock, request(reg("ue1", clientAddress=address), 0x0400)
        )
        assert (answer.mtype, answer.code) == (Type.ACK, Code.CREATED)
        assert answer.opts(OptionNumber.LOCATION_PATH) == [b"dev", b"inbox"]
        assert json.loads(answer.payload)["registrationResult"] == "SUCCESS"

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            sender.bind(("127.0.0.1", 0))
            assert (await exchange(server, sender, request(reg("ue2"), 0x0401))).code
            msg = {
                "messageType": "MSG",
                "messageId": "to-ue1",
                "originatingUeServiceId": "ue2",
                "recipientUeServiceId": "ue1",
                "payload": base64.b64encode(b"downlink").decode(),
            }
            answer = await exchange(server, sender, request(msg, 0x0402))
            assert answer.code == Code.CHANGED
        # the server's CON POST arrives at clientAddress's host and port and path
        data, source = await asyncio.wait_for(loop.sock_recvfrom(inbox, 65536), 5)
        delivered = CoapMessage.decode(data)
        assert source == server.coap_address
        assert (delivered.mtype, delivered.code) == (Type.CON, Code.POST)
        assert delivered.uri_path == ("dev", "inbox")
        assert json.loads(delivered.payload)["messageId"] == "to-ue1"
        # nothing was sent to the socket the REG came from
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(loop.sock_recv(sock, 65536), 0.3)


async def test_no_location_path_without_client_address(
    server: Server, sock: socket.socket
) -> None:
    answer = await exchange(server, sock, request(reg("ue1"), 0x0500))
    assert answer.code == Code.CREATED
    assert answer.opts(OptionNumber.LOCATION_PATH) == []
