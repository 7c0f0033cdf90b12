"""The device client against a scripted server endpoint: segments and aggregates."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from msgin5g.client import Client
from msgin5g.coap import CoapMessage, Code, Endpoint, Request, Site, Type, make_response
from msgin5g.coap.message import encode_uint, uri_path_options
from msgin5g.codec.ue_payload import encode
from msgin5g.model.aggregation import bundle
from msgin5g.model.messages import Msg
from msgin5g.model.segmentation import split

pytestmark = pytest.mark.timeout(30)
OPTIONS = [*uri_path_options(("msgin5g",)), (12, encode_uint(50))]


class FakeServer:
    """Answers REG and MSG; records every uplink payload; can push downlink."""

    def __init__(self) -> None:
        self.uplink: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.endpoint: Endpoint | None = None
        self.ue: Any = None

    async def handle(self, request: Request) -> CoapMessage:
        body = json.loads(request.message.payload)
        await self.uplink.put(body)
        kind = body["messageType"]
        if kind == "REG":
            self.ue = request.peer
            reply: dict[str, Any] = {
                "messageType": "REGRESP",
                "ueServiceId": body["ueServiceId"],
                "registrationResult": "SUCCESS",
            }
        elif kind in ("MSG", "AGGMSG"):
            reply = {
                "messageType": "MSGRESP",
                "messageId": body["messageId"],
                "deliveryStatus": "DELY_ACCEPTED",
            }
        else:
            return make_response(request.message, Code.CHANGED)
        return make_response(
            request.message, Code.CHANGED, json.dumps(reply).encode(), content_format=50
        )

    async def push(self, item: Any) -> CoapMessage:
        assert self.endpoint is not None
        return await self.endpoint.request(
            CoapMessage(Type.CON, Code.POST, options=OPTIONS, payload=encode(item)),
            self.ue,
        )

    async def next(self, kind: str) -> dict[str, Any]:
        while True:
            body = await asyncio.wait_for(self.uplink.get(), 10)
            if body["messageType"] == kind:
                return body


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    site = Site()
    site.add(("msgin5g",), server.handle)
    server.endpoint = await Endpoint.create(("127.0.0.1", 0), site=site)
    yield server
    await server.endpoint.aclose()


async def client(fake: FakeServer, **kw: Any) -> Client:
    assert fake.endpoint is not None
    port = fake.endpoint.local_address[1]
    ue = Client(
        "ue1", "s", server=f"coap://127.0.0.1:{port}", bind=("127.0.0.1", 0), **kw
    )
    await ue.start()
    await ue.register()
    return ue


async def test_large_payload_is_segmented_and_resent_on_segrec(
    fake: FakeServer,
) -> None:
    ue = await client(fake, segment_size=1000)
    try:
        payload = bytes(range(256)) * 10  # 2560 octets -> 3 segments
        seen: list[tuple[int, int]] = []
        resp = await ue.send("ue2", payload, progress=lambda a, b: seen.append((a, b)))
        assert resp.delivery_status == "DELY_ACCEPTED"
        assert seen == [(1, 3), (2, 3), (3, 3)]
        segments = [await fake.next("MSG") for _ in range(3)]
        assert [s["segmentNumber"] for s in segments] == [1, 2, 3]
        assert segments[2]["lastSegmentFlag"] is True
        set_id = segments[0]["segmentationSetId"]
        await fake.push(_segrec(segments[0]["messageId"], set_id, [2]))
        again = await fake.next("MSG")
        assert (
            again["segmentNumber"] == 2 and again["payload"] == segments[1]["payload"]
        )
    finally:
        await ue.aclose()


def _segrec(message_id: str, set_id: str, missing: list[int]) -> Any:
    from msgin5g.model.messages import SegRec

    return SegRec(
        message_id=message_id,
        segmentation_set_id=set_id,
        missing_segments=missing,
        recipient_ue_service_id="ue1",
    )


async def test_downlink_segments_reassembled_confirmed_and_reported(
    fake: FakeServer,
) -> None:
    ue = await client(fake)
    try:
        whole = Msg(
            message_id="big",
            originating_ue_service_id="ue9",
            recipient_ue_service_id="ue1",
            payload=b"x" * 5000,
            delivery_status_required=True,
        )
        parts = split(whole, 2048)
        for part in reversed(parts):
            assert (await fake.push(part)).code == Code.CHANGED
        got = await ue.receive(timeout=5)
        assert got.item == whole
        confirm = await fake.next("SEGCONFIR")
        assert confirm["totalSegments"] == 3
        assert confirm["recipientUeServiceId"] == "ue9"
        report = await fake.next("IMDN")
        assert report["messageId"] == "big"
    finally:
        await ue.aclose()


async def test_missing_downlink_segment_triggers_segrec(fake: FakeServer) -> None:
    ue = await client(fake, gap_timer=0.3)
    try:
        parts = split(
            Msg(
                message_id="gap",
                originating_ue_service_id="ue9",
                recipient_ue_service_id="ue1",
                payload=b"y" * 5000,
            ),
            2048,
        )
        await fake.push(parts[0])
        await fake.push(parts[2])
        recovery = await fake.next("SEGREC")
        assert recovery["missingSegments"] == [2]
        await fake.push(parts[1])
        got = await ue.receive(timeout=5)
        assert isinstance(got.item, Msg) and got.item.payload == b"y" * 5000
    finally:
        await ue.aclose()


async def test_aggregated_downlink_is_unbundled_with_one_aggregated_report(
    fake: FakeServer,
) -> None:
    ue = await client(fake)
    try:
        items = [
            Msg(
                message_id=f"a{i}",
                originating_ue_service_id="ue9",
                recipient_ue_service_id="ue1",
                payload=f"#{i}".encode(),
                delivery_status_required=True,
            )
            for i in range(20)
        ]
        assert (await fake.push(bundle(items))).code == Code.CHANGED
        received = [(await ue.receive(timeout=5)).item for _ in range(20)]
        assert received == items
        report = await fake.next("AGGIMDN")
        assert [r["messageId"] for r in report["deliveryReports"]] == [
            f"a{i}" for i in range(20)
        ]
    finally:
        await ue.aclose()


async def test_send_aggregated(fake: FakeServer) -> None:
    ue = await client(fake)
    try:
        resp = await ue.send_aggregated("ue2", [f"reading {i}" for i in range(20)])
        assert resp.delivery_status == "DELY_ACCEPTED"
        body = await fake.next("AGGMSG")
        assert len(body["aggregatedMessages"]) == 20
        assert body["recipientUeServiceId"] == "ue2"
    finally:
        await ue.aclose()
