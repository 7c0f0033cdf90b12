"""Protect and unprotect CoAP messages with OSCORE (RFC 8613 §4-§8).

What: turns a plain :class:`~msgin5g.coap.message.CoapMessage` into its OSCORE
form and back. The outer message keeps type, Message ID, token and the Class U
options; the inner code, the Class E options and the payload are encrypted into
the outer payload, and the OSCORE option carries Partial IV, kid and kid
context (§6.1).

RFC clauses:
    * §4.1 option classes: Uri-Host, Uri-Port, Proxy-Uri, Proxy-Scheme stay
      outside (Class U); Observe is both; every other option is Class E.
    * §4.2 outer codes: POST for a request (FETCH with Observe), 2.04 Changed
      for a response (2.05 Content for a notification).
    * §5.3 plaintext = code, Class E options, payload marker and payload.
    * §6.1 OSCORE option: flags ``n`` (Partial IV length, 6 and 7 reserved),
      ``k`` (kid), ``h`` (kid context), reserved bits must be 0; a request
      carries a Partial IV and a kid; decoding errors answer 4.02 Bad Option.
    * §8.1-§8.4 request and response processing; a response either reuses the
      request's nonce (empty OSCORE option) or carries its own Partial IV.
"""

from __future__ import annotations

from dataclasses import dataclass

from msgin5g.coap.message import CoapDecodeError, CoapMessage
from msgin5g.coap.oscore.context import (
    ECHO,
    OSCORE,
    OscoreError,
    SecurityContext,
    UnknownContext,
)

__all__ = [
    "OscoreOption",
    "RequestBinding",
    "binding_of",
    "decode_option",
    "encode_option",
    "inner_option",
    "is_protected",
    "protect_request",
    "protect_response",
    "request_option",
    "unprotect_request",
    "unprotect_response",
]

_OUTER_ONLY = frozenset((3, 7, OSCORE, 35, 39))  # Uri-Host/Port, Proxy-Uri/Scheme
_OBSERVE = 6
_POST = 2
_FETCH = 5
_CHANGED = 68  # 2.04
_CONTENT = 69  # 2.05
_BAD_OPTION = 0x82  # 4.02


@dataclass(frozen=True, slots=True)
class OscoreOption:
    """The decoded OSCORE option value (§6.1); None: the field is absent."""

    piv: bytes | None = None
    kid: bytes | None = None
    kid_context: bytes | None = None


@dataclass(frozen=True, slots=True)
class RequestBinding:
    """What binds a response to its request: the request's kid and Partial IV."""

    kid: bytes
    piv: bytes


def is_protected(message: CoapMessage) -> bool:
    """Whether ``message`` carries an OSCORE option."""
    return any(number == OSCORE for number, _ in message.options)


def _option_value(message: CoapMessage) -> bytes | None:
    for number, value in message.options:
        if number == OSCORE:
            return value
    return None


def inner_option(message: CoapMessage, number: int) -> bytes | None:
    """The first option ``number`` of a (decrypted) message, or None."""
    for num, value in message.options:
        if num == number:
            return value
    return None


def encode_option(option: OscoreOption) -> bytes:
    """The OSCORE option value of ``option`` (empty when every field is absent).

    Raises:
        ValueError: a Partial IV longer than 5 octets or a kid context above 255.
    """
    flags = 0
    out = bytearray()
    if option.piv is not None:
        if not 1 <= len(option.piv) <= 5:
            raise ValueError("a Partial IV has 1 to 5 octets")
        flags |= len(option.piv)
        out += option.piv
    if option.kid_context is not None:
        if len(option.kid_context) > 255:
            raise ValueError("a kid context has at most 255 octets")
        flags |= 0x10
        out.append(len(option.kid_context))
        out += option.kid_context
    if option.kid is not None:
        flags |= 0x08
        out += option.kid
    if not flags:
        return b""
    return bytes((flags,)) + bytes(out)


