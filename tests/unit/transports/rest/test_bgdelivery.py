"""MSGG_BGDelivery and A2P with addrType BC over httpx ASGITransport (memory store)."""

import asyncio
import base64

import httpx

from msgin5g.config import RestConfig
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Imdn, Msg, Reg, UECredentialInfo, UeLocation
from msgin5g.model.registry import Contact
from msgin5g.service.broadcast import BroadcastArea
from msgin5g.spec.delivery import ReportDeliveryStatus

from .conftest import SECRETS, UE1, Rig, as_message, make_rig

BG = "/msgg-bgdelivery/v1/deliver-message"
A2P = "/msgs-msgdelivery/v1/deliver-as-message"
UEMSG = "/msgs-msgdelivery/v1/deliver-ue-message"
UE2 = Contact("10.0.0.2", 40002)


def assert_problem(resp: httpx.Response, status: int, cause: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status
    assert body["cause"] == cause
    return body  # type: ignore[no-any-return]


def bg_message(
    msg_id: str = "bg-1",
    area: str = "downtown",
    *,
    ori: str = "as1",
    ori_type: str = "AS",
    dest_type: str = "BC",
    **kw: object,
) -> dict[str, object]:
    return {
        "oriAddr": {"addrType": ori_type, "addr": ori},
        "destAddr": {"addrType": dest_type, "addr": area},
        "msgId": msg_id,
        "payload": base64.b64encode(b"storm warning").decode(),
        **kw,
    }


async def register_at(rig: Rig, ue: str, contact: Contact, cell: str) -> None:
    info = UECredentialInfo(
        auth_type="PSK_TOKEN", credential=psk_token(SECRETS[ue], ue)
    )
    outcome = await rig.service.register(
        Reg(
            ue_service_id=ue,
            ue_credential_info=info,
            ue_location=UeLocation(cell_id=cell),
        ),
        contact,
    )
    assert outcome.response.registration_result == "SUCCESS"


async def prepared(rig: Rig, **policy: object) -> None:
    await rig.service.broadcast.put(
        BroadcastArea("downtown", cells=["c1"], **policy)  # type: ignore[arg-type]
    )
    assert (await rig.register_as()).status_code == 201
    await register_at(rig, "ue1", UE1, "c1")
    await register_at(rig, "ue2", UE2, "c2")  # elsewhere


async def wait_for_ue(rig: Rig, count: int) -> None:
    for _ in range(500):
        if len(rig.ue.delivered) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(rig.ue.delivered)} deliveries")


# MSGG_BGDelivery -------------------------------------------------------------------


async def test_bg_delivery_from_as_is_204_and_reaches_the_area(rig: Rig) -> None:
    await prepared(rig)
    resp = await rig.http.post(
        BG, json=bg_message(priority="HIGH", delivStReqInd=True, appId="alerts")
    )
    assert resp.status_code == 204, resp.text
    assert resp.content == b""
    await wait_for_ue(rig, 1)
    [copy] = rig.ue.messages_for(UE1)
    assert isinstance(copy, Msg)
    assert copy.recipient_broadcast_area_id == "downtown"
    assert copy.recipient_ue_service_id == "ue1"
    assert copy.originating_as_service_id == "as1"
    assert copy.priority_type == "HIGH"
    assert copy.application_id == "alerts"
    assert copy.payload == b"storm warning"
    assert copy.delivery_status_required
    assert rig.ue.messages_for(UE2) == []
    # ue1's report goes back to the AS's targetUri (deliver-report)
    report = Imdn(
        message_id="bg-1",
        delivery_status=ReportDeliveryStatus.REPT_DELY_SUCCESS,
        originating_ue_service_id="ue1",
        recipient_as_service_id="as1",
    )
    await rig.service.report(report, UE1)
    await rig.as_.wait_for(1)
    [(uri, item)] = rig.as_.delivered
    assert uri == "http://as1.test/cb"
    assert isinstance(item, Imdn) and item.originating_ue_service_id == "ue1"


async def test_bg_delivery_refusals(rig: Rig) -> None:
    # before the AS registers: 403 NOT_REGISTERED
    await rig.service.broadcast.put(BroadcastArea("downtown", cells=["c1"]))
    assert_problem(await rig.http.post(BG, json=bg_message()), 403, "NOT_REGISTERED")
    await prepared(rig)
    assert_problem(
        await rig.http.post(BG, json=bg_message(area="nowhere")),
        404,
        "RECIPIENT_UNKNOWN",
    )
    wrong = await rig.http.post(BG, json=bg_message(dest_type="UE", area="ue1"))
    body = assert_problem(wrong, 400, "INVALID_MESSAGE")
    assert body["invalidParams"] == [  # type: ignore[comparison-overlap]
        {"param": "destAddr.addrType", "reason": "destAddr.addrType must be BC"}
    ]
    group = await rig.http.post(BG, json=bg_message(ori_type="GROUP", ori="g"))
    body = assert_problem(group, 400, "INVALID_MESSAGE")
    params = body["invalidParams"]
    assert params[0]["param"] == "oriAddr.addrType"  # type: ignore[index]
    missing = bg_message()
    del missing["msgId"]
    body = assert_problem(await rig.http.post(BG, json=missing), 400, "INVALID_MESSAGE")
    assert body["invalidParams"][0]["param"] == "msgId"  # type: ignore[index]
    # a UE may not broadcast here (default policy)
    assert_problem(
        await rig.http.post(BG, json=bg_message("bg-ue", ori_type="UE", ori="ue2")),
        403,
        "NOT_AUTHORIZED",
    )
    assert_problem(
        await rig.http.post(BG, json=bg_message("bg-x", ori_type="UE", ori="nobody")),
        403,
        "NOT_REGISTERED",
    )
    await asyncio.sleep(0.05)
    assert rig.ue.delivered == []


