"""MSGin5G-1 JSON payloads (TS 24.538 digest §2.6, §2.7, §3, §4) ↔ model.

Decoding is one msgspec call over a tagged union (tag ``messageType``) followed by
the cross-member rules msgspec cannot express (exactly one recipient, the inner
rules of ``commAvailability``, the value of ``msgin5gServiceId``). Every failure
is a :class:`~msgin5g.errors.DecodeError` whose ``member`` names the offending JSON
member (``"ueCredentialInfo.authType"``), or an
:class:`~msgin5g.errors.UnsupportedMessageType` for an unknown ``messageType``.
Unknown members are ignored (forward compatibility, digest §2.6).

Nesting is bounded before decoding (issue 10 item 7): a payload nested deeper
than :data:`MAX_JSON_DEPTH` levels is refused with a :class:`DecodeError`
(4.00 on the wire) without being parsed, because msgspec recurses once per
level and ~1,000 levels raised ``RecursionError`` (5.00 and a traceback per
datagram). The check costs two ``bytes.count`` calls for ordinary payloads;
only a payload with more than :data:`MAX_JSON_DEPTH` brackets gets the exact
scan (:func:`json_depth_exceeds`). A ``RecursionError`` that still escapes
msgspec becomes a :class:`DecodeError` too.
"""

import re
from typing import Any, Final, cast

import msgspec

from msgin5g.codec.message_type import MessageTypeOnly
from msgin5g.errors import DecodeError, EncodeError, UnsupportedMessageType
from msgin5g.model.messages import (
    AggImdn,
    AggMsg,
    AppDereg,
    AppDeregResp,
    AppReg,
    AppRegResp,
    BulkConfReq,
    BulkConfResp,
    BulkDereg,
    BulkDeregResp,
    BulkReg,
    BulkRegResp,
    ConfReq,
    ConfResp,
    Dereg,
    DeregResp,
    ErrorBody,
    GwDereg,
    GwDeregResp,
    GwReg,
    GwRegResp,
    Imdn,
    LocalImdn,
    LocalMsg,
    Msg,
    MsgResp,
    MsgUpd,
    Reg,
    RegResp,
    SegConfir,
    SegRec,
    TopicSub,
    TopicSubResp,
    TopicUnsub,
    TopicUnsubResp,
)
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID

__all__ = [
    "ConfigRequest",
    "ConfigResponse",
    "Downlink",
    "GatewayResponse",
    "LocalDownlink",
    "LocalUplink",
    "Response",
    "Uplink",
    "decode_config_request",
    "decode_config_response",
    "decode_downlink",
    "decode_error_body",
    "decode_gateway_response",
    "decode_local_downlink",
    "decode_local_uplink",
    "decode_response",
    "decode_uplink",
    "encode",
    "json_depth_exceeds",
    "message_type_of",
]

Uplink = (
    Reg
    | Dereg
    | Msg
    | Imdn
    | MsgUpd
    | BulkReg
    | BulkDereg
    | AggMsg
    | AggImdn
    | SegRec
    | SegConfir
    | TopicSub
    | TopicUnsub
)
"""Requests a client sends to the server that this server handles."""

Downlink = Msg | Imdn | AggMsg | AggImdn | SegRec | SegConfir
"""Requests the server sends to a client."""

Response = (
    RegResp
    | DeregResp
    | MsgResp
    | BulkRegResp
    | BulkDeregResp
    | TopicSubResp
    | TopicUnsubResp
)
"""Piggybacked response payloads the server sends."""

LocalUplink = Reg | Dereg | LocalMsg | LocalImdn | AppReg | AppDereg | GwReg | GwDereg
"""Requests a constrained UE sends to its Gateway UE (MSGin5G-5/-6, digest §2.3)."""

LocalDownlink = RegResp | DeregResp | Msg | Imdn
"""Requests a Gateway UE sends to a constrained UE (digest §2.3)."""

GatewayResponse = AppRegResp | AppDeregResp | GwRegResp | GwDeregResp | MsgResp
"""Piggybacked responses a Gateway UE sends to a constrained UE."""

ConfigRequest = ConfReq | BulkConfReq
"""Configuration requests (digest §3.1; project form on ``/msgin5g/config``)."""

ConfigResponse = ConfResp | BulkConfResp
"""Configuration responses."""


