"""Groups at an external SEAL group management server, over real HTTP (digest §5.2).

Server ``gm`` hosts SS_GroupManagement (``/ss-gm/v1``) on a free port; server
``msg`` has ``seal.gm_url`` pointing at it and resolves its groups there. UEs
talk CoAP to ``msg`` only.
"""

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.errors import RemoteError
from msgin5g.model.messages import Msg
from msgin5g.server import Server, provision_ue
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID

pytestmark = pytest.mark.timeout(60)

UES = ("ctrl", "v1", "v2", "outsider")
DOCS = "/ss-gm/v1/group-documents"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def running(url: str, **settings: str) -> AsyncIterator[Server]:
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "rest.enabled": "true",
            "rest.bind": f"127.0.0.1:{free_tcp_port()}",
            **settings,
        },
    )
    async with Server(config) as server:
        yield server


def base_url(server: Server) -> str:
    assert server.http_address is not None
    host, port = server.http_address
    return f"http://{host}:{port}"


def client(server: Server, ue: str) -> Client:
    host, port = server.coap_address
    return Client(
        ue, f"secret-{ue}", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0)
    )


async def test_group_messaging_through_an_external_gm_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'msg.db'}"
    for name in UES:
        await provision_ue(url, name, f"secret-{name}")
    async with running(f"sqlite:///{tmp_path / 'gm.db'}") as gm:
        async with httpx.AsyncClient(base_url=base_url(gm)) as http:
            members = [{"valUserId": u} for u in ("ctrl", "v1", "v2")]
            created = await http.post(
                DOCS,
                json={
                    "valGroupId": "valves",
                    "members": members,
                    "valServiceIds": [MSGIN5G_SERVICE_ID],
                },
            )
            assert created.status_code == 201, created.text
            other = {"valGroupId": "elsewhere", "members": members[:1]}
            other["valServiceIds"] = ["another-service"]
            assert (await http.post(DOCS, json=other)).status_code == 201
        settings = {"seal.gm_url": base_url(gm), "delivery.group_cache_ttl": "0"}
        async with (
            running(url, **settings) as msg,
            client(msg, "ctrl") as ctrl,
            client(msg, "v1") as v1,
            client(msg, "v2") as v2,
            client(msg, "outsider") as outsider,
        ):
            for ue in (ctrl, v1, v2, outsider):
                await ue.register()
            resp = await ctrl.send_to_group("valves", "OPEN")
            assert resp.delivery_status == "DELY_ACCEPTED", resp
            for ue in (v1, v2):
                got = await ue.receive(timeout=5)
                assert isinstance(got.item, Msg) and got.item.payload == b"OPEN"
                assert got.item.recipient_group_service_id == "valves"
            refused = await outsider.send_to_group("valves", "x")
            assert refused.failure_cause == "NOT_AUTHORIZED"
            unknown = await ctrl.send_to_group("nope", "x")
            assert (unknown.delivery_status, unknown.failure_cause) == (
                "DELY_FAILED",
                "GROUP_NOT_FOUND",
            )
            not_ours = await ctrl.send_to_group("elsewhere", "x")
            assert not_ours.failure_cause == "GROUP_NOT_FOUND"
            async with httpx.AsyncClient(base_url=base_url(msg)) as local:
                managed = await local.get(DOCS)
                assert managed.status_code == 403
                assert managed.json()["cause"] == "GROUP_MANAGEMENT_EXTERNAL"
            await gm.aclose()  # the group management server goes away
            again = await ctrl.send_to_group("valves", "AGAIN")
            assert again.delivery_status == "DELY_ACCEPTED"  # stale membership
            stale = (await v1.receive(timeout=5)).item
            assert isinstance(stale, Msg) and stale.payload == b"AGAIN"
            with pytest.raises(RemoteError) as failed:
                await ctrl.send_to_group("never-resolved", "x")
            assert failed.value.status == "5.03"
            assert b"RECIPIENT_NOT_REACHABLE" in failed.value.payload
