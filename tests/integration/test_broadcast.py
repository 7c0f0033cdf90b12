"""Broadcast messaging: a real Server (SQLite, CoAP and REST on loopback), real UEs.

UEs located in the area by cell or by tracking area, and UEs assigned to it,
receive an A2P broadcast (``destAddr.addrType`` BC) and an MSGG_BGDelivery
message exactly once; UEs elsewhere receive nothing; an offline assigned UE gets
the broadcast when it registers; UEs may broadcast only where the area allows.
"""

import base64
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.model.messages import Msg, MsgResp, UeLocation
from msgin5g.server import Server, provision_ue
from msgin5g.server.areas import put_area
from msgin5g.service.broadcast import BroadcastArea

pytestmark = pytest.mark.timeout(60)

UES = ("by-cell", "by-ta", "assigned", "offline", "elsewhere")
A2P = "/msgs-msgdelivery/v1/deliver-as-message"
BG = "/msgg-bgdelivery/v1/deliver-message"


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    url = f"sqlite:///{tmp_path / 'broadcast.db'}"
    for ue in UES:
        await provision_ue(url, ue, f"secret-{ue}")
    await put_area(
        url,
        BroadcastArea(
            "downtown",
            cells=["cell-1", "cell-2"],
            tracking_areas=["ta-1"],
            ues=["assigned", "offline"],
        ),
    )
    await put_area(url, BroadcastArea("open", cells=["cell-1"], ue_may_send=True))
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "rest.enabled": "true",
            "rest.bind": f"127.0.0.1:{free_tcp_port()}",
        },
    )
    async with Server(config) as srv:
        yield srv


def client(server: Server, ue: str) -> Client:
    host, port = server.coap_address
    return Client(
        ue, f"secret-{ue}", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0)
    )


def http(server: Server) -> httpx.AsyncClient:
    assert server.http_address is not None
    host, port = server.http_address
    return httpx.AsyncClient(base_url=f"http://{host}:{port}")


def a2p(msg_id: str, area: str) -> dict[str, object]:
    return {
        "oriAddr": {"addrType": "AS", "addr": "as1"},
        "destAddr": {"addrType": "BC", "addr": area},
        "msgId": msg_id,
        "payload": base64.b64encode(msg_id.encode()).decode(),
        "stoAndFwInd": True,
    }


def bg(msg_id: str, area: str) -> dict[str, object]:
    return {
        "oriAddr": {"addrType": "AS", "addr": "as1"},
        "destAddr": {"addrType": "BC", "addr": area},
        "msgId": msg_id,
        "payload": base64.b64encode(msg_id.encode()).decode(),
        "priority": "HIGH",
    }


async def receive_once(ue: Client, msg_id: str) -> Msg:
    got = await ue.receive(timeout=5)
    assert isinstance(got.item, Msg), got.item
    assert got.item.message_id == msg_id
    assert got.item.recipient_ue_service_id == ue.ue_service_id
    return got.item


async def nothing_more(ue: Client) -> None:
    with pytest.raises(TimeoutError):
        await ue.receive(timeout=0.3)


async def test_a2p_and_bg_broadcasts_reach_the_area_exactly_once(
    server: Server,
) -> None:
    async with (
        http(server) as api,
        client(server, "by-cell") as by_cell,
        client(server, "by-ta") as by_ta,
        client(server, "assigned") as assigned,
        client(server, "elsewhere") as elsewhere,
    ):
        reg = await api.post(
            "/msgs-asregistration/v1/registrations", json={"asSvcId": "as1"}
        )
        assert reg.status_code == 201, reg.text
        await by_cell.register(location=UeLocation(cell_id="cell-2"))
        await by_ta.register(
            location=UeLocation(cell_id="cell-9", tracking_area_id="ta-1")
        )
        await assigned.register(location=UeLocation(cell_id="far-away"))
        await elsewhere.register(
            location=UeLocation(cell_id="cell-9", tracking_area_id="ta-2")
        )
        inside = (by_cell, by_ta, assigned)

        resp = await api.post(A2P, json=a2p("alert-1", "downtown"))
        assert resp.status_code == 200, resp.text
        assert resp.json() == {
            "oriAddr": {"addrType": "AS", "addr": "as1"},
            "msgId": "alert-1",
        }
        for ue in inside:
            msg = await receive_once(ue, "alert-1")
            assert msg.recipient_broadcast_area_id == "downtown"
            assert msg.originating_as_service_id == "as1"
            assert msg.payload == b"alert-1"

        resp = await api.post(BG, json=bg("alert-2", "downtown"))
        assert resp.status_code == 204, resp.text
        for ue in inside:
            msg = await receive_once(ue, "alert-2")
            assert msg.priority_type == "HIGH"
        for ue in (*inside, elsewhere):
            await nothing_more(ue)

        # the offline assigned UE gets both (store-and-forward) on registration
        async with client(server, "offline") as offline:
            await offline.register()
            got = {(await offline.receive(timeout=5)).item.message_id for _ in "ab"}
            assert got == {"alert-1", "alert-2"}
            await nothing_more(offline)


async def test_unknown_area_is_404_on_both_apis(server: Server) -> None:
    async with http(server) as api:
        reg = await api.post(
            "/msgs-asregistration/v1/registrations", json={"asSvcId": "as1"}
        )
        assert reg.status_code == 201
        for path, body in ((A2P, a2p("x-1", "nowhere")), (BG, bg("x-2", "nowhere"))):
            resp = await api.post(path, json=body)
            assert resp.status_code == 404, resp.text
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.json()["cause"] == "RECIPIENT_UNKNOWN"


async def ue_broadcast(ue: Client, msg_id: str, area: str) -> MsgResp:
    """A UE's MSG to a Broadcast Area."""
    return await ue.send_to_area(
        area, b"from a UE", message_id=msg_id, store_and_forward=False
    )


async def test_ue_broadcast_refused_unless_the_area_allows_it(server: Server) -> None:
    async with (
        client(server, "by-cell") as sender,
        client(server, "by-ta") as listener,
    ):
        await sender.register(location=UeLocation(cell_id="cell-1"))
        await listener.register(location=UeLocation(cell_id="cell-1"))
        refused = await ue_broadcast(sender, "u-1", "downtown")
        assert (refused.delivery_status, refused.failure_cause) == (
            "DELY_REJECTED",
            "NOT_AUTHORIZED",
        )
        unknown = await ue_broadcast(sender, "u-2", "nowhere")
        assert (unknown.delivery_status, unknown.failure_cause) == (
            "DELY_FAILED",
            "RECIPIENT_UNKNOWN",
        )
        allowed = await ue_broadcast(sender, "u-3", "open")
        assert allowed.delivery_status == "DELY_ACCEPTED"
        msg = await receive_once(listener, "u-3")
        assert msg.originating_ue_service_id == "by-cell"
        await nothing_more(listener)
        await nothing_more(sender)  # the sender gets no copy of its own broadcast
