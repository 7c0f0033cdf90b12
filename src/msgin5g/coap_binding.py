"""MSGin5G-1 over CoAP: the rules both ends apply (digest §2, §3 common steps, §5.1).

One place for what the server's transport (:mod:`msgin5g.transports.coap`),
the device client (:mod:`msgin5g.client`) and the gateway
(:mod:`msgin5g.gateway`) used to spell out each in its own way:

* request options: Uri-Path of a resource + Content-Format 50 (:func:`post_options`);
* answers: :func:`json_response` (a JSON body with Content-Format 50) and
  :func:`error_response` (the §5.1 error body: ``messageType`` of the request,
  ``failureCause``, ``detail``);
* the Content-Format check of every request with a payload (:func:`require_json`,
  4.15 otherwise, digest §3 common step 2);
* a 4.xx/5.xx answer becomes :class:`~msgin5g.errors.RemoteError` with the code,
  the failure cause and the decoded body (:func:`raise_for_code`).

Resource paths come from :mod:`msgin5g.spec.coap`; CoAP codes are written
"c.dd" only through :func:`msgin5g.coap.numbers.code_str`. Which domain error
becomes which code is the server's business (``msgin5g.transports.coap.codes``).

Layering: this module joins the CoAP engine (:mod:`msgin5g.coap`) and the JSON
codec (:mod:`msgin5g.codec`), which may not import each other, so it sits
above both and below ``client``, ``gateway`` and ``transports`` (a sibling of
``service``, which never sees wire formats; see pyproject's import contracts).
"""

from collections.abc import Iterable

import msgspec

from msgin5g.coap.message import (
    CoapMessage,
    encode_uint,
    make_response,
    uri_path_options,
)
from msgin5g.coap.numbers import Code, OptionNumber
from msgin5g.codec.ue_payload import decode_error_body, encode, message_type_of
from msgin5g.errors import RemoteError
from msgin5g.model.messages import ErrorBody
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.coap import CONTENT_FORMAT_JSON

__all__ = [
    "JSON_FORMAT",
    "error_response",
    "json_response",
    "post_options",
    "raise_for_code",
    "require_json",
]

JSON_FORMAT: tuple[int, bytes] = (
    int(OptionNumber.CONTENT_FORMAT),
    encode_uint(CONTENT_FORMAT_JSON),
)
"""The Content-Format option every MSGin5G payload carries (50, application/json)."""

_JSON_ONLY = "Content-Format must be 50 (application/json)"


def post_options(path: Iterable[str]) -> list[tuple[int, bytes]]:
    """Options of a JSON POST to ``path``: Uri-Path segments, then Content-Format."""
    return [*uri_path_options(tuple(path)), JSON_FORMAT]


def json_response(
    request: CoapMessage,
    code: int,
    body: msgspec.Struct,
    options: list[tuple[int, bytes]] | None = None,
) -> CoapMessage:
    """The answer to ``request``: ``body`` as JSON with Content-Format 50.

    Args:
        request: the request answered (its Token is copied).
        code: the response code.
        body: any model message.
        options: further options (Location-Path, Observe, Size1, ...).

    Raises:
        EncodeError: ``body`` cannot be encoded.
    """
    return make_response(
        request, code, encode(body), content_format=CONTENT_FORMAT_JSON, options=options
    )


def error_response(
    request: CoapMessage,
    code: int,
    cause: FailureCause | str,
    detail: str,
    *,
    message_type: str | None = None,
    options: list[tuple[int, bytes]] | None = None,
) -> CoapMessage:
    """A 4.xx/5.xx answer with the digest §5.1 error body.

    Args:
        request: the request refused.
        code: the error code.
        cause: the ``failureCause``.
        detail: human-readable text (cut to 300 characters).
        message_type: the ``messageType`` to name; default: the request's own
            (best effort), else ``"ERROR"``.
        options: further options (e.g. Size1 with 4.13).
    """
    body = ErrorBody(
        message_type=message_type or message_type_of(request.payload) or "ERROR",
        failure_cause=cause.value if isinstance(cause, FailureCause) else cause,
        detail=detail[:300],
    )
    return json_response(request, code, body, options)


def require_json(request: CoapMessage) -> CoapMessage | None:
    """None when ``request`` carries Content-Format 50; else its 4.15 answer."""
    if request.content_format == CONTENT_FORMAT_JSON:
        return None
    return error_response(
        request,
        Code.UNSUPPORTED_CONTENT_FORMAT,
        FailureCause.INVALID_MESSAGE,
        _JSON_ONLY,
    )


def raise_for_code(response: CoapMessage) -> CoapMessage:
    """Return a success response; raise for a 4.xx/5.xx one.

    Raises:
        RemoteError: with ``code``, ``cause`` (the error body's ``failureCause``)
            and ``body`` (the decoded error body, or None).
    """
    if response.code < 128:
        return response
    body = decode_error_body(response.payload)
    raise RemoteError(
        response.code,
        response.payload,
        cause=None if body is None else body.failure_cause,
        body=body,
    )
