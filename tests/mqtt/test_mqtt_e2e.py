"""MSGin5G-1 over MQTT end to end: a real mosquitto, the server, CoAP and MQTT UEs.

Issue 15's scenarios: MQTT UE <-> CoAP UE with reports both ways; an MQTT UE
that is offline (no persistent session) gets its stored messages on REG; a
group fan-out reaches CoAP and MQTT members; a broker restart loses nothing
that was acknowledged; segmentation and topics work for an MQTT UE.
"""

import asyncio
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.errors import ConnectError
from msgin5g.model.messages import Imdn, Msg, MsgResp
from msgin5g.server.admin import put_group
from tests.mosquitto import Mosquitto
from tests.mqtt.support import coap_ue, mqtt_ue, provisioned, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def test_mqtt_ue_and_coap_ue_with_reports_both_ways(
    tmp_path: Path, broker: Mosquitto
) -> None:
    url = await provisioned(tmp_path)
    async with running_server(url, broker.url) as server:
        async with mqtt_ue(broker, "m1") as m1, coap_ue(server, "c1") as c1:
            assert (await m1.register()).registration_result == "SUCCESS"
            await c1.register()
            resp = await m1.send("c1", b"from mqtt", report=True)
            assert resp.delivery_status == "DELY_ACCEPTED"
            got = await c1.receive(timeout=10)
            assert isinstance(got.item, Msg)
            assert (got.item.originator, got.item.payload) == ("m1", b"from mqtt")
            report = await m1.receive(timeout=10)
            assert isinstance(report.item, Imdn)
            assert report.item.delivery_status == "REPT_DELY_SUCCESS"
            assert report.item.message_id == resp.message_id

            resp = await c1.send("m1", b"from coap", report=True)
            got = await m1.receive(timeout=10)
            assert isinstance(got.item, Msg)
            assert (got.item.originator, got.item.payload) == ("c1", b"from coap")
            report = await c1.receive(timeout=10)
            assert isinstance(report.item, Imdn)
            assert report.item.originator == "m1"
            assert report.item.message_id == resp.message_id

            # MQTT UE to MQTT UE, and a payload segmented on the way up
            async with mqtt_ue(broker, "m2") as m2:
                await m2.register()
                m1.segment_size = 300
                big = bytes(range(256)) * 5
                resp = await m1.send("m2", big)
                assert resp.delivery_status == "DELY_ACCEPTED"
                got = await m2.receive(timeout=10)
                assert isinstance(got.item, Msg) and got.item.payload == big
            assert (await m1.deregister()).deregistration_result == "SUCCESS"


async def test_offline_mqtt_ue_gets_stored_messages_on_registration(
    tmp_path: Path, broker: Mosquitto
) -> None:
    url = await provisioned(tmp_path)
    async with running_server(url, broker.url, **{"mqtt.ack_timeout": "1"}) as server:
        async with coap_ue(server, "c1") as c1:
            await c1.register()
            async with mqtt_ue(broker, "m1") as m1:
                await m1.register()
            # m1 is gone without DEREG and without a broker session: the
            # publication finds nobody, no answer comes, the item stays stored
            first = await c1.send("m1", b"while away 1", report=True)
            assert first.delivery_status == "DELY_ACCEPTED"
            for _ in range(200):  # bounded: until the server marked m1 unreachable
                second = await c1.send("m1", b"while away 2", report=True)
                if second.delivery_status == "DELY_STORED":
                    break
                await asyncio.sleep(0.1)
            assert second.delivery_status == "DELY_STORED"
            async with mqtt_ue(broker, "m1") as back:
                await back.register()
                payloads = {(await back.receive(timeout=20)).item.payload}
                payloads.add((await back.receive(timeout=20)).item.payload)
                while len(payloads) < 3:  # the 200-loop may have stored more
                    got = await back.receive(timeout=20)
                    payloads.add(got.item.payload)
                    if b"while away 1" in payloads and b"while away 2" in payloads:
                        break
                assert {b"while away 1", b"while away 2"} <= payloads
            reports = set()
            while {first.message_id, second.message_id} - reports:
                got = await c1.receive(timeout=20)
                if isinstance(got.item, Imdn):
                    assert got.item.delivery_status == "REPT_DELY_SUCCESS"
                    reports.add(got.item.message_id)


