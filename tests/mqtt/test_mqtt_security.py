"""Who may publish what over MQTT: the broker's ACL, then the server's own checks.

The broker runs with a password file and the ACL that ``msgin5g mqtt acl``
generates; paho-mqtt, mosquitto_pub and mosquitto_sub play foreign clients.
Bad input gets the documented error answer (user property ``msgin5g-code`` and
the digest §5.1 body) and a log line, and the server keeps serving.
"""

import asyncio
import json
import logging
import subprocess
from pathlib import Path

import pytest

from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg
from msgin5g.server.mqtt_acl import render_acl
from tests.conftest import require_binary
from tests.mosquitto import Mosquitto
from tests.mqtt.support import (
    UES,
    Paho,
    mqtt_ue,
    provisioned,
    running_server,
    user_property,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SERVER_PASSWORD = "server-pw"


def secured_broker(tmp_path: Path) -> Mosquitto:
    """mosquitto with passwords (UEs: their PSK_TOKEN) and the generated ACL."""
    passwd = require_binary("mosquitto_passwd")
    workdir = tmp_path / "secured"
    workdir.mkdir()
    acl, skipped = render_acl(UES)
    assert skipped == []
    (workdir / "acl").write_text(acl)
    passwords = workdir / "passwd"
    users = [("msgin5g-server", SERVER_PASSWORD)]
    users += [(ue, psk_token(f"secret-{ue}", ue)) for ue in UES]
    for n, (user, password) in enumerate(users):
        create = ["-c"] if n == 0 else []
        subprocess.run(
            [passwd, *create, "-b", str(passwords), user, password],
            check=True,
            capture_output=True,
        )
    return Mosquitto(workdir, acl_file=workdir / "acl", password_file=passwords)


async def test_broker_acl_and_server_refuse_publishing_as_another_ue(
    tmp_path: Path,
) -> None:
    url = await provisioned(tmp_path)
    settings = {"mqtt.username": "msgin5g-server", "mqtt.password": SERVER_PASSWORD}
    with secured_broker(tmp_path) as broker:
        async with (
            running_server(url, broker.url, **settings),
            mqtt_ue(broker, "m2") as m2,
            mqtt_ue(broker, "m3") as m3,
        ):
            await m2.register()
            await m3.register()
            # m1's own credentials, but another client: a foreign paho client
            evil = Paho(broker, "m1-paho", username="m1", password=psk_token("secret-m1", "m1"))  # fmt: skip
            try:
                assert evil.connect_code == 0
                evil.subscribe("msgin5g/ue/m1")
                forged = {
                    "messageType": "MSG",
                    "messageId": "forged-1",
                    "originatingUeServiceId": "m2",
                    "recipientUeServiceId": "m3",
                    "payload": "Zm9yZ2Vk",
                }
                # 1. the broker: m1 may not publish below m2's uplink topics
                code = evil.publish("msgin5g/up/m2/ue/m3", forged)
                assert code.is_failure and code.getName() == "Not authorized"
                # 2. the server: on m1's own topic, the body's originator m2 is refused
                code = evil.publish("msgin5g/up/m1/ue/m3", forged, correlation=b"x2")
                assert not code.is_failure
                answer = await evil.next()
                assert answer.properties.CorrelationData == b"x2"
                body = json.loads(answer.payload)
                assert user_property(answer, "msgin5g-code") == "2.04"
                assert (body["messageType"], body["deliveryStatus"]) == (
                    "MSGRESP",
                    "DELY_REJECTED",
                )
                assert body["failureCause"] == "NOT_AUTHORIZED"
                # 3. a REG for m2 published as m1: refused by the server
                reg = {
                    "messageType": "REG",
                    "ueServiceId": "m2",
                    "ueCredentialInfo": {"authType": "PSK_TOKEN", "credential": psk_token("secret-m2", "m2")},
                }  # fmt: skip
                evil.publish("msgin5g/up/m1/server", reg, correlation=b"x3")
                answer = await evil.next()
                assert user_property(answer, "msgin5g-code") == "4.03"
                assert json.loads(answer.payload)["failureCause"] == "NOT_AUTHORIZED"
                # 4. the broker: m1 may subscribe to m2's topic (mosquitto grants
                # the SUBSCRIBE) but receives nothing of it (read is denied)
                evil.subscribe("msgin5g/ue/m2")
                with pytest.raises(TimeoutError):
                    await m3.receive(timeout=1.0)  # nothing forged got through
                # legitimate traffic still flows through the same broker and server
                await m2.send("m3", b"real")
                got = await m3.receive(timeout=10)
                assert isinstance(got.item, Msg) and got.item.originator == "m2"
                await m3.send("m2", b"private")
                got = await m2.receive(timeout=10)
                assert isinstance(got.item, Msg) and got.item.payload == b"private"
                assert evil.received.empty()
            finally:
                evil.close()


def _mosquitto_pub(broker: Mosquitto, topic: str, payload: str, *extra: str) -> None:
    binary = require_binary("mosquitto_pub")
    subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5",
         "-q", "1", "-t", topic, "-m", payload, *extra],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