def decode_option(value: bytes) -> OscoreOption:
    """Parse an OSCORE option value.

    Raises:
        OscoreError: reserved bits or lengths, truncated fields (code 4.02).
    """
    if not value:
        return OscoreOption()
    flags = value[0]
    if flags & 0xE0:
        raise OscoreError("OSCORE option: reserved flag bits set", _BAD_OPTION)
    n = flags & 0x07
    if n > 5:
        raise OscoreError(f"OSCORE option: reserved Partial IV length {n}", _BAD_OPTION)
    pos = 1
    piv = None
    if n:
        piv = value[pos : pos + n]
        if len(piv) != n:
            raise OscoreError("OSCORE option: Partial IV truncated", _BAD_OPTION)
        pos += n
    kid_context = None
    if flags & 0x10:
        if pos >= len(value):
            raise OscoreError("OSCORE option: kid context truncated", _BAD_OPTION)
        size = value[pos]
        kid_context = value[pos + 1 : pos + 1 + size]
        if len(kid_context) != size:
            raise OscoreError("OSCORE option: kid context truncated", _BAD_OPTION)
        pos += 1 + size
    kid = None
    if flags & 0x08:
        kid = value[pos:]
    elif pos != len(value):
        raise OscoreError("OSCORE option: trailing octets", _BAD_OPTION)
    return OscoreOption(piv, kid, kid_context)


def request_option(message: CoapMessage) -> OscoreOption:
    """The OSCORE option of a request, checked for a Partial IV and a kid.

    Raises:
        OscoreError: absent, malformed, or lacking Partial IV or kid (4.02).
    """
    value = _option_value(message)
    if value is None:
        raise OscoreError("not an OSCORE request", _BAD_OPTION)
    option = decode_option(value)
    if option.piv is None or option.kid is None:
        raise OscoreError("OSCORE request without Partial IV or kid", _BAD_OPTION)
    return option


def binding_of(option: OscoreOption) -> RequestBinding:
    """The binding of a request whose option passed :func:`request_option`.

    Raises:
        OscoreError: no Partial IV or no kid (4.02).
    """
    if option.piv is None or option.kid is None:
        raise OscoreError("OSCORE request without Partial IV or kid", _BAD_OPTION)
    return RequestBinding(option.kid, option.piv)


def _split(options: list[tuple[int, bytes]]) -> tuple[list[tuple[int, bytes]], ...]:
    outer = [o for o in options if o[0] in _OUTER_ONLY or o[0] == _OBSERVE]
    inner = [o for o in options if o[0] not in _OUTER_ONLY]
    return outer, inner


def _plaintext(code: int, options: list[tuple[int, bytes]], payload: bytes) -> bytes:
    body = CoapMessage(0, code, 0, b"", options, payload).encode()
    return bytes((code,)) + body[4:]


def _inner(
    outer: CoapMessage, plaintext: bytes, outer_options: list[tuple[int, bytes]]
) -> CoapMessage:
    """The decrypted message: outer header and Class U options, inner the rest."""
    if not plaintext or plaintext[0] == 0:
        raise OscoreError("Decryption failed: no inner code")
    try:
        decoded = CoapMessage.decode(b"\x40" + plaintext[:1] + b"\0\0" + plaintext[1:])
    except CoapDecodeError as exc:
        raise OscoreError(f"inner message malformed: {exc}") from None
    if any(number in _OUTER_ONLY for number, _ in decoded.options):
        raise OscoreError("Class U option inside the protected part")
    options = [o for o in outer_options if o[0] in _OUTER_ONLY and o[0] != OSCORE]
    options += decoded.options
    return CoapMessage(
        outer.mtype, decoded.code, outer.mid, outer.token, options, decoded.payload
    )


def protect_request(
    ctx: SecurityContext, message: CoapMessage, *, send_kid_context: bool = True
) -> tuple[CoapMessage, RequestBinding]:
    """The OSCORE form of request ``message`` and what binds its response.

    Raises:
        SequenceExhausted: no Sender Sequence Number may be used now.
        OscoreError: ``message`` already carries an OSCORE option.
    """
    if is_protected(message):
        raise OscoreError("nested OSCORE is not supported")
    piv = ctx.next_piv()
    outer_options, inner_options = _split(message.options)
    kid = ctx.sender_id
    ciphertext = ctx.seal(
        ctx.nonce(kid, piv),
        _plaintext(message.code, inner_options, message.payload),
        ctx.aad(kid, piv),
    )
    kid_context = ctx.id_context if send_kid_context else None
    value = encode_option(OscoreOption(piv, kid, kid_context))
    code = _FETCH if any(o[0] == _OBSERVE for o in outer_options) else _POST
    outer = CoapMessage(
        message.mtype,
        code,
        message.mid,
        message.token,
        [*outer_options, (OSCORE, value)],
        ciphertext,
    )
    return outer, RequestBinding(kid, piv)


