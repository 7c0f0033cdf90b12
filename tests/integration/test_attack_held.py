"""What held in the attack run of issue 10: kept that way, over real sockets.

Each test is one probe of the attack run against a real server (SQLite file,
loopback UDP); the attacker is a bare socket that never registered, or a
registered UE acting for another. After every probe the server still serves.
"""

import asyncio
import base64
import contextlib
import json
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.coap.message import CoapMessage
from msgin5g.coap.numbers import Code
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Imdn, Msg
from msgin5g.server import Server
from tests.integration.attack_support import (
    attack_server,
    post,
    raw_post,
    server_uri,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for srv in attack_server(tmp_path, ("ue1", "ue2", "gw")):
        yield srv


def client(server: Server, ue: str) -> Client:
    return Client(ue, f"secret-{ue}", server=server_uri(server), bind=("127.0.0.1", 0))


async def drain(ue: Client, quiet: float = 0.5) -> list[object]:
    """Everything ``ue`` receives until it has been quiet for ``quiet`` s."""
    got: list[object] = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append((await ue.receive(timeout=quiet)).item)
    return got


async def still_serving(server: Server) -> None:
    """A valid REG from a fresh port is answered."""
    answer = await raw_post(
        server,
        {
            "messageType": "REG",
            "ueServiceId": "ue2",
            "ueCredentialInfo": {
                "authType": "PSK_TOKEN",
                "credential": psk_token("secret-ue2", "ue2"),
            },
        },
        0x7777,
    )
    assert answer.code in (Code.CREATED, Code.CHANGED)
    assert json.loads(answer.payload)["registrationResult"] == "SUCCESS"


async def test_spoofed_sender_is_rejected(server: Server) -> None:
    async with client(server, "ue1") as ue1, client(server, "ue2") as ue2:
        await ue1.register()
        await ue2.register()
        answer = await raw_post(
            server,
            {
                "messageType": "MSG",
                "messageId": "spoof-1",
                "originatingUeServiceId": "ue1",
                "recipientUeServiceId": "ue2",
                "payload": base64.b64encode(b"forged").decode(),
            },
            0x1001,
        )
        body = json.loads(answer.payload)
        assert (body["deliveryStatus"], body["failureCause"]) == (
            "DELY_REJECTED",
            "NOT_AUTHORIZED",
        )
        assert await drain(ue2) == []


async def test_forged_reports_and_updates_are_ignored(server: Server) -> None:
    async with client(server, "ue1") as ue1:
        await ue1.register()
        resp = await ue1.send("ue2", b"stored for later", report=True)
        assert resp.delivery_status == "DELY_STORED"
        mid = resp.message_id
        report = {
            "messageId": mid,
            "deliveryStatus": "REPT_DELY_SUCCESS",
            "originatingUeServiceId": "ue2",
            "recipientUeServiceId": "ue1",
        }
        await raw_post(server, {"messageType": "IMDN", **report}, 0x2001)
        await raw_post(
            server,
            {
                "messageType": "AGGIMDN",
                "originatingUeServiceId": "ue2",
                "recipientUeServiceId": "ue1",
                "deliveryReports": [
                    {"messageId": mid, "deliveryStatus": "REPT_DELY_SUCCESS"}
                ],
            },
            0x2002,
        )
        discard = await raw_post(
            server,
            {
                "messageType": "MSGUPD",
                "originatingUeServiceId": "ue1",
                "recipientUeServiceId": "ue2",
                "messageId": mid,
            },
            0x2003,
        )
        assert json.loads(discard.payload)["deliveryStatus"] == "DELY_REJECTED"
        assert await drain(ue1) == []  # no forged report reached the sender
        async with client(server, "ue2") as ue2:
            await ue2.register()
            got = await ue2.receive(timeout=5)
            assert isinstance(got.item, Msg) and got.item.message_id == mid
            report_back = await ue1.receive(timeout=5)  # the genuine one
            assert isinstance(report_back.item, Imdn)


async def test_dereg_of_an_online_ue_by_another_is_refused(server: Server) -> None:
    async with client(server, "ue2") as ue2:
        await ue2.register()
        answer = await raw_post(
            server, {"messageType": "DEREG", "ueServiceId": "ue2"}, 0x3001
        )
        body = json.loads(answer.payload)
        assert (body["deregistrationResult"], body["failureCause"]) == (
            "FAILURE",
            "NOT_AUTHORIZED",
        )
        assert server.service.registry.get("ue2") is not None  # type: ignore[union-attr]


async def test_bulk_registration_cannot_hijack_another_ue(server: Server) -> None:
    """A gateway registered from its own address cannot register a UE it has no key for."""

    def cred(ue: str, secret: str) -> dict[str, str]:
        return {"authType": "PSK_TOKEN", "credential": psk_token(secret, ue)}

    async with client(server, "ue2") as ue2:
        await ue2.register()
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.bind(("127.0.0.1", 0))

            async def ask(body: dict[str, object], mid: int) -> dict[str, object]:
                await loop.sock_sendto(sock, post(body, mid), server.coap_address)
                data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
                return json.loads(CoapMessage.decode(data).payload)  # type: ignore[no-any-return]

            reg = {
                "messageType": "REG",
                "ueServiceId": "gw",
                "ueCredentialInfo": cred("gw", "secret-gw"),
            }
            assert (await ask(reg, 0x4000))["registrationResult"] == "SUCCESS"
            bulk = {
                "messageType": "BULKREG",
                "ueServiceId": "gw",
                "ueCredentialInfo": cred("gw", "secret-gw"),
                "numOfRegRequests": 2,
                "regRequests": [
                    {
                        "messageType": "REG",
                        "ueServiceId": "ue2",
                        "ueCredentialInfo": {"authType": "NONE"},
                    },
                    {
                        "messageType": "REG",
                        "ueServiceId": "ue1",
                        "ueCredentialInfo": cred("ue1", "guessed"),
                    },
                ],
            }
            body = await ask(bulk, 0x4001)
        results = body["regResponses"]
        assert isinstance(results, list)
        assert {r["registrationResult"] for r in results} == {"FAILURE"}
        registry = server.service.registry  # type: ignore[union-attr]
        registration = registry.get("ue2")
        assert registration is not None and registration.gateway is None
        assert registry.get("ue1") is None


@pytest.mark.parametrize(
    "ue",
    ["../../etc/passwd", "a\x00b", "x'; DROP TABLE queue; --", "u" * 10_000, ""],
)
async def test_identifier_injection_is_harmless(server: Server, ue: str) -> None:
    answer = await raw_post(
        server,
        {
            "messageType": "REG",
            "ueServiceId": ue,
            "ueCredentialInfo": {"authType": "PSK_TOKEN", "credential": "eA=="},
        },
        0x5001,
    )
    if answer.code in (Code.CHANGED, Code.CREATED):
        assert json.loads(answer.payload)["registrationResult"] == "FAILURE"
    else:
        assert answer.code in (Code.BAD_REQUEST, Code.REQUEST_ENTITY_TOO_LARGE)
    await still_serving(server)


async def test_hostile_datagrams_leave_the_server_serving(server: Server) -> None:
    """2,000 random and mutated datagrams (fixed seed), then a valid REG."""
    rng = random.Random(10)
    valid = post(
        {
            "messageType": "MSG",
            "messageId": "m",
            "originatingUeServiceId": "ue1",
            "recipientUeServiceId": "ue2",
        },
        1,
    )
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        for i in range(2000):
            if i % 2:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 64)))
            else:
                mutated = bytearray(valid)
                for _ in range(rng.randrange(1, 6)):
                    mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
                data = bytes(mutated[: rng.randrange(1, len(mutated) + 1)])
            await loop.sock_sendto(sock, data, server.coap_address)
            if i % 200 == 0:
                await asyncio.sleep(0.01)
    await still_serving(server)
