"""A group of 50 UEs managed through SS_GroupManagement on a real ``msgin5g serve``.

The server runs as a subprocess with its REST APIs on a free port; the group is
created and changed over real HTTP (``/ss-gm/v1``), an AS sends to it over
``/msgs-msgdelivery/v1``, and 50 :class:`msgin5g.client.Client` instances in
this process receive over CoAP. The group cache TTL is an hour, so only the
API's own invalidation can make a membership change visible to the next
message.
"""

import asyncio
import base64
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from msgin5g.client import Client
from msgin5g.model.messages import Msg
from msgin5g.server import provision_ue
from tests.e2e.conftest import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

UES = [f"ue{i:02d}" for i in range(50)]
OFFLINE = UES[-1]
DOCS = "/ss-gm/v1/group-documents"
A2P = "/msgs-msgdelivery/v1/deliver-as-message"
MERGE = {"content-type": "application/merge-patch+json"}


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    port = free_tcp_port()
    srv = ServerProcess(
        tmp_path / "msgin5g.db",
        extra=(
            "--set",
            "rest.enabled=true",
            "--http",
            f"127.0.0.1:{port}",
            "--set",
            "delivery.group_cache_ttl=3600",
            "--set",
            "log.level=WARNING",  # nobody drains stderr while the test runs
        ),
    )

    async def provision() -> None:
        for ue in UES:
            await provision_ue(srv.storage, ue, f"secret-{ue}", synchronous="OFF")

    asyncio.run(provision())
    srv.start()
    yield srv, f"http://127.0.0.1:{port}"
    err = srv.stop()
    assert "Traceback" not in err, err


def members(ues: list[str]) -> list[dict[str, str]]:
    return [{"valUserId": ue} for ue in ues]


def a2p(msg_id: str, text: str) -> dict[str, object]:
    return {
        "oriAddr": {"addrType": "AS", "addr": "as1"},
        "destAddr": {"addrType": "GROUP", "addr": "fleet"},
        "msgId": msg_id,
        "payload": base64.b64encode(text.encode()).decode(),
        "stoAndFwInd": True,
    }


async def send(http: httpx.AsyncClient, msg_id: str, text: str) -> None:
    resp = await http.post(A2P, json=a2p(msg_id, text))
    assert resp.status_code == 200, resp.text
    assert "status" not in resp.json()  # accepted


async def next_payload(ue: Client) -> bytes:
    received = await ue.receive(timeout=30)
    assert isinstance(received.item, Msg), received.item
    assert received.item.recipient_group_service_id == "fleet"
    assert received.item.recipient_ue_service_id == ue.ue_service_id
    return received.item.payload or b""


async def nothing_more(ues: list[Client]) -> None:
    async def quiet(ue: Client) -> None:
        with pytest.raises(TimeoutError):
            await ue.receive(timeout=0.5)

    await asyncio.gather(*(quiet(ue) for ue in ues))


def test_group_of_50_managed_through_ss_gm(server: tuple[ServerProcess, str]) -> None:
    srv, api = server
    asyncio.run(scenario(srv, api))


async def scenario(srv: ServerProcess, api: str) -> None:
    clients = {
        ue: Client(ue, f"secret-{ue}", server=srv.url, bind=("127.0.0.1", 0))
        for ue in UES
    }
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        registered = await http.post(
            "/msgs-asregistration/v1/registrations", json={"asSvcId": "as1"}
        )
        assert registered.status_code == 201, registered.text
        created = await http.post(
            DOCS, json={"valGroupId": "fleet", "members": members(UES)}
        )
        assert created.status_code == 201, created.text
        online = [clients[ue] for ue in UES if ue != OFFLINE]
        for ue in online:
            await ue.start()
        try:
            await asyncio.gather(*(ue.register() for ue in online))
            await send(http, "m-1", "one")
            # every online member gets it exactly once
            assert await asyncio.gather(*(next_payload(ue) for ue in online)) == [
                b"one"
            ] * len(online)
            # the offline member gets it (stored) when it registers
            late = clients[OFFLINE]
            await late.start()
            online.append(late)
            await late.register()
            assert await next_payload(late) == b"one"

            # membership change through PATCH: the next message follows it
            kept = [*UES[:10], OFFLINE]
            patched = await http.patch(
                f"{DOCS}/fleet",
                content=json.dumps({"members": members(kept)}),
                headers=MERGE,
            )
            assert patched.status_code == 200, patched.text
            await send(http, "m-2", "two")
            assert await asyncio.gather(
                *(next_payload(clients[ue]) for ue in kept)
            ) == [b"two"] * len(kept)

            # and through PUT
            replaced = await http.put(
                f"{DOCS}/fleet",
                json={"valGroupId": "fleet", "members": members(UES[20:22])},
            )
            assert replaced.status_code == 200, replaced.text
            await send(http, "m-3", "three")
            assert await asyncio.gather(
                *(next_payload(clients[ue]) for ue in UES[20:22])
            ) == [b"three", b"three"]
            await nothing_more(online)
        finally:
            await asyncio.gather(*(ue.aclose() for ue in clients.values()))
