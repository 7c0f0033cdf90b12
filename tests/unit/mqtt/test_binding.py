"""The MQTT topic layout, answer codes, ACL rendering and ``[mqtt]`` config."""

import asyncio

import pytest

from msgin5g.config import MqttConfig, load_config
from msgin5g.errors import ConfigError, DecodeError
from msgin5g.model.messages import Dereg, Msg, UECredentialInfo
from msgin5g.model.registry import Contact, mqtt_contact
from msgin5g.mqtt_binding import (
    ack_topic,
    code_of,
    code_text,
    downlink_topic,
    parse_ack,
    parse_uplink,
    route_of,
    route_of_payload,
    server_filters,
    uplink_topic,
)
from msgin5g.server.deliverers import BindingDeliverer
from msgin5g.server.mqtt_acl import render_acl


@pytest.mark.parametrize(
    ("payload", "route"),
    [
        (b'{"messageType":"REG","ueServiceId":"a"}', ("server", None)),
        (b'{"messageType":"MSG","recipientUeServiceId":"b"}', ("ue", "b")),
        (b'{"messageType":"AGGMSG","recipientGroupServiceId":"g"}', ("group", "g")),
        (b'{"messageType":"MSG","recipientAsServiceId":"as1"}', ("as", "as1")),
        (b'{"messageType":"MSG","recipientBroadcastAreaId":"z"}', ("bc", "z")),
        (b'{"messageType":"MSG","messagingTopic":"a/b/c"}', ("topic", "a/b/c")),
        (b'{"messageType":"IMDN","recipientUeServiceId":"b"}', ("server", None)),
    ],
)
def test_client_and_server_agree_on_the_uplink_topic(
    payload: bytes, route: tuple[str, str | None]
) -> None:
    assert route_of_payload(payload) == route
    topic = uplink_topic("msgin5g", "me", route)
    assert parse_uplink("msgin5g", topic) == ("me", route)


def test_route_of_a_decoded_message() -> None:
    msg = Msg(
        message_id="1", originating_ue_service_id="a", recipient_ue_service_id="b"
    )
    assert route_of(msg) == ("ue", "b")
    dereg = Dereg(
        ue_service_id="a", ue_credential_info=UECredentialInfo(auth_type="NONE")
    )
    assert route_of(dereg) == ("server", None)


@pytest.mark.parametrize(
    "topic",
    [
        "other/up/a/server",
        "msgin5g/up/a/nope",
        "msgin5g/up/a/server/extra",
        "msgin5g/up/a/ue",
        "msgin5g/up//server",
        "msgin5g/up/$x/server",
    ],
)
def test_other_topics_are_not_uplink(topic: str) -> None:
    with pytest.raises(DecodeError):
        parse_uplink("msgin5g", topic)


def test_payload_that_is_not_json_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        route_of_payload(b"[1, 2")


def test_downlink_ack_and_server_topics() -> None:
    assert downlink_topic("p/q", "ue1") == "p/q/ue/ue1"
    assert parse_ack("p", ack_topic("p", "abc", "ue1")) == ("abc", "ue1")
    assert parse_ack("p", "p/ack/abc") is None
    assert parse_ack("p", "p/up/abc/ue1") is None
    assert server_filters("p", "g", "i1") == ("$share/g/p/up/#", "p/ack/i1/+")
    assert server_filters("p", "", "i1")[0] == "p/up/#"


def test_answer_codes_round_trip() -> None:
    for code in (65, 68, 128, 131, 160, 163):
        assert code_of(code_text(code)) == code
    for bad in (None, "", "2.4", "x.04", "9.00", "2.99"):
        assert code_of(bad) is None


def test_mqtt_contacts_are_never_coap_contacts() -> None:
    contact = mqtt_contact("ue1")
    assert contact.is_mqtt and contact.path == ("ue1",)
    assert not Contact("127.0.0.1", 5683).is_mqtt
    assert not Contact("mqtt", 5683).is_mqtt  # a host really called mqtt


class _Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Contact]] = []

    async def deliver(self, contact: Contact, item: object) -> None:
        self.calls.append(("deliver", contact))

    def deliver_nowait(self, contact: Contact, item: object) -> "asyncio.Future[None]":
        self.calls.append(("nowait", contact))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def abandon(self, contact: Contact) -> None:
        self.calls.append(("abandon", contact))


async def test_binding_deliverer_routes_by_contact() -> None:
    coap, mqtt = _Recording(), _Recording()
    both = BindingDeliverer(coap, mqtt)  # type: ignore[arg-type]
    udp, broker = Contact("127.0.0.1", 5683), mqtt_contact("m")
    item = Msg(
        message_id="1", originating_ue_service_id="a", recipient_ue_service_id="m"
    )
    await both.deliver(udp, item)
    await both.deliver(broker, item)
    await both.deliver_nowait(broker, item)
    both.abandon(udp)
    assert coap.calls == [("deliver", udp), ("abandon", udp)]
    assert mqtt.calls == [("deliver", broker), ("nowait", broker)]


def test_acl_per_ue_and_pattern_forms() -> None:
    text, skipped = render_acl(["b", "a", "a", "bad/id", "msgin5g-server"])
    assert skipped == ["bad/id", "msgin5g-server"]
    assert "user a\ntopic write msgin5g/up/a/#\ntopic write msgin5g/ack/+/a\n" in text
    assert "topic read msgin5g/ue/b" in text
    assert "user msgin5g-server\ntopic read msgin5g/up/#" in text
    pattern, _ = render_acl([], pattern=True, prefix="x")
    assert "pattern write x/up/%u/#" in pattern and "pattern read x/ue/%u" in pattern
    emqx, _ = render_acl(["a"], fmt="emqx")
    assert (
        '{allow, {username, "a"}, publish, ["msgin5g/up/a/#", "msgin5g/ack/+/a"]}.'
        in emqx
    )
    assert emqx.rstrip().endswith("{deny, all}.")
    with pytest.raises(ValueError, match="format"):
        render_acl([], fmt="hivemq")


def test_mqtt_config() -> None:
    config = load_config(None, {"MSGIN5G_MQTT_URL": "mqtts://broker:8884"}, {})
    assert config.mqtt.url == "mqtts://broker:8884"
    assert MqttConfig().url == ""  # off by default
    for bad in (
        {"url": "http://x"},
        {"url": "mqtt://"},
        {"url": "mqtt://h:99999"},
        {"topic_prefix": "a/+/b"},
        {"share_group": "a/b"},
        {"ack_timeout": 0},
    ):
        with pytest.raises(ConfigError, match="mqtt"):
            MqttConfig(**bad)  # type: ignore[arg-type]