async def test_group_fan_out_reaches_coap_and_mqtt_members(
    tmp_path: Path, broker: Mosquitto
) -> None:
    url = await provisioned(tmp_path)
    await put_group(url, "mixed", ["c1", "c2", "m1", "m2"], add=False)
    async with running_server(url, broker.url) as server:
        async with (
            coap_ue(server, "c1") as c1,
            coap_ue(server, "c2") as c2,
            mqtt_ue(broker, "m1") as m1,
            mqtt_ue(broker, "m2") as m2,
        ):
            for ue in (c1, c2, m1, m2):
                await ue.register()
            resp = await m1.send_to_group("mixed", "to all", report=True)
            assert resp.delivery_status == "DELY_ACCEPTED"
            for member in (c1, c2, m2):
                got = await member.receive(timeout=10)
                assert isinstance(got.item, Msg)
                assert got.item.recipient_group_service_id == "mixed"
                assert got.item.payload == b"to all"
            reporters = set()
            for _ in range(3):
                got = await m1.receive(timeout=10)
                assert isinstance(got.item, Imdn)
                reporters.add(got.item.originator)
            assert reporters == {"c1", "c2", "m2"}
            # a messaging topic, subscribed over MQTT, published over CoAP
            await m2.subscribe("plant/alarms")
            await c1.publish("plant/alarms", "hot")
            got = await m2.receive(timeout=10)
            assert isinstance(got.item, Msg) and got.item.payload == b"hot"


async def test_broker_restart_loses_nothing_acknowledged(
    tmp_path: Path, broker: Mosquitto
) -> None:
    url = await provisioned(tmp_path)
    settings = {"mqtt.ack_timeout": "2", "delivery.retry_interval": "1"}
    async with running_server(url, broker.url, **settings) as server:
        async with coap_ue(server, "c1") as c1, mqtt_ue(broker, "m1") as m1:
            await c1.register()
            await m1.register()
            broker.stop()
            accepted = []
            for n in range(10):
                resp = await c1.send("m1", f"n{n}".encode())
                assert resp.delivery_status in {"DELY_ACCEPTED", "DELY_STORED"}
                accepted.append(resp.message_id)
            with pytest.raises(ConnectError):
                await m1.send("c1", b"broker is down")  # not acknowledged: an error
            broker.start()
            seen: set[str] = set()
            while len(seen) < len(accepted):
                got = await m1.receive(timeout=30)
                assert isinstance(got.item, Msg)
                seen.add(got.item.message_id)
            assert seen == set(accepted)
            assert server.mqtt is not None and server.mqtt.link.connects >= 2


async def test_a_ue_moves_from_coap_to_mqtt_by_registering_again(
    tmp_path: Path, broker: Mosquitto
) -> None:
    url = await provisioned(tmp_path)
    async with running_server(url, broker.url) as server:
        async with coap_ue(server, "c1") as c1, coap_ue(server, "m3") as over_coap:
            await c1.register()
            await over_coap.register()
            await c1.send("m3", b"over coap")
            got = await over_coap.receive(timeout=10)
            assert got.item.payload == b"over coap"
            async with mqtt_ue(broker, "m3") as over_mqtt:
                await over_mqtt.register()  # the same UE, now on the broker
                await c1.send("m3", b"over mqtt")
                got = await over_mqtt.receive(timeout=10)
                assert got.item.payload == b"over mqtt"
                # the old CoAP source no longer speaks for m3
                refused = await over_coap.request(
                    Msg(
                        message_id="from-old-source",
                        originating_ue_service_id="m3",
                        recipient_ue_service_id="c1",
                    ),
                    MsgResp,
                )
                assert refused.delivery_status == "DELY_REJECTED"
            with pytest.raises(TimeoutError):
                await over_coap.receive(timeout=0.5)


async def test_topic_prefix_and_a_persistent_broker_session(
    tmp_path: Path, broker: Mosquitto
) -> None:
    url = await provisioned(tmp_path)
    settings = {"mqtt.topic_prefix": "plant/msg", "mqtt.ack_timeout": "1"}
    device_url = f"{broker.url}?prefix=plant/msg&session_expiry=600"
    async with running_server(url, broker.url, **settings) as server:
        async with coap_ue(server, "c1") as c1:
            await c1.register()
            async with Client("m1", "secret-m1", server=device_url) as m1:
                await m1.register()
            # m1 is away but the broker keeps its session: the broker holds the
            # publication; the server, without m1's answer, keeps the item stored
            sent = await c1.send("m1", b"held twice", report=True)
            assert sent.delivery_status == "DELY_ACCEPTED"
            # usually past mqtt.ack_timeout (m1 unreachable, the REG below brings a
            # duplicate); on a slow machine m1's answer may still come in time:
            # then nothing is redelivered, and the assertions hold as well
            await asyncio.sleep(2)
            async with Client("m1", "secret-m1", server=device_url) as back:
                got = await back.receive(timeout=20)  # from the broker's session
                assert got.item.payload == b"held twice"
                await back.register()  # the server delivers again: a duplicate
                report = await c1.receive(timeout=20)
                assert isinstance(report.item, Imdn)
                assert report.item.message_id == sent.message_id
                with pytest.raises(TimeoutError):
                    await back.receive(timeout=1.0)  # the duplicate was dropped
    with pytest.raises(ConnectError, match="unknown parameter"):
        Client("m1", "s", server=f"{broker.url}?qos=2")
