"""REST handlers over httpx ASGITransport: registration, A2P, P2A, reports, errors."""

import asyncio
import base64

import httpx

from msgin5g.config import RestConfig
from msgin5g.model.messages import Imdn, Msg
from msgin5g.spec.delivery import ReportDeliveryStatus

from .conftest import UE1, Rig, as_message, make_rig

REG = "/msgs-asregistration/v1/registrations"
A2P = "/msgs-msgdelivery/v1/deliver-as-message"
UEMSG = "/msgs-msgdelivery/v1/deliver-ue-message"
REPORT = "/msgs-msgdelivery/v1/deliver-report"


def assert_problem(resp: httpx.Response, status: int, cause: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/problem+json"
    body = resp.json()
    assert body["status"] == status
    assert body["cause"] == cause
    return body  # type: ignore[no-any-return]


# registration ---------------------------------------------------------------------


async def test_register_answers_201_location_and_ack(rig: Rig) -> None:
    resp = await rig.register_as(appId="meter", asProf={"appName": "Metering"})
    assert resp.status_code == 201
    assert resp.json() == {
        "asSvcId": "as1",
        "result": {"status": 201, "title": "Created"},
    }
    location = resp.headers["location"]
    assert location.startswith(
        "http://msgin5g.test/msgs-asregistration/v1/registrations/"
    )
    registration = rig.service.applications.get("as1")
    assert registration is not None
    assert location.endswith("/" + registration.registration_id)
    assert registration.target_uri == "http://as1.test/cb"
    assert registration.application_id == "meter"
    assert '"appName":"Metering"' in registration.profile


async def test_registration_is_stored_durably(rig: Rig) -> None:
    await rig.register_as()
    from msgin5g.model.application import ASRegistration
    from msgin5g.service.applications import AS_REGISTRATION_KIND

    stored = await rig.service.backend.get_record(
        AS_REGISTRATION_KIND, "as1", ASRegistration
    )
    assert stored is not None and stored.target_uri == "http://as1.test/cb"


async def test_second_registration_is_403_as_already_registered(rig: Rig) -> None:
    await rig.register_as()
    assert_problem(await rig.register_as(), 403, "AS_ALREADY_REGISTERED")


async def test_bad_target_uri_is_400(rig: Rig) -> None:
    assert_problem(await rig.register_as(target="ftp://x"), 400, "INVALID_MESSAGE")


async def test_deregister_200_then_404(rig: Rig) -> None:
    location = (await rig.register_as()).headers["location"]
    path = location.removeprefix("http://msgin5g.test")
    resp = await rig.http.delete(path)
    assert resp.status_code == 200
    assert resp.json() == {"asSvcId": "as1", "result": {"status": 200, "title": "OK"}}
    assert rig.service.applications.get("as1") is None
    assert_problem(await rig.http.delete(path), 404, "APPLICATION_NOT_FOUND")


async def test_schema_violation_is_400_with_invalid_params(rig: Rig) -> None:
    resp = await rig.http.post(REG, json={"appId": 5})
    body = assert_problem(resp, 400, "INVALID_MESSAGE")
    params = {p["param"] for p in body["invalidParams"]}  # type: ignore[attr-defined]
    assert {"asSvcId", "appId"} <= params


async def test_malformed_json_is_400(rig: Rig) -> None:
    resp = await rig.http.post(
        REG, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(resp, 400, "INVALID_MESSAGE")


# A2P --------------------------------------------------------------------------------


async def test_a2p_to_registered_ue_is_accepted_and_delivered(rig: Rig) -> None:
    await rig.register_ue()
    await rig.register_as()
    payload = base64.b64encode(b"read now").decode()
    resp = await rig.http.post(
        A2P, json=as_message(payload=payload, priority="HIGH", appId="meter")
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"oriAddr": {"addrType": "AS", "addr": "as1"}, "msgId": "m-1"}
    await _until(lambda: rig.ue.items_for(UE1))
    (msg,) = rig.ue.items_for(UE1)
    assert isinstance(msg, Msg)
    assert msg.originating_as_service_id == "as1"
    assert msg.recipient_ue_service_id == "ue1"
    assert msg.payload == b"read now"
    assert msg.priority_type == "HIGH"
    assert msg.application_id == "meter"


async def test_a2p_to_offline_ue_is_stored(rig: Rig) -> None:
    await rig.register_as()
    resp = await rig.http.post(
        A2P, json=as_message(stoAndFwParams={"exprTime": "2099-01-01T00:00:00Z"})
    )
    assert resp.json()["status"] == "DELY_STORED"
    stored = await rig.service.backend.find("ue1", "m-1")
    assert stored is not None
    await rig.register_ue()
    await _until(lambda: rig.ue.items_for(UE1))


async def test_a2p_without_store_to_offline_ue_fails(rig: Rig) -> None:
    await rig.register_as()
    resp = await rig.http.post(A2P, json=as_message(stoAndFwInd=False))
    assert resp.status_code == 200
    assert resp.json()["status"] == "DELY_FAILED"
    assert resp.json()["failureCause"] == "RECIPIENT_NOT_REGISTERED"


async def test_a2p_expired_is_delivery_failed(rig: Rig) -> None:
    await rig.register_as()
    resp = await rig.http.post(
        A2P, json=as_message(stoAndFwParams={"exprTime": "2001-01-01T00:00:00Z"})
    )
    assert resp.json()["failureCause"] == "MESSAGE_EXPIRED"


async def test_a2p_to_unknown_ue_is_404(rig: Rig) -> None:
    await rig.register_as()
    assert_problem(
        await rig.http.post(A2P, json=as_message(to="nobody")), 404, "RECIPIENT_UNKNOWN"
    )


async def test_a2p_from_unregistered_as_is_403(rig: Rig) -> None:
    assert_problem(await rig.http.post(A2P, json=as_message()), 403, "NOT_REGISTERED")


async def test_a2p_to_unknown_broadcast_area_is_404(rig: Rig) -> None:
    await rig.register_as()
    resp = await rig.http.post(A2P, json=as_message(to="area-1", addr_type="BC"))
    assert_problem(resp, 404, "RECIPIENT_UNKNOWN")


async def test_a2p_to_group_fans_out_and_unknown_group_fails(rig: Rig) -> None:
    from msgin5g.service.groups import Group

    await rig.register_as()
    await rig.register_ue("ue1", UE1)
    await rig.service.groups.put(Group("g1", ["ue1"]))
    resp = await rig.http.post(A2P, json=as_message(to="g1", addr_type="GROUP"))
    assert resp.status_code == 200, resp.text
    await rig.ue.event.wait()
    [item] = rig.ue.messages_for(UE1)
    assert item.recipient_group_service_id == "g1"  # type: ignore[union-attr]
    missing = await rig.http.post(
        A2P, json=as_message("m-2", to="nope", addr_type="GROUP")
    )
    assert_problem(missing, 404, "GROUP_NOT_FOUND")


async def test_a2p_to_topic_reaches_subscribers(rig: Rig) -> None:
    await rig.register_as()
    await rig.register_ue("ue1", UE1)
    await rig.service.topics.subscribe("ue1", ["news"], rig.clock.now() + 60)
    resp = await rig.http.post(A2P, json=as_message(to="news", addr_type="TOPIC"))
    assert resp.status_code == 200, resp.text
    await rig.ue.event.wait()
    [item] = rig.ue.messages_for(UE1)
    assert item.messaging_topic == "news"  # type: ignore[union-attr]


async def test_a2p_with_ue_origin_is_400(rig: Rig) -> None:
    await rig.register_as()
    body = as_message()
    body["oriAddr"] = {"addrType": "UE", "addr": "ue1"}
    problem = assert_problem(
        await rig.http.post(A2P, json=body), 400, "INVALID_MESSAGE"
    )
    assert problem["invalidParams"] == [  # type: ignore[comparison-overlap]
        {"param": "oriAddr.addrType", "reason": "oriAddr.addrType must be AS"}
    ]


async def test_a2p_bad_base64_payload_is_400(rig: Rig) -> None:
    await rig.register_as()
    resp = await rig.http.post(A2P, json=as_message(payload="***"))
    body = assert_problem(resp, 400, "INVALID_MESSAGE")
    assert body["invalidParams"][0]["param"] == "payload"  # type: ignore[index]


async def test_a2p_duplicate_id_with_other_content_is_400(rig: Rig) -> None:
    await rig.register_ue()
    await rig.register_as()
    first = await rig.http.post(A2P, json=as_message(payload="AA=="))
    again = await rig.http.post(A2P, json=as_message(payload="AA=="))
    assert first.json() == again.json()
    assert_problem(
        await rig.http.post(A2P, json=as_message(payload="AQ==")),
        400,
        "DUPLICATE_MESSAGE_ID",
    )


async def test_report_of_ue_goes_back_to_the_as(rig: Rig) -> None:
    await rig.register_ue()
    await rig.register_as()
    await rig.http.post(A2P, json=as_message(delivStReqInd=True))
    await _until(lambda: rig.ue.items_for(UE1))
    from msgin5g.model.messages import Imdn as ImdnT

    report = ImdnT(
        message_id="m-1",
        delivery_status=ReportDeliveryStatus.REPT_DELY_SUCCESS,
        originating_ue_service_id="ue1",
        recipient_as_service_id="as1",
    )
    await rig.service.report(report, UE1)
    await rig.as_.wait_for(1)
    uri, item = rig.as_.delivered[0]
    assert uri == "http://as1.test/cb"
    assert isinstance(item, Imdn) and item.message_id == "m-1"


# P2A and reports from the AS ---------------------------------------------------------


async def test_p2a_reaches_the_as_and_its_report_the_ue(rig: Rig) -> None:
    await rig.register_ue()
    await rig.register_as()
    msg = Msg(
        message_id="u-1",
        originating_ue_service_id="ue1",
        recipient_as_service_id="as1",
        delivery_status_required=True,
        payload=b"hi",
    )
    resp = await rig.service.submit(msg, UE1)
    assert resp.delivery_status == "DELY_ACCEPTED"
    await rig.as_.wait_for(1)
    assert rig.as_.delivered[0] == ("http://as1.test/cb", msg)
    report = {
        "oriAddr": {"addrType": "AS", "addr": "as1"},
        "destAddr": {"addrType": "UE", "addr": "ue1"},
        "msgId": "u-1",
        "delivSt": "REPT_DELY_SUCCESS",
    }
    resp2 = await rig.http.post(REPORT, json=report)
    assert resp2.status_code == 200, resp2.text
    assert resp2.json() == {
        "oriAddr": {"addrType": "AS", "addr": "as1"},
        "msgId": "u-1",
    }
    await _until(lambda: [i for i in rig.ue.items_for(UE1) if isinstance(i, Imdn)])
    (imdn,) = [i for i in rig.ue.items_for(UE1) if isinstance(i, Imdn)]
    assert imdn.originating_as_service_id == "as1"
    assert imdn.delivery_status == "REPT_DELY_SUCCESS"
    # a second report for the same message is not expected any more
    assert_problem(await rig.http.post(REPORT, json=report), 404, "MESSAGE_NOT_FOUND")


async def test_p2a_to_unregistered_as_fails(rig: Rig) -> None:
    await rig.register_ue()
    msg = Msg(
        message_id="u-1", originating_ue_service_id="ue1", recipient_as_service_id="x"
    )
    resp = await rig.service.submit(msg, UE1)
    assert (resp.delivery_status, resp.failure_cause) == (
        "DELY_FAILED",
        "RECIPIENT_UNKNOWN",
    )


async def test_p2a_waits_while_the_as_is_down_and_is_retried(rig: Rig) -> None:
    await rig.register_ue()
    await rig.register_as()
    rig.as_.unreachable.add("http://as1.test/cb")
    msg = Msg(
        message_id="u-1",
        originating_ue_service_id="ue1",
        recipient_as_service_id="as1",
        store_and_forward_flag=True,
    )
    await rig.service.submit(msg, UE1)
    await rig.clock.run_for(0.1)  # the back-off timers fire on the manual clock
    assert rig.as_.attempts >= 3  # retried
    assert rig.as_.delivered == []
    assert await rig.service.backend.count() == 1  # still stored
    resp = await rig.service.submit(
        Msg(
            message_id="u-2",
            originating_ue_service_id="ue1",
            recipient_as_service_id="as1",
            store_and_forward_flag=True,
        ),
        UE1,
    )
    assert resp.delivery_status == "DELY_STORED"
    rig.as_.unreachable.clear()
    await rig.clock.run_for(0.05)  # the next retry finds the AS back
    await rig.as_.wait_for(2)
    assert [i.message_id for _, i in rig.as_.delivered] == ["u-1", "u-2"]


async def test_p2a_rejected_by_the_as_reports_failure_to_the_ue(rig: Rig) -> None:
    await rig.register_ue()
    await rig.register_as()
    rig.as_.rejecting.add("http://as1.test/cb")
    msg = Msg(
        message_id="u-1",
        originating_ue_service_id="ue1",
        recipient_as_service_id="as1",
        delivery_status_required=True,
    )
    await rig.service.submit(msg, UE1)
    await _until(lambda: rig.ue.items_for(UE1))
    (imdn,) = rig.ue.items_for(UE1)
    assert isinstance(imdn, Imdn)
    assert imdn.delivery_status == "REPT_DELY_FAILED"
    assert imdn.originating_as_service_id == "as1"


async def test_deregistering_the_as_fails_its_stored_messages(rig: Rig) -> None:
    await rig.register_ue()
    location = (await rig.register_as()).headers["location"]
    rig.as_.unreachable.add("http://as1.test/cb")
    msg = Msg(
        message_id="u-1",
        originating_ue_service_id="ue1",
        recipient_as_service_id="as1",
        delivery_status_required=True,
        store_and_forward_flag=True,
    )
    await rig.service.submit(msg, UE1)
    await _until(lambda: rig.as_.attempts >= 1)
    await rig.http.delete(location.removeprefix("http://msgin5g.test"))
    await _until(lambda: rig.ue.items_for(UE1))
    (imdn,) = rig.ue.items_for(UE1)
    assert isinstance(imdn, Imdn) and imdn.failure_cause == "RECIPIENT_DEREGISTERED"


async def test_deliver_ue_message_from_a_gateway(rig: Rig) -> None:
    await rig.register_ue("ue2", UE1)
    body = {
        "oriAddr": {"addrType": "UE", "addr": "ue1"},
        "destAddr": {"addrType": "UE", "addr": "ue2"},
        "msgId": "g-1",
        "stoAndFwInd": False,
        "payload": "AA==",
    }
    resp = await rig.http.post(UEMSG, json=body)
    assert resp.status_code == 200, resp.text
    await _until(lambda: rig.ue.items_for(UE1))
    body["oriAddr"] = {"addrType": "UE", "addr": "stranger"}
    assert_problem(await rig.http.post(UEMSG, json=body), 403, "NOT_REGISTERED")


# transport-level errors ------------------------------------------------------------------


async def test_411_413_415(rig: Rig) -> None:
    app = rig.http._transport.app  # type: ignore[attr-defined]
    status: list[int] = []

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            status.append(int(message["status"]))  # type: ignore[call-overload]

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": A2P,
        "http_version": "1.1",
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }
    await app(scope, receive, send)
    assert status == [411]
    big = b"x" * 70_000
    resp = await rig.http.post(
        A2P, content=big, headers={"content-type": "application/json"}
    )
    assert_problem(resp, 413, "PAYLOAD_TOO_LARGE")
    resp = await rig.http.post(
        A2P, content=b"{}", headers={"content-type": "text/plain"}
    )
    assert_problem(resp, 415, "INVALID_MESSAGE")


async def test_unknown_path_is_problem_404(rig: Rig) -> None:
    resp = await rig.http.get("/nothing")
    assert resp.status_code == 404
    assert resp.headers["content-type"] == "application/problem+json"


async def test_rate_limit_gives_429_with_retry_after() -> None:
    rig, backend = await make_rig(RestConfig(rate_limit=1.0, rate_burst=2))
    try:
        assert (await rig.register_as()).status_code == 201
        first = await rig.http.post(A2P, json=as_message("a"))
        assert first.status_code == 200  # admitted: stored for ue1
        resp = await rig.http.post(A2P, json=as_message("b"))
        assert_problem(resp, 429, "SERVER_CONGESTION")
        assert int(resp.headers["retry-after"]) >= 1
        # another AS has its own bucket
        other = await rig.http.post(A2P, json=as_message("c", ori="as9"))
        assert other.status_code == 403
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


# OAuth2 --------------------------------------------------------------------------------


async def test_oauth2_token_flow_and_ownership() -> None:
    rig, backend = await make_rig(RestConfig(oauth2=True))
    try:
        await rig.service.applications.add_client("as1", "secret-1")
        await rig.service.applications.add_client("as2", "secret-2")
        assert_problem(await rig.register_as(), 401, "NOT_AUTHORIZED")
        bad = await rig.http.post(
            "/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("as1", "wrong"),
        )
        assert bad.status_code == 401 and bad.json() == {"error": "invalid_client"}
        unsupported = await rig.http.post(
            "/oauth2/token", data={"grant_type": "password"}, auth=("as1", "secret-1")
        )
        assert unsupported.json() == {"error": "unsupported_grant_type"}

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
            assert resp.json()["token_type"] == "Bearer"
            return {"Authorization": f"Bearer {resp.json()['access_token']}"}

        as1, as2 = await token("as1", "secret-1"), await token("as2", "secret-2")
        resp = await rig.http.post(REG, json={"asSvcId": "as1"}, headers=as1)
        assert resp.status_code == 201
        path = resp.headers["location"].removeprefix("http://msgin5g.test")
        # as2 may neither register as1 nor remove as1's registration nor send as as1
        assert_problem(
            await rig.http.post(REG, json={"asSvcId": "as1"}, headers=as2),
            403,
            "NOT_AUTHORIZED",
        )
        assert_problem(await rig.http.delete(path, headers=as2), 403, "NOT_AUTHORIZED")
        assert_problem(
            await rig.http.post(A2P, json=as_message(), headers=as2),
            403,
            "NOT_AUTHORIZED",
        )
        assert_problem(
            await rig.http.delete(path, headers={"Authorization": "Bearer forged"}),
            401,
            "NOT_AUTHORIZED",
        )
        assert (await rig.http.delete(path, headers=as1)).status_code == 200
        rig.clock.advance(3601)  # tokens expire
        assert (await rig.register_as()).status_code == 401
        assert (
            await rig.http.post(REG, json={"asSvcId": "as1"}, headers=as1)
        ).status_code == 401
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


async def _until(predicate: object) -> None:
    assert callable(predicate)
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")
