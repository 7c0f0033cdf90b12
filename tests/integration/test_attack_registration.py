"""Attacks on registration over a real UDP socket (issue 10, items 1 and 6).

The attacker is a bare UDP socket sending hand-built CoAP datagrams: no
credential, no registration, a source port nobody registered from.
"""

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.coap.message import CoapMessage, uri_path_options
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.config import load_config
from msgin5g.model.messages import Msg
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
            "rest.enabled": "false",
        },
    )
    async with Server(config) as srv:
        yield srv


def uri(server: Server) -> str:
    host, port = server.coap_address
    return f"coap://{host}:{port}"


async def raw_post(server: Server, body: dict[str, object], mid: int) -> CoapMessage:
    """One CON POST /msgin5g from a fresh socket; the piggybacked answer."""
    request = CoapMessage(
        mtype=Type.CON,
        code=Code.POST,
        mid=mid,
        token=mid.to_bytes(2, "big"),
        options=[
            *uri_path_options(("msgin5g",)),
            (OptionNumber.CONTENT_FORMAT, bytes([50])),
        ],
        payload=json.dumps(body).encode(),
    )
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        await loop.sock_sendto(sock, request.encode(), server.coap_address)
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
    return CoapMessage.decode(data)


async def test_unauthenticated_dereg_does_not_wipe_an_offline_mailbox(
    server: Server,
) -> None:
    async with Client(
        "ue1", "secret-ue1", server=uri(server), bind=("127.0.0.1", 0)
    ) as ue1:
        await ue1.register()
        for text in ("one", "two"):
            resp = await ue1.send("ue2", text, report=True)
            assert resp.delivery_status == "DELY_STORED"
        answer = await raw_post(
            server, {"messageType": "DEREG", "ueServiceId": "ue2"}, 0x1001
        )
        assert answer.code == Code.CHANGED
        body = json.loads(answer.payload)
        assert body["deregistrationResult"] == "SUCCESS"  # idempotent, changes nothing
        async with Client(
            "ue2", "secret-ue2", server=uri(server), bind=("127.0.0.1", 0)
        ) as ue2:
            await ue2.register()
            got = [await ue2.receive(timeout=5) for _ in range(2)]
        assert sorted(g.item.payload for g in got if isinstance(g.item, Msg)) == [
            b"one",
            b"two",
        ]
        # the sender was told nothing about a de-registration
        reports = []
        with contextlib.suppress(TimeoutError):
            while True:
                reports.append((await ue1.receive(timeout=0.5)).item)
        causes = {getattr(r, "failure_cause", None) for r in reports}
        assert "RECIPIENT_DEREGISTERED" not in causes


async def test_registration_does_not_reveal_provisioned_ids(server: Server) -> None:
    def reg(ue: str) -> dict[str, object]:
        return {
            "messageType": "REG",
            "ueServiceId": ue,
            "ueCredentialInfo": {"authType": "PSK_TOKEN", "credential": "Zm9v"},
        }

    known = await raw_post(server, reg("ue1"), 0x2001)
    unknown = await raw_post(server, reg("ue9"), 0x2002)
    assert known.code == unknown.code
    known_body = json.loads(known.payload)
    unknown_body = json.loads(unknown.payload)
    assert known_body["failureCause"] == "AUTHENTICATION_FAILED"
    assert {**unknown_body, "ueServiceId": "ue1"} == known_body