_type_only_decoder: Final = msgspec.json.Decoder(MessageTypeOnly)
_uplink_decoder: Final = msgspec.json.Decoder(Uplink)
_local_uplink_decoder: Final = msgspec.json.Decoder(LocalUplink)
_local_downlink_decoder: Final = msgspec.json.Decoder(LocalDownlink)
_gateway_response_decoder: Final = msgspec.json.Decoder(GatewayResponse)
_config_request_decoder: Final = msgspec.json.Decoder(ConfigRequest)
_config_response_decoder: Final = msgspec.json.Decoder(ConfigResponse)
_downlink_decoder: Final = msgspec.json.Decoder(Downlink)
_response_decoder: Final = msgspec.json.Decoder(Response)
_error_decoder: Final = msgspec.json.Decoder(ErrorBody)
_encoder: Final = msgspec.json.Encoder()

_MESSAGE_TYPE = re.compile(rb'"messageType"\s*:\s*"([A-Z_]{1,32})"')
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")
_RECIPIENTS: Final = (
    "recipient_ue_service_id",
    "recipient_as_service_id",
    "recipient_group_service_id",
    "recipient_broadcast_area_id",
    "messaging_topic",
)


MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays/objects accepted in any MSGin5G JSON payload.

The deepest legitimate payload (``BULKREG`` → ``regRequests`` → ``REG`` →
``triggeringInfo`` → ``clientPorts`` → entry) has 6 levels."""

_NOT_STRUCTURE: Final = bytes(b for b in range(256) if b not in b'[]{}"')
_TO_PARENS: Final = bytes.maketrans(b"[]{}", b"()()")


def json_depth_exceeds(data: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data`` nests arrays/objects more than ``limit`` levels deep.

    Brackets inside JSON strings do not count; unclosed brackets do (a parser
    recurses on them before it notices the truncation). Never raises: the
    scan works on bytes and gives an answer for any input.

    Cost: two ``bytes.count`` calls when the payload has at most ``limit``
    opening brackets (every ordinary message); otherwise a few C-level passes
    (``translate``/``split``/``replace``) per level, at most ``limit`` levels.
    """
    if data.count(b"{") + data.count(b"[") <= limit:
        return False
    if b"\\" in data:
        # escaped backslashes first, then escaped quotes: what is left of a
        # string after this is its delimiting quotes and unescaped content
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = data.translate(None, _NOT_STRUCTURE)
    if b'"' in skeleton:
        skeleton = b"".join(skeleton.split(b'"')[::2])
    skeleton = skeleton.translate(_TO_PARENS)
    # Each round removes the innermost pairs; after ``limit`` rounds a pair is
    # left only if it encloses more than ``limit`` levels. A run of more than
    # ``limit`` opening brackets (the usual attack) ends the scan at once.
    run = b"(" * (limit + 1)
    for _ in range(limit):
        if run in skeleton:
            return True
        reduced = skeleton.replace(b"()", b"")
        if len(reduced) == len(skeleton):
            break
        skeleton = reduced
    else:
        if b"()" in skeleton:
            return True
    return skeleton.count(b"(") > limit


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _translate(
    exc: msgspec.MsgspecError | UnicodeDecodeError, data: bytes
) -> DecodeError:
    if isinstance(exc, UnicodeDecodeError):
        return DecodeError(f"payload is not valid UTF-8 (octet {exc.start})")
    text = str(exc)
    if isinstance(exc, msgspec.DecodeError) and not isinstance(
        exc, msgspec.ValidationError
    ):
        return DecodeError(f"payload is not valid JSON: {text}")
    at = _AT_PATH.search(text)
    path = at.group(1) if at else ""
    missing = _MISSING.search(text)
    member = path
    if missing:
        member = f"{path}.{missing.group(1)}" if path else missing.group(1)
    if member == "messageType" and text.startswith("Invalid value"):
        return UnsupportedMessageType(
            f"unsupported messageType: {text.split(' - ')[0]}", member="messageType"
        )
    if not member and "Expected `object`" in text:
        return DecodeError("payload must be a JSON object", member=None)
    if "matching regex" in text:
        return DecodeError(
            f"`{member or 'payload'}` has a character that is not allowed (control "
            "characters anywhere; '/', '+', '#' in IDs)",
            member=member or None,
        )
    return DecodeError(_clean(text), member=member or None)


def _clean(text: str) -> str:
    return text.replace("`$.", "`").replace("`$`", "`payload`")


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes) -> object:
    """Run one msgspec decoder; every failure becomes a :class:`DecodeError`."""
    if data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH and json_depth_exceeds(
        data
    ):
        raise DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return decoder.decode(data)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise _translate(exc, data) from None
    except RecursionError:
        raise DecodeError("JSON nested too deeply") from None


