"""MSGin5G-1 over MQTT 5: the topic layout and the rules both ends apply (docs/mqtt.md).

No MQTT library is imported here: the server's transport
(:mod:`msgin5g.transports.mqtt`) and the device's
(:mod:`msgin5g.client.mqtt`) share these pure functions, so the topics a UE
publishes to are, by construction, the ones the server parses.

Topics (``{p}`` is the configurable prefix, default ``msgin5g``; each Service
ID is one topic level, digest §1.2 forbids ``/``, ``+`` and ``#`` in it):

==================================  ========  ==========================================
topic                               who       what
==================================  ========  ==========================================
``{p}/up/{sender}/server``          UE        every uplink request but ``MSG``/``AGGMSG``
``{p}/up/{sender}/ue/{recipient}``  UE        ``MSG``/``AGGMSG`` to a UE
``{p}/up/{sender}/group/{group}``   UE        ... to a group
``{p}/up/{sender}/as/{as}``         UE        ... to an Application Server
``{p}/up/{sender}/bc/{area}``       UE        ... to a broadcast area
``{p}/up/{sender}/topic/{t...}``    UE        ... to a Messaging Topic (may hold ``/``)
``{p}/ue/{ue}``                     server    answers and downlink requests to a UE
``{p}/ack/{instance}/{ue}``         UE        the UE's answer to a downlink request
==================================  ========  ==========================================

The sender's UE Service ID is a topic level so that a broker ACL can bind it
to the authenticated user (``pattern write {p}/up/%u/#``): the digest's
``{p}/up/ue/{recipient}`` left the sender to the JSON body, which a broker
cannot check. The server checks it again (:func:`parse_uplink` gives the
sender; the service refuses an originator that is not registered from it).

Every request carries MQTT 5 Correlation Data (≤ 8 octets, the CoAP Token's
role); every answer echoes it and carries the user property
:data:`CODE_PROPERTY` with the CoAP response code it stands for (``"2.04"``,
``"4.00"`` …), so a client handles an MQTT answer exactly like a CoAP one and
error bodies are the digest §5.1 bodies.
"""

from typing import Final

import msgspec

from msgin5g.coap.numbers import code_str
from msgin5g.errors import DecodeError
from msgin5g.model.messages import AggMsg, Msg

__all__ = [
    "CODE_PROPERTY",
    "CONTENT_TYPE",
    "DEFAULT_PREFIX",
    "KINDS",
    "ack_topic",
    "code_of",
    "code_text",
    "downlink_topic",
    "parse_ack",
    "parse_uplink",
    "route_of",
    "route_of_payload",
    "server_filters",
    "uplink_topic",
    "valid_level",
]

DEFAULT_PREFIX: Final = "msgin5g"
CODE_PROPERTY: Final = "msgin5g-code"
"""User property of every answer: the CoAP response code it stands for."""
CONTENT_TYPE: Final = "application/json"
"""MQTT 5 Content Type of every non-empty payload (CoAP Content-Format 50)."""

SERVER: Final = "server"
KINDS: Final = frozenset({SERVER, "ue", "group", "as", "bc", "topic"})
"""The uplink topic kinds (the level after the sender)."""

Route = tuple[str, str | None]
"""(kind, target): where an uplink request is published below ``{p}/up/{sender}/``."""


class _Recipients(msgspec.Struct, rename="camel"):
    """The members of an uplink payload that choose its topic (light decode)."""

    message_type: str | None = None
    recipient_ue_service_id: str | None = None
    recipient_group_service_id: str | None = None
    recipient_as_service_id: str | None = None
    recipient_broadcast_area_id: str | None = None
    messaging_topic: str | None = None


_recipients_decoder: Final = msgspec.json.Decoder(_Recipients)
_MESSAGES: Final = frozenset({"MSG", "AGGMSG"})


