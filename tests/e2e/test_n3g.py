"""Non-3GPP Message Gateway end to end: plain MQTT devices behind a real broker.

Real processes on loopback: ``msgin5g serve``, ``msgin5g n3g``, a private
``mosquitto`` on a free port, ``mosquitto_sub`` / ``mosquitto_pub`` as the
devices (they know nothing of MSGin5G) and ``msgin5g as listen`` as the AS.
"""

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.msgg_support import (  # noqa: F401 (server_fixture)
    Mosquitto,
    mqtt_device,
    mqtt_publish,
    server_fixture,
    start_gateway,
    wait_registered,
)
from tests.e2e.test_as import Lines, RestServer, as_listener, as_send

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    peer = Mosquitto(tmp_path)
    yield peer
    peer.stop()


def n3g(server: RestServer, broker: Mosquitto, tmp_path: Path, *args: str) -> Lines:
    out = start_gateway(
        "n3g",
        server,
        tmp_path,
        "--broker",
        broker.url,
        "--device",
        "dev1",
        "--uplink-to",
        "as:as1",
        *args,
    )
    wait_registered(server, "n3g-1", {"dev1"})
    return out


def test_a2p_reaches_a_plain_mqtt_device_and_puback_reports_it(
    server: RestServer, broker: Mosquitto, tmp_path: Path
) -> None:
    aserver = as_listener(server)
    device = mqtt_device(broker, "n3g/dev1/down", "dev1")
    gateway = n3g(server, broker, tmp_path)
    try:
        ack = as_send(
            server, "--to", "dev1", "--text", "valve=open", "--report", "--msg-id", "v1"
        )
        assert ack["status"] == 200, ack
        got = device.next()
        assert got == {"topic": "n3g/dev1/down", "payload": "valve=open"}
        report = aserver.next()
        assert report["resource"] == "deliver-report"
        assert report["body"] == {
            "oriAddr": {"addrType": "UE", "addr": "dev1"},
            "destAddr": {"addrType": "AS", "addr": "as1"},
            "msgId": "v1",
            "delivSt": "REPT_DELY_SUCCESS",
        }
        mqtt_publish(broker, "n3g/dev1/up", "temp=21.5")
        uplink = aserver.next()
        assert uplink["resource"] == "deliver-message"
        body = uplink["body"]
        assert body["oriAddr"] == {"addrType": "UE", "addr": "dev1"}  # type: ignore[index]
        assert base64.b64decode(body["payload"]) == b"temp=21.5"  # type: ignore[index]
    finally:
        gateway.stop()
        device.stop()
        aserver.stop()


def test_application_ack_topic_reports_delivery(
    server: RestServer, broker: Mosquitto, tmp_path: Path
) -> None:
    aserver = as_listener(server)
    device = mqtt_device(broker, "n3g/dev1/down", "dev1")
    gateway = n3g(server, broker, tmp_path, "--ack", "app")
    try:
        as_send(
            server, "--to", "dev1", "--text", "reboot", "--report", "--msg-id", "r1"
        )
        assert device.next()["payload"] == "reboot"
        mqtt_publish(broker, "n3g/dev1/ack", "r1")
        report = aserver.next()
        assert report["resource"] == "deliver-report"
        assert report["body"]["delivSt"] == "REPT_DELY_SUCCESS"  # type: ignore[index]
        assert report["body"]["msgId"] == "r1"  # type: ignore[index]
    finally:
        gateway.stop()
        device.stop()
        aserver.stop()


def test_broker_restart_loses_nothing_acknowledged(
    server: RestServer, tmp_path: Path
) -> None:
    first = Mosquitto(tmp_path)
    aserver = as_listener(server)
    device = mqtt_device(first, "n3g/dev1/down", "dev1")  # a persistent session
    gateway = n3g(server, first, tmp_path)
    port = first.port
    try:
        first.stop()  # the broker is down: the gateway stores what it acknowledges
        for n in range(2):
            ack = as_send(
                server, "--to", "dev1", "--text", f"b{n}", "--msg-id", f"b{n}"
            )
            assert ack["status"] == 200, ack
        second = Mosquitto(tmp_path, port=port)  # same persistence file
        try:
            got = {str(device.next(timeout=90)["payload"]) for _ in range(2)}
            assert got == {"b0", "b1"}
        finally:
            second.stop()
    finally:
        gateway.stop()
        device.stop()
        aserver.stop()


def test_a_broker_that_needs_a_login(server: RestServer, tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, password="s3cret")
    aserver = as_listener(server)
    gateway = None
    try:
        wrong = start_gateway(
            "n3g", server, tmp_path, "--broker", f"mqtt://gw:nope@127.0.0.1:{broker.port}",
            "--device", "dev1", level="WARNING",
        )  # fmt: skip
        assert "nope" not in str(wrong.ready)  # type: ignore[attr-defined]
        time.sleep(2)
        err = wrong.stop()
        assert "reconnecting" in err and "nope" not in err
        gateway = start_gateway(
            "n3g", server, tmp_path,
            "--broker", f"mqtt://gw:s3cret@127.0.0.1:{broker.port}",
            "--device", "dev1", "--uplink-to", "as:as1",
        )  # fmt: skip
        wait_registered(server, "n3g-1", {"dev1"})
        publish = [
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-u", "gw",
            "-P", "s3cret", "-q", "1", "-t", "n3g/dev1/up", "-m", "logged in",
        ]  # fmt: skip
        subprocess.run(publish, check=True, timeout=20)
        uplink = aserver.next()
        assert base64.b64decode(uplink["body"]["payload"]) == b"logged in"  # type: ignore[index]
    finally:
        if gateway is not None:
            assert "s3cret" not in gateway.stop()
        aserver.stop()
        broker.stop()
