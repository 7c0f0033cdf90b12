"""Message Gateway registration and delivery through gateways (server side).

The REST app over httpx ASGITransport on the memory backend; the gateway side
is the ``GatewayDeliverer`` port as a recorder (the real HTTP client and real
gateways are in tests/e2e/test_l3g.py and test_n3g.py).
"""

import asyncio
import base64
from collections.abc import AsyncIterator, Callable

import pytest

from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.messages import Imdn, Msg

from .conftest import UE1, Rig, as_message, make_rig

GW = "/msgs-gwregistration/v1/registrations"
A2P = "/msgs-msgdelivery/v1/deliver-as-message"
UEMSG = "/msgs-msgdelivery/v1/deliver-ue-message"
REPORT = "/msgs-msgdelivery/v1/deliver-report"
L3G_URI = "http://l3g.test:8091"


class RecordingGateways:
    """The GatewayDeliverer port as a recorder; roots in ``down`` fail."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str, Msg | Imdn]] = []
        self.attempts = 0
        self.down: set[str] = set()
        self.rejecting: set[str] = set()

    async def deliver_to_gateway(
        self, kind: str, api_root: str, item: Msg | Imdn
    ) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if api_root in self.down:
            raise RecipientUnreachable("test: gateway down")
        if api_root in self.rejecting:
            raise DeliveryRejected("test: gateway refuses")
        self.delivered.append((kind, api_root, item))


@pytest.fixture
async def rig() -> AsyncIterator[tuple[Rig, RecordingGateways]]:
    built, backend = await make_rig()
    gateways = RecordingGateways()
    built.service.delivery.set_gateway_deliverer(gateways)
    yield built, gateways
    await built.http.aclose()
    await built.service.aclose()
    await backend.aclose()


async def _until(check: Callable[[], object], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


def registration(
    gw: str = "l3g-1", ues: tuple[str, ...] = ("leg1", "leg2"), **kw: object
) -> dict[str, object]:
    return {"gwId": gw, "gwType": "L3G", "gwUri": L3G_URI, "ueSvcIds": list(ues), **kw}


async def test_register_201_refresh_200_and_read(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    r, _ = rig
    resp = await r.http.post(GW, json=registration())
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"].endswith(f"{GW}/l3g-1")
    assert resp.json() == {
        "gwId": "l3g-1",
        "validity": 3600.0,
        "ueResults": [
            {"ueSvcId": "leg1", "result": "SUCCESS"},
            {"ueSvcId": "leg2", "result": "SUCCESS"},
        ],
    }
    again = await r.http.post(GW, json=registration(ues=("leg1",), validity=60))
    assert again.status_code == 200
    read = (await r.http.get(f"{GW}/l3g-1")).json()
    assert read["gwType"] == "L3G"
    assert read["gwUri"] == L3G_URI
    assert [u["ueSvcId"] for u in read["ueResults"]] == ["leg1"]  # list replaced


async def test_a_ue_served_by_another_live_gateway_is_refused_per_ue(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    r, _ = rig
    await r.http.post(GW, json=registration())
    other = registration("n3g-1", ("leg1", "dev1"), gwType="N3G")
    results = (await r.http.post(GW, json=other)).json()["ueResults"]
    assert results == [
        {"ueSvcId": "leg1", "result": "FAILURE", "failureCause": "NOT_AUTHORIZED"},
        {"ueSvcId": "dev1", "result": "SUCCESS"},
    ]


@pytest.mark.parametrize(
    ("change", "member"),
    [
        ({"gwUri": "ftp://x"}, None),
        ({"gwType": "BMG"}, "gwType"),
        ({"validity": 0}, None),
        ({"ueSvcIds": [""]}, None),
        ({"gwId": None}, "gwId"),
    ],
)
async def test_bad_registrations_are_400(
    rig: tuple[Rig, RecordingGateways], change: dict[str, object], member: str | None
) -> None:
    r, _ = rig
    resp = await r.http.post(GW, json={**registration(), **change})
    assert resp.status_code == 400, resp.text
    assert resp.json()["cause"] == "INVALID_MESSAGE"
    if member is not None:
        params = [p["param"] for p in resp.json()["invalidParams"]]
        assert member in params


async def test_a2p_to_a_legacy_ue_goes_to_its_gateway_and_the_report_back(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    r, gws = rig
    await r.register_as()
    await r.http.post(GW, json=registration())
    payload = base64.b64encode(b"hello sms").decode()
    resp = await r.http.post(
        A2P, json=as_message("a-1", "leg1", payload=payload, delivStReqInd=True)
    )
    assert resp.status_code == 200, resp.text
    assert "status" not in resp.json()  # accepted
    await _until(lambda: gws.delivered)
    kind, root, item = gws.delivered[0]
    assert (kind, root) == ("L3G", L3G_URI)
    assert isinstance(item, Msg)
    assert item.recipient_ue_service_id == "leg1"
    assert item.payload == b"hello sms"
    report = {
        "oriAddr": {"addrType": "UE", "addr": "leg1"},
        "destAddr": {"addrType": "AS", "addr": "as1"},
        "msgId": "a-1",
        "delivSt": "REPT_DELY_SUCCESS",
    }
    assert (await r.http.post(REPORT, json=report)).status_code == 200
    await r.as_.wait_for(1)
    _, relayed = r.as_.delivered[0]
    assert isinstance(relayed, Imdn)
    assert relayed.originating_ue_service_id == "leg1"


async def test_gateway_down_stores_retries_and_delivers_in_order(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    r, gws = rig
    await r.register_as()
    await r.http.post(GW, json=registration())
    gws.down.add(L3G_URI)
    await r.http.post(A2P, json=as_message("d-1", "leg1"))
    await _until(lambda: gws.attempts >= 1)
    await r.clock.run_for(0.1)  # the back-off timers fire on the manual clock
    assert gws.attempts >= 3
    assert gws.delivered == []
    stored = (await r.http.post(A2P, json=as_message("d-2", "leg1"))).json()
    assert stored["status"] == "DELY_STORED"
    gws.down.clear()
    await r.clock.run_for(0.05)
    await _until(lambda: len(gws.delivered) == 2)
    assert [i.message_id for _, _, i in gws.delivered] == ["d-1", "d-2"]


async def test_a_refusing_gateway_fails_the_message_with_a_report(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    r, gws = rig
    await r.register_as()
    await r.http.post(GW, json=registration())
    gws.rejecting.add(L3G_URI)
    await r.http.post(A2P, json=as_message("x-1", "leg1", delivStReqInd=True))
    await r.as_.wait_for(1)
    _, report = r.as_.delivered[0]
    assert isinstance(report, Imdn)
    assert report.delivery_status == "REPT_DELY_FAILED"


async def test_mo_from_a_gateway_ue_reaches_an_msgin5g_ue(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    r, _ = rig
    await r.register_ue()
    await r.http.post(GW, json=registration())
    body = {
        "oriAddr": {"addrType": "UE", "addr": "leg1"},
        "destAddr": {"addrType": "UE", "addr": "ue1"},
        "msgId": "mo-1",
        "payload": base64.b64encode(b"from sms").decode(),
        "stoAndFwInd": True,
    }
    resp = await r.http.post(UEMSG, json=body)
    assert resp.status_code == 200, resp.text
    await _until(lambda: r.ue.items_for(UE1))
    (msg,) = r.ue.items_for(UE1)
    assert isinstance(msg, Msg)
    assert msg.originating_ue_service_id == "leg1"
    # an unknown UE may not send through the API
    body["oriAddr"] = {"addrType": "UE", "addr": "stranger"}
    assert (await r.http.post(UEMSG, json=body)).status_code == 403


async def test_deregistered_ues_are_unknown_recipients(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    r, _ = rig
    await r.register_as()
    await r.http.post(GW, json=registration())
    resp = await r.http.post(f"{GW}/l3g-1/deregister", json={"ueSvcIds": ["leg1", "x"]})
    assert resp.json()["ueResults"] == [
        {"ueSvcId": "leg1", "result": "SUCCESS"},
        {"ueSvcId": "x", "result": "FAILURE", "failureCause": "RECIPIENT_UNKNOWN"},
    ]
    gone = await r.http.post(A2P, json=as_message("g-1", "leg1"))
    assert gone.status_code == 404
    assert (await r.http.delete(f"{GW}/l3g-1")).status_code == 200
    assert (await r.http.get(f"{GW}/l3g-1")).status_code == 404
    assert (await r.http.delete(f"{GW}/l3g-1")).status_code == 404


async def test_registration_lapses_after_its_validity(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    r, _ = rig
    await r.register_as()
    await r.http.post(GW, json=registration(validity=10))
    assert (await r.http.post(A2P, json=as_message("v-1", "leg1"))).status_code == 200
    await r.clock.run_for(11)
    assert (await r.http.post(A2P, json=as_message("v-2", "leg1"))).status_code == 404


async def test_a_group_fan_out_reaches_members_behind_a_gateway(
    rig: tuple[Rig, RecordingGateways],
) -> None:
    from msgin5g.service.groups import Group

    r, gws = rig
    await r.register_as()
    await r.register_ue()
    await r.http.post(GW, json=registration())
    await r.service.groups.put(Group("g1", ["ue1", "leg1", "leg2"]))
    resp = await r.http.post(A2P, json=as_message(to="g1", addr_type="GROUP"))
    assert resp.status_code == 200, resp.text
    await _until(lambda: len(gws.delivered) == 2 and r.ue.messages_for(UE1))
    got = sorted(i.recipient_ue_service_id or "" for _, _, i in gws.delivered)
    assert got == ["leg1", "leg2"]