def message_type_of(data: bytes) -> str | None:
    """Best-effort ``messageType`` of a payload (for error bodies); never raises.

    A payload too deep to parse safely is searched for the member textually.
    """
    if json_depth_exceeds(data):
        found = _MESSAGE_TYPE.search(data)
        return found.group(1).decode() if found else None
    try:
        obj = _type_only_decoder.decode(data)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None
    value = obj.message_type
    if isinstance(value, str) and len(value) <= 32 and value.isprintable():
        return value
    return None


def _check_service_id(value: str | None, expected: str) -> None:
    if value is not None and value != expected:
        raise DecodeError(
            f"msgin5gServiceId must be {expected!r}", member="msgin5gServiceId"
        )


def _check_msg(msg: Msg | AggMsg) -> None:
    present = [name for name in _RECIPIENTS if getattr(msg, name) is not None]
    if len(present) != 1:
        names = ", ".join(_camel(n) for n in _RECIPIENTS)
        raise DecodeError(
            f"exactly one of {names} must be present (found {len(present)})",
            member=_camel(present[1]) if len(present) > 1 else "recipientUeServiceId",
        )
    if msg.originating_ue_service_id is None:
        raise DecodeError(
            "Object missing required field `originatingUeServiceId`",
            member="originatingUeServiceId",
        )
    if msg.originating_as_service_id is not None:
        raise DecodeError(
            "a client may not send originatingAsServiceId",
            member="originatingAsServiceId",
        )


def _check_reg(reg: Reg) -> None:
    avail = reg.comm_availability
    if (
        avail is not None
        and avail.periodic_comm_indicator is not None
        and avail.periodic_comm_interval is None
    ):
        raise DecodeError(
            "periodicCommInterval is mandatory when periodicCommIndicator is present",
            member="commAvailability.periodicCommInterval",
        )


def _check_bulk(bulk: BulkReg | BulkDereg) -> None:
    entries: list[Reg] | list[Dereg]
    if isinstance(bulk, BulkReg):
        count, entries, name = (
            bulk.num_of_reg_requests,
            bulk.reg_requests,
            "numOfRegRequests",
        )
    else:
        count, entries, name = (
            bulk.num_of_dereg_requests,
            bulk.dereg_requests,
            "numOfDeregRequests",
        )
    if count != len(entries):
        raise DecodeError(
            f"{name} is {count} but the list has {len(entries)}", member=name
        )
    seen: set[str] = set()
    for entry in entries:
        if entry.ue_service_id in seen:
            raise DecodeError(
                f"{entry.ue_service_id} appears twice in the bulk request", member=name
            )
        seen.add(entry.ue_service_id)
        if isinstance(entry, Reg):
            _check_reg(entry)


def _check_imdn(imdn: Imdn | AggImdn) -> None:
    if (imdn.originating_ue_service_id is None) == (
        imdn.originating_as_service_id is None
    ):
        raise DecodeError(
            "exactly one of originatingUeServiceId, originatingAsServiceId is required",
            member="originatingUeServiceId",
        )
    if (imdn.recipient_ue_service_id is None) == (imdn.recipient_as_service_id is None):
        raise DecodeError(
            "exactly one of recipientUeServiceId, recipientAsServiceId is required",
            member="recipientUeServiceId",
        )


def decode_uplink(data: bytes, *, service_id: str = MSGIN5G_SERVICE_ID) -> Uplink:
    """Decode and validate a request a client sent to the server.

    Args:
        data: the CoAP payload (UTF-8 JSON).
        service_id: the MSGin5G service identifier a present
            ``msgin5gServiceId`` must equal (digest §2.6; ``coap.service_id``).

    Returns:
        The typed message.

    Raises:
        UnsupportedMessageType: ``messageType`` is not one this server handles.
        DecodeError: anything else malformed; ``member`` names the culprit.
    """
    message = cast(Uplink, _decode(_uplink_decoder, data))
    _check_service_id(message.msgin5g_service_id, service_id)
    if isinstance(message, Msg | AggMsg):
        _check_msg(message)
    elif isinstance(message, AggImdn):
        _check_imdn(message)
    elif isinstance(message, Reg):
        _check_reg(message)
    elif isinstance(message, Imdn):
        _check_imdn(message)
    elif isinstance(message, (BulkReg, BulkDereg)):
        _check_bulk(message)
    return message