def unprotect_request(
    ctx: SecurityContext, message: CoapMessage, option: OscoreOption
) -> tuple[CoapMessage, RequestBinding]:
    """Verify and decrypt a request with the context its kid selected.

    Args:
        ctx: the context found for ``option.kid`` / ``option.kid_context``.
        message: the outer request.
        option: its decoded OSCORE option (:func:`request_option`).

    Returns:
        the inner request and its binding (for :func:`protect_response`).

    Raises:
        UnknownContext: kid or kid context do not match ``ctx``.
        ReplayError: the Partial IV was used before.
        EchoRequired: after a restart, the request's freshness needs Echo.
        OscoreError: decryption failed or the inner message is malformed.
    """
    kid, piv = option.kid, option.piv
    if kid is None or piv is None:
        raise OscoreError("OSCORE request without Partial IV or kid", _BAD_OPTION)
    if kid != ctx.recipient_id or (
        option.kid_context is not None and option.kid_context != ctx.id_context
    ):
        raise UnknownContext
    seq = int.from_bytes(piv, "big")
    if ctx.window.known and not ctx.window.fresh(seq):
        raise OscoreError("Replay detected", 0x81)
    plaintext = ctx.open(ctx.nonce(kid, piv), message.payload, ctx.aad(kid, piv))
    inner = _inner(message, plaintext, message.options)
    ctx.check_replay(seq, inner_option(inner, ECHO))
    return inner, RequestBinding(kid, piv)


def protect_response(
    ctx: SecurityContext,
    response: CoapMessage,
    binding: RequestBinding,
    *,
    new_piv: bool = False,
) -> CoapMessage:
    """The OSCORE form of ``response`` to the request of ``binding``.

    Args:
        new_piv: use a fresh Partial IV of ours instead of the request's nonce
            (required for the 4.01 Echo answer, Appendix B.1.2).

    Raises:
        SequenceExhausted: ``new_piv`` and no number may be used now.
    """
    outer_options, inner_options = _split(response.options)
    if new_piv:
        piv = ctx.next_piv()
        nonce = ctx.nonce(ctx.sender_id, piv)
        value = encode_option(OscoreOption(piv=piv))
    else:
        nonce = ctx.nonce(binding.kid, binding.piv)
        value = b""
    ciphertext = ctx.seal(
        nonce,
        _plaintext(response.code, inner_options, response.payload),
        ctx.aad(binding.kid, binding.piv),
    )
    code = _CONTENT if any(o[0] == _OBSERVE for o in outer_options) else _CHANGED
    return CoapMessage(
        response.mtype,
        code,
        response.mid,
        response.token,
        [*outer_options, (OSCORE, value)],
        ciphertext,
    )


def unprotect_response(
    ctx: SecurityContext, message: CoapMessage, binding: RequestBinding
) -> CoapMessage:
    """Verify and decrypt the response to the request of ``binding``.

    Raises:
        OscoreError: the response is not protected (its code is in the
            message: the peer refused the request before OSCORE, e.g. 4.01
            "Security context not found"), or it does not verify.
    """
    value = _option_value(message)
    if value is None:
        detail = message.payload.decode("utf-8", "replace")[:200]
        raise OscoreError(
            f"unprotected response {message.code >> 5}.{message.code & 31:02d}"
            + (f": {detail}" if detail else ""),
            message.code,
        )
    option = decode_option(value)
    if option.piv is not None:
        nonce = ctx.nonce(ctx.recipient_id, option.piv)
    else:
        nonce = ctx.nonce(binding.kid, binding.piv)
    plaintext = ctx.open(nonce, message.payload, ctx.aad(binding.kid, binding.piv))
    return _inner(message, plaintext, message.options)