async def test_bad_input_gets_documented_answers_and_server_keeps_serving(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    url = await provisioned(tmp_path)
    caplog.set_level(logging.INFO, logger="msgin5g.transports.mqtt")
    async with running_server(url, broker.url):
        watcher = Paho(broker, "watcher")
        try:
            watcher.subscribe("msgin5g/ue/m1")
            cases = [
                ("msgin5g/up/m1/server", "not json", (), "4.00", "INVALID_MESSAGE"),
                ("msgin5g/up/m1/server", '{"messageType":"NOPE"}', (), "4.00",
                 "UNSUPPORTED_MESSAGE_TYPE"),
                ("msgin5g/up/m1/server",
                 '{"messageType":"MSG","messageId":"x","originatingUeServiceId":"m1",'
                 '"recipientUeServiceId":"m2"}', (), "4.00", "INVALID_MESSAGE"),
                ("msgin5g/up/m1/server", '{"messageType":"DEREG","ueServiceId":"m1"}',
                 ("-D", "publish", "content-type", "text/plain"), "4.15",
                 "INVALID_MESSAGE"),
            ]  # fmt: skip
            for n, (topic, payload, extra, code, cause) in enumerate(cases):
                corr = f"case{n}"
                _mosquitto_pub(
                    broker, topic, payload, "-D", "publish", "correlation-data", corr,
                    *extra,
                )  # fmt: skip
                answer = await watcher.next()
                assert answer.properties.CorrelationData == corr.encode()
                assert user_property(answer, "msgin5g-code") == code, payload
                assert json.loads(answer.payload)["failureCause"] == cause, payload
            # a topic of another shape: nobody to answer, a log line
            _mosquitto_pub(broker, "msgin5g/up/m1/nope", "{}")
            for _ in range(100):
                if "MQTT uplink dropped" in caplog.text:
                    break
                await asyncio.sleep(0.05)
            assert "MQTT uplink dropped" in caplog.text
            assert "refused: UNSUPPORTED_MESSAGE_TYPE" in caplog.text
        finally:
            watcher.close()
        # the server still serves: a real UE registers and is delivered to,
        # and mosquitto_sub, a foreign device, sees the downlink JSON on m2's topic
        sub = require_binary("mosquitto_sub")
        with subprocess.Popen(
            [sub, "-h", "127.0.0.1", "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
             "-t", "msgin5g/ue/m2", "-C", "2", "-W", "30"],
            stdout=subprocess.PIPE,
        ) as peeking:  # fmt: skip
            await asyncio.sleep(0.5)  # let it subscribe (the assertion waits below)
            async with mqtt_ue(broker, "m1") as m1, mqtt_ue(broker, "m2") as m2:
                await m1.register()
                await m2.register()
                await m1.send("m2", b"still serving")
                got = await m2.receive(timeout=10)
                assert got.item.payload == b"still serving"
            out, _ = await asyncio.to_thread(peeking.communicate, timeout=40)
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert [line["messageType"] for line in lines] == ["REGRESP", "MSG"]