async def test_bg_delivery_from_ue_when_allowed(rig: Rig) -> None:
    await prepared(rig, ue_may_send=True)
    resp = await rig.http.post(BG, json=bg_message("bg-u", ori_type="UE", ori="ue2"))
    assert resp.status_code == 204, resp.text
    await wait_for_ue(rig, 1)
    [copy] = rig.ue.messages_for(UE1)
    assert isinstance(copy, Msg) and copy.originating_ue_service_id == "ue2"


async def test_bg_delivery_as_allow_list(rig: Rig) -> None:
    await prepared(rig, allowed_as=["as2"])
    assert_problem(await rig.http.post(BG, json=bg_message()), 403, "NOT_AUTHORIZED")


async def test_bg_delivery_stores_for_an_offline_assigned_ue(rig: Rig) -> None:
    await rig.service.broadcast.put(BroadcastArea("downtown", ues=["ue2"]))
    assert (await rig.register_as()).status_code == 201
    resp = await rig.http.post(BG, json=bg_message())
    assert resp.status_code == 204, resp.text
    await register_at(rig, "ue2", UE2, "anywhere")
    await wait_for_ue(rig, 1)
    [copy] = rig.ue.messages_for(UE2)
    assert isinstance(copy, Msg) and copy.message_id == "bg-1"


async def test_bg_delivery_checks_the_oauth2_caller() -> None:
    rig, backend = await make_rig(RestConfig(oauth2=True))
    try:
        await rig.service.applications.add_client("as1", "secret-1")
        await rig.service.applications.add_client("as2", "secret-2")
        await rig.service.broadcast.put(BroadcastArea("downtown", cells=["c1"]))
        await register_at(rig, "ue1", UE1, "c1")

        async def token(client: str, secret: str) -> dict[str, str]:
            resp = await rig.http.post(
                "/oauth2/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client,
                    "client_secret": secret,
                },
            )
            assert resp.status_code == 200, resp.text
            return {"Authorization": f"Bearer {resp.json()['access_token']}"}

        as1, as2 = await token("as1", "secret-1"), await token("as2", "secret-2")
        reg = await rig.http.post(
            "/msgs-asregistration/v1/registrations",
            json={"asSvcId": "as1", "targetUri": "http://as1.test/cb"},
            headers=as1,
        )
        assert reg.status_code == 201
        assert_problem(
            await rig.http.post(BG, json=bg_message()), 401, "NOT_AUTHORIZED"
        )
        assert_problem(
            await rig.http.post(BG, json=bg_message(), headers=as2),
            403,
            "NOT_AUTHORIZED",
        )
        ok = await rig.http.post(BG, json=bg_message(), headers=as1)
        assert ok.status_code == 204, ok.text
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


# A2P and UE-originated API messages with destAddr.addrType BC ------------------------


async def test_a2p_broadcast_is_acked_and_fanned_out(rig: Rig) -> None:
    await prepared(rig)
    resp = await rig.http.post(
        A2P, json=as_message("a2p-bc", to="downtown", addr_type="BC")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {
        "oriAddr": {"addrType": "AS", "addr": "as1"},
        "msgId": "a2p-bc",
    }
    await wait_for_ue(rig, 1)
    [copy] = rig.ue.messages_for(UE1)
    assert isinstance(copy, Msg) and copy.recipient_broadcast_area_id == "downtown"
    assert rig.ue.messages_for(UE2) == []


async def test_a2p_broadcast_unknown_area_is_404_and_refusal_403(rig: Rig) -> None:
    await prepared(rig, allowed_as=["as9"])
    assert_problem(
        await rig.http.post(A2P, json=as_message(to="nowhere", addr_type="BC")),
        404,
        "RECIPIENT_UNKNOWN",
    )
    assert_problem(
        await rig.http.post(A2P, json=as_message("m-2", to="downtown", addr_type="BC")),
        403,
        "NOT_AUTHORIZED",
    )


async def test_ue_message_to_area_via_gateway_api_needs_the_policy(rig: Rig) -> None:
    await prepared(rig)
    body = as_message("ue-bc", to="downtown", addr_type="BC")
    body["oriAddr"] = {"addrType": "UE", "addr": "ue2"}
    assert_problem(await rig.http.post(UEMSG, json=body), 403, "NOT_AUTHORIZED")
