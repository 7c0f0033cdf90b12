"""AS topic subscriptions (/msgs-topicsub/v1, project extension) through the app."""

from msgin5g.model.messages import Msg

from .conftest import UE1, Rig, as_message
from .test_handlers import assert_problem

SUBS = "/msgs-topicsub/v1/subscriptions"


async def test_subscribe_show_publish_unsubscribe(rig: Rig) -> None:
    await rig.register_as()
    await rig.register_ue()
    resp = await rig.http.post(
        SUBS, json={"asSvcId": "as1", "messagingTopics": ["meters", "alarms"]}
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"].endswith(f"{SUBS}/as1")
    body = resp.json()
    assert body["messagingTopics"] == ["alarms", "meters"] and "expiration" in body
    shown = await rig.http.get(f"{SUBS}/as1")
    assert shown.json()["messagingTopics"] == ["alarms", "meters"]

    published = Msg(
        message_id="p-1",
        originating_ue_service_id="ue1",
        messaging_topic="meters",
        payload=b"42 kWh",
    )
    resp_msg = await rig.service.submit(published, UE1)
    assert resp_msg.delivery_status == "DELY_ACCEPTED"
    await rig.as_.wait_for(1)
    (target, item) = rig.as_.delivered[0]
    assert target == "http://as1.test/cb"
    assert isinstance(item, Msg)
    assert (item.recipient_as_service_id, item.messaging_topic) == ("as1", "meters")

    gone = await rig.http.delete(f"{SUBS}/as1", params={"topic": "meters"})
    assert gone.status_code == 204
    again = await rig.http.delete(f"{SUBS}/as1", params={"topic": "meters"})
    assert_problem(again, 404, "RECIPIENT_UNKNOWN")
    assert (await rig.http.get(f"{SUBS}/as1")).json()["messagingTopics"] == ["alarms"]
    assert (await rig.http.delete(f"{SUBS}/as1")).status_code == 204
    assert_problem(await rig.http.get(f"{SUBS}/as1"), 404, "RECIPIENT_UNKNOWN")


async def test_a2p_topic_reaches_other_as_but_not_the_publisher(rig: Rig) -> None:
    await rig.register_as("as1")
    await rig.register_as("as2", "http://as2.test/cb")
    for as_id in ("as1", "as2"):
        resp = await rig.http.post(
            SUBS, json={"asSvcId": as_id, "messagingTopics": ["t"]}
        )
        assert resp.status_code == 201
    sent = await rig.http.post(
        "/msgs-msgdelivery/v1/deliver-as-message",
        json=as_message(to="t", addr_type="TOPIC", payload="aGk="),
    )
    assert sent.status_code == 200, sent.text
    await rig.as_.wait_for(1)
    assert [uri for uri, _ in rig.as_.delivered] == ["http://as2.test/cb"]


async def test_errors(rig: Rig) -> None:
    resp = await rig.http.post(SUBS, json={"asSvcId": "as1", "messagingTopics": ["t"]})
    assert resp.status_code == 403  # not registered
    await rig.register_as("as1")
    await rig.register_as("sender", target=None)
    bad = await rig.http.post(SUBS, json={"asSvcId": "as1", "messagingTopics": []})
    assert_problem(bad, 400, "INVALID_MESSAGE")
    invalid = await rig.http.post(
        SUBS, json={"asSvcId": "as1", "messagingTopics": ["a+b"]}
    )
    assert invalid.status_code == 400
    past = await rig.http.post(
        SUBS,
        json={
            "asSvcId": "as1",
            "messagingTopics": ["t"],
            "expiration": "2001-01-01T00:00:00Z",
        },
    )
    assert past.status_code == 400
    no_target = await rig.http.post(
        SUBS, json={"asSvcId": "sender", "messagingTopics": ["t"]}
    )
    assert no_target.status_code == 400


async def test_deregistration_ends_subscriptions(rig: Rig) -> None:
    resp = await rig.register_as("as1")
    await rig.http.post(SUBS, json={"asSvcId": "as1", "messagingTopics": ["t"]})
    registration = resp.headers["location"].rsplit("/", 1)[1]
    await rig.http.delete(f"/msgs-asregistration/v1/registrations/{registration}")
    assert rig.service.topics.subscribers("t") == []


async def test_topic_policy_refusals_are_403(rig: Rig) -> None:
    """Issue 10 item 4: ASs go through the same topic policy as UEs."""
    await rig.register_as("as1")
    await rig.register_ue()  # ue1 owns ue1/...
    refused = await rig.http.post(
        SUBS, json={"asSvcId": "as1", "messagingTopics": ["open", "ue1/private"]}
    )
    assert_problem(refused, 403, "NOT_AUTHORIZED")
    assert_problem(await rig.http.get(f"{SUBS}/as1"), 404, "RECIPIENT_UNKNOWN")
    publish = as_message("p-1", to="ue1/private", addr_type="TOPIC", payload="aGk=")
    sent = await rig.http.post("/msgs-msgdelivery/v1/deliver-as-message", json=publish)
    assert_problem(sent, 403, "NOT_AUTHORIZED")
    # its own namespace as/as1/... and open topics are fine
    own = await rig.http.post(
        SUBS, json={"asSvcId": "as1", "messagingTopics": ["as/as1/feed", "open"]}
    )
    assert own.status_code == 201, own.text
    # granted by the operator
    await rig.service.topic_policy.allow(
        "ue1/#", publish=["as/as1"], subscribe=["as/as1"]
    )
    granted = await rig.http.post(
        SUBS, json={"asSvcId": "as1", "messagingTopics": ["ue1/private"]}
    )
    assert granted.status_code == 201, granted.text
    again = as_message("p-2", to="ue1/private", addr_type="TOPIC", payload="aGk=")
    sent = await rig.http.post("/msgs-msgdelivery/v1/deliver-as-message", json=again)
    assert sent.status_code == 200, sent.text