def valid_level(name: str) -> bool:
    """Whether ``name`` can be one topic level (non-empty, no ``/ + #``, no ``$``)."""
    return (
        bool(name)
        and not name.startswith("$")
        and not any(c in name for c in "/+#\x00")
    )


def _route(fields: _Recipients | Msg | AggMsg) -> Route:
    for kind, target in (
        ("ue", fields.recipient_ue_service_id),
        ("group", fields.recipient_group_service_id),
        ("as", fields.recipient_as_service_id),
        ("bc", fields.recipient_broadcast_area_id),
        ("topic", fields.messaging_topic),
    ):
        if target is not None:
            return kind, target
    return SERVER, None


def route_of(message: object) -> Route:
    """The uplink topic kind and target of a decoded uplink message."""
    if isinstance(message, Msg | AggMsg):
        return _route(message)
    return SERVER, None


def route_of_payload(data: bytes) -> Route:
    """The uplink topic kind and target of a JSON uplink payload (the client's side).

    Raises:
        DecodeError: not a JSON object.
    """
    try:
        fields = _recipients_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"not an MSGin5G JSON payload: {exc}") from None
    if fields.message_type in _MESSAGES:
        return _route(fields)
    return SERVER, None


def uplink_topic(prefix: str, sender: str, route: Route) -> str:
    """The topic a UE publishes a request to."""
    kind, target = route
    if target is None:
        return f"{prefix}/up/{sender}/{kind}"
    return f"{prefix}/up/{sender}/{kind}/{target}"


def parse_uplink(prefix: str, topic: str) -> tuple[str, Route]:
    """The sender and route of an uplink topic.

    Raises:
        DecodeError: not an uplink topic of this layout.
    """
    head = f"{prefix}/up/"
    if not topic.startswith(head):
        raise DecodeError(f"not an uplink topic: {topic!r}")
    sender, _, rest = topic[len(head) :].partition("/")
    kind, _, target = rest.partition("/")
    if not valid_level(sender) or kind not in KINDS:
        raise DecodeError(
            f"uplink topic {topic!r}: expected {head}{{ueServiceId}}/"
            f"{{{'|'.join(sorted(KINDS))}}}[/target]"
        )
    if (kind == SERVER) != (not target):
        raise DecodeError(f"uplink topic {topic!r}: a target after {kind!r} is wrong")
    return sender, (kind, target or None)


def downlink_topic(prefix: str, ue_service_id: str) -> str:
    """The topic the server publishes to a UE on."""
    return f"{prefix}/ue/{ue_service_id}"


def ack_topic(prefix: str, instance: str, ue_service_id: str) -> str:
    """The topic a UE answers a downlink request of server ``instance`` on."""
    return f"{prefix}/ack/{instance}/{ue_service_id}"


def parse_ack(prefix: str, topic: str) -> tuple[str, str] | None:
    """(instance, UE Service ID) of an ack topic, or None if it is none."""
    head = f"{prefix}/ack/"
    if not topic.startswith(head):
        return None
    instance, _, ue = topic[len(head) :].partition("/")
    if not valid_level(instance) or not valid_level(ue):
        return None
    return instance, ue


def server_filters(prefix: str, share_group: str, instance: str) -> tuple[str, str]:
    """What a server instance subscribes to: shared uplink, its own acks."""
    uplink = f"{prefix}/up/#"
    if share_group:
        uplink = f"$share/{share_group}/{uplink}"
    return uplink, f"{prefix}/ack/{instance}/+"


def code_text(code: int) -> str:
    """The :data:`CODE_PROPERTY` value of a CoAP code (``"2.04"``)."""
    return code_str(code)


def code_of(text: str | None) -> int | None:
    """The CoAP code a :data:`CODE_PROPERTY` value names, or None if malformed."""
    if text is None or len(text) != 4 or text[1] != ".":
        return None
    try:
        klass, detail = int(text[0]), int(text[2:])
    except ValueError:
        return None
    if not (0 <= klass <= 7 and 0 <= detail <= 31):
        return None
    return klass << 5 | detail