def decode_downlink(data: bytes, *, service_id: str = MSGIN5G_SERVICE_ID) -> Downlink:
    """Decode a request the server sent to a client.

    ``MSG``, ``IMDN``, ``AGGMSG``, ``AGGIMDN``, ``SEGREC`` or ``SEGCONFIR``.

    Raises:
        UnsupportedMessageType: another ``messageType``.
        DecodeError: anything else malformed.
    """
    message = cast(Downlink, _decode(_downlink_decoder, data))
    _check_service_id(message.msgin5g_service_id, service_id)
    return message


def decode_response(data: bytes) -> Response:
    """Decode a piggybacked response payload (``REGRESP``/``DEREGRESP``/``MSGRESP``).

    Raises:
        DecodeError: malformed or of another type.
    """
    return cast(Response, _decode(_response_decoder, data))


def decode_local_uplink(
    data: bytes, *, service_id: str = MSGIN5G_SERVICE_ID
) -> LocalUplink:
    """Decode a request a constrained UE sent to its Gateway UE.

    ``msgin5gServiceId`` is mandatory on these links (digest §2.6), except on
    ``REG``/``DEREG``: TS 24.538-R18 §6.3.4.3.3/§6.3.4.3.6 put it on the answer only.

    Raises:
        UnsupportedMessageType: a ``messageType`` the gateway does not serve.
        DecodeError: anything else malformed; ``member`` names the culprit.
    """
    message = cast(LocalUplink, _decode(_local_uplink_decoder, data))
    if message.msgin5g_service_id is None and not isinstance(message, (Reg, Dereg)):
        raise DecodeError(
            "Object missing required field `msgin5gServiceId`",
            member="msgin5gServiceId",
        )
    _check_service_id(message.msgin5g_service_id, service_id)
    if isinstance(message, Reg):
        _check_reg(message)
    return message


def decode_local_downlink(
    data: bytes, *, service_id: str = MSGIN5G_SERVICE_ID
) -> LocalDownlink:
    """Decode a request a Gateway UE sent to a constrained UE.

    ``REGRESP``/``DEREGRESP`` (matched requests), ``MSG`` or ``IMDN``.

    Raises:
        UnsupportedMessageType: another ``messageType``.
        DecodeError: anything else malformed.
    """
    message = cast(LocalDownlink, _decode(_local_downlink_decoder, data))
    _check_service_id(message.msgin5g_service_id, service_id)
    return message


def decode_gateway_response(data: bytes) -> GatewayResponse:
    """Decode a piggybacked response of a Gateway UE to a constrained UE.

    Raises:
        DecodeError: malformed or of another type.
    """
    return cast(GatewayResponse, _decode(_gateway_response_decoder, data))


def decode_config_request(
    data: bytes, *, service_id: str = MSGIN5G_SERVICE_ID
) -> ConfigRequest:
    """Decode a ``CONFREQ`` or ``BULKCONFREQ`` (count must match the list).

    Raises:
        UnsupportedMessageType: another ``messageType``.
        DecodeError: anything else malformed.
    """
    message = cast(ConfigRequest, _decode(_config_request_decoder, data))
    _check_service_id(message.msgin5g_service_id, service_id)
    if (
        isinstance(message, BulkConfReq)
        and len(message.conf_requests) != message.num_of_conf_requests
    ):
        raise DecodeError(
            f"numOfConfRequests is {message.num_of_conf_requests} but the list has "
            f"{len(message.conf_requests)}",
            member="numOfConfRequests",
        )
    return message


def decode_config_response(data: bytes) -> ConfigResponse:
    """Decode a ``CONFRESP`` or ``BULKCONFRESP``.

    Raises:
        DecodeError: malformed or of another type.
    """
    return cast(ConfigResponse, _decode(_config_response_decoder, data))


def decode_error_body(data: bytes) -> ErrorBody | None:
    """Decode the JSON diagnostic of a 4.xx/5.xx response, or None if absent/other."""
    try:
        return _error_decoder.decode(data)
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return None


def encode(message: msgspec.Struct) -> bytes:
    """Encode any model message as compact UTF-8 JSON.

    Raises:
        EncodeError: the value cannot be represented.
    """
    try:
        return _encoder.encode(message)
    except (TypeError, ValueError, OverflowError) as exc:
        raise EncodeError(str(exc)) from exc
