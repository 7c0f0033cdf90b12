"""Attacks on registration over a real UDP socket (issue 10, items 1 and 6).

The attacker is a bare UDP socket sending hand-built CoAP datagrams: no
credential, no registration, a source port nobody registered from.
"""

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.coap.numbers import Code
from msgin5g.model.messages import Msg
from msgin5g.server import Server
from tests.integration.attack_support import attack_server, raw_post, server_uri

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for srv in attack_server(tmp_path):
        yield srv


async def test_unauthenticated_dereg_does_not_wipe_an_offline_mailbox(
    server: Server,
) -> None:
    async with Client(
        "ue1", "secret-ue1", server=server_uri(server), bind=("127.0.0.1", 0)
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
            "ue2", "secret-ue2", server=server_uri(server), bind=("127.0.0.1", 0)
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
