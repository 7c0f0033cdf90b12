"""RFC 8613 Appendix C test vectors, and the rules of §6.1, §7.4 and Appendix B."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgin5g.coap.message import CoapMessage
from msgin5g.coap.oscore import (
    ECHO,
    EchoRequired,
    OscoreError,
    OscoreOption,
    ReplayError,
    SequenceExhausted,
    UnknownContext,
    decode_option,
    derive_context,
    encode_option,
    inner_option,
    protect_request,
    protect_response,
    request_option,
    unprotect_request,
    unprotect_response,
)
from msgin5g.coap.oscore.cbor import encode as cbor

h = bytes.fromhex
SECRET = h("0102030405060708090a0b0c0d0e0f10")
SALT = h("9e7ca92223786340")
ID_CONTEXT = h("37cbf3210017a2d3")


def pair(**kwargs: object):  # type: ignore[no-untyped-def]
    client = derive_context(SECRET, **kwargs)  # type: ignore[arg-type]
    server = derive_context(
        SECRET,
        **{  # type: ignore[arg-type]
            **kwargs,
            "sender_id": kwargs["recipient_id"],
            "recipient_id": kwargs["sender_id"],
        },
    )
    return client, server


@pytest.mark.parametrize(
    ("salt", "id_context", "sid", "rid", "skey", "rkey", "iv", "snonce", "rnonce"),
    [
        # C.1.1 / C.1.2
        (SALT, None, "", "01", "f0910ed7295e6ad4b54fc793154302ff",
         "ffb14e093c94c9cac9471648b4f98710", "4622d4dd6d944168eefb54987c",
         "4622d4dd6d944168eefb54987c", "4722d4dd6d944169eefb54987c"),
        (SALT, None, "01", "", "ffb14e093c94c9cac9471648b4f98710",
         "f0910ed7295e6ad4b54fc793154302ff", "4622d4dd6d944168eefb54987c",
         "4722d4dd6d944169eefb54987c", "4622d4dd6d944168eefb54987c"),
        # C.2.1 (no Master Salt)
        (b"", None, "00", "01", "321b26943253c7ffb6003b0b64d74041",
         "e57b5635815177cd679ab4bcec9d7dda", "be35ae297d2dace910c52e99f9",
         "bf35ae297d2dace910c52e99f9", "bf35ae297d2dace810c52e99f9"),
        # C.3.1 (ID Context)
        (SALT, ID_CONTEXT, "", "01", "af2a1300a5e95788b356336eeecd2b92",
         "e39a0c7c77b43f03b4b39ab9a268699f", "2ca58fb85ff1b81c0b7181b85e",
         "2ca58fb85ff1b81c0b7181b85e", "2da58fb85ff1b81d0b7181b85e"),
    ],
)  # fmt: skip
def test_key_derivation(  # noqa: PLR0917
    salt: bytes,
    id_context: bytes | None,
    sid: str,
    rid: str,
    skey: str,
    rkey: str,
    iv: str,
    snonce: str,
    rnonce: str,
) -> None:
    ctx = derive_context(
        SECRET,
        master_salt=salt,
        id_context=id_context,
        sender_id=h(sid),
        recipient_id=h(rid),
    )
    # keys are not exposed; the nonces and a known-answer AEAD pin them down
    assert ctx.nonce(h(sid), b"\0") == h(snonce)
    assert ctx.nonce(h(rid), b"\0") == h(rnonce)
    assert ctx.nonce(b"", b"") == bytes(
        a ^ b for a, b in zip(h(iv), h("00" * 13), strict=True)
    )
    other = derive_context(
        SECRET, master_salt=salt, id_context=id_context, sender_id=h(rid),
        recipient_id=h(sid),
    )  # fmt: skip
    sealed = ctx.seal(b"\0" * 13, b"x", b"")
    assert other.open(b"\0" * 13, sealed, b"") == b"x"
    # the sender key is the one of the vector (RFC 3610 AES-CCM, M = 8, L = 2)
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    assert AESCCM(h(skey), tag_length=8).encrypt(b"\0" * 13, b"x", b"") == sealed
    assert (
        AESCCM(h(rkey), tag_length=8).decrypt(
            b"\0" * 13, other.seal(b"\0" * 13, b"y", b""), b""
        )
        == b"y"
    )


def test_cbor_info_of_c1() -> None:
    assert cbor([b"", None, 10, "Key", 16]) == h("8540f60a634b657910")
    assert cbor([b"\x01", None, 10, "Key", 16]) == h("854101f60a634b657910")
    assert cbor([b"", None, 10, "IV", 13]) == h("8540f60a6249560d")


def test_aad_of_section_5_4() -> None:
    ctx = derive_context(SECRET, sender_id=b"\0", recipient_id=b"\1")
    assert ctx.aad(h("00"), h("25")) == h("8368456e63727970743040498501810a4100412540")


REQUESTS = [
    # C.4: master salt, client Sender ID empty
    ({"master_salt": SALT, "sender_id": b"", "recipient_id": b"\1"},
     "44015d1f00003974396c6f63616c686f737483747631",
     "44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e"),
    # C.5: no salt, Sender ID 00
    ({"sender_id": b"\0", "recipient_id": b"\1"},
     "440171c30000b932396c6f63616c686f737483747631",
     "440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0"),
    # C.6: ID Context sent as kid context
    ({"master_salt": SALT, "sender_id": b"", "recipient_id": b"\1",
      "id_context": ID_CONTEXT},
     "44012f8eef9bbf7a396c6f63616c686f737483747631",
     "44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3"),
]  # fmt: skip


@pytest.mark.parametrize(("params", "plain", "protected"), REQUESTS)
def test_request_vectors(params: dict[str, object], plain: str, protected: str) -> None:
    client, server = pair(**params, sender_sequence=20)
    outer, binding = protect_request(client, CoapMessage.decode(h(plain)))
    assert outer.encode() == h(protected)
    assert binding.piv == b"\x14"
    assert client.sender_sequence == 21
    received = CoapMessage.decode(h(protected))
    inner, _ = unprotect_request(server, received, request_option(received))
    assert inner.encode() == h(plain)


@pytest.mark.parametrize(
    ("new_piv", "protected"),
    [
        (False, "64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106"),
        (True, "64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e"),
    ],
)
def test_response_vectors(new_piv: bool, protected: str) -> None:
    """C.7 (the request's nonce) and C.8 (the server's Partial IV 0)."""
    client, server = pair(
        master_salt=SALT, sender_id=b"", recipient_id=b"\1", sender_sequence=20
    )
    server.sender_sequence = 0
    request = CoapMessage.decode(h("44015d1f00003974396c6f63616c686f737483747631"))
    outer_request, binding = protect_request(client, request)
    _, server_binding = unprotect_request(
        server, outer_request, request_option(outer_request)
    )
    plain = h("64455d1f00003974ff48656c6c6f20576f726c6421")
    outer = protect_response(
        server, CoapMessage.decode(plain), server_binding, new_piv=new_piv
    )
    assert outer.encode() == h(protected)
    assert unprotect_response(client, outer, binding).encode() == plain


def get(path: str = "x", *options: tuple[int, bytes]) -> CoapMessage:
    return CoapMessage(0, 1, 7, b"\1\2", [*options, (11, path.encode())])


def test_replay_window() -> None:
    client, server = pair(sender_id=b"\x0a", recipient_id=b"\x0b")
    sent = [protect_request(client, get())[0] for _ in range(40)]

    def accept(i: int) -> None:
        unprotect_request(server, sent[i], request_option(sent[i]))

    for i in (5, 3, 4, 39):
        accept(i)
    for i in (5, 3, 39, 7):  # seen, or more than 31 below the newest
        with pytest.raises(OscoreError, match="Replay"):
            accept(i)
    accept(20)


def test_tampering_does_not_consume_the_partial_iv() -> None:
    client, server = pair(sender_id=b"\x0a", recipient_id=b"\x0b")
    outer, _ = protect_request(client, get())
    bad = CoapMessage(
        outer.mtype, outer.code, outer.mid, outer.token, outer.options,
        bytes([outer.payload[0] ^ 1]) + outer.payload[1:],
    )  # fmt: skip
    with pytest.raises(OscoreError, match="Decryption failed"):
        unprotect_request(server, bad, request_option(bad))
    unprotect_request(server, outer, request_option(outer))
    with pytest.raises(ReplayError):
        server.check_replay(0, None)


def test_wrong_kid_or_kid_context_is_unknown_context() -> None:
    client, server = pair(sender_id=b"\x0a", recipient_id=b"\x0b", id_context=b"ue")
    outer, _ = protect_request(client, get())
    with pytest.raises(UnknownContext):
        unprotect_request(server, outer, OscoreOption(b"\0", b"\x0c", b"ue"))
    with pytest.raises(UnknownContext):
        unprotect_request(server, outer, OscoreOption(b"\0", b"\x0a", b"other"))


@pytest.mark.parametrize(
    "value", [b"\x20", b"\x06\1\2\3\4\5\6", b"\x03\1", b"\x11\1\5\0", b"\x01\1\x09"]
)
def test_malformed_option_is_bad_option(value: bytes) -> None:
    with pytest.raises(OscoreError) as caught:
        decode_option(value)
    assert caught.value.code == 0x82


def test_request_needs_partial_iv_and_kid() -> None:
    message = CoapMessage(0, 2, 1, b"", [(9, b"\x01\x30")], b"x")
    with pytest.raises(OscoreError) as caught:
        request_option(message)
    assert caught.value.code == 0x82


@given(
    piv=st.none() | st.binary(min_size=1, max_size=5),
    kid=st.none() | st.binary(max_size=7),
    kid_context=st.none() | st.binary(max_size=64),
)
def test_option_round_trip(
    piv: bytes | None, kid: bytes | None, kid_context: bytes | None
) -> None:
    option = OscoreOption(piv, kid, kid_context)
    assert decode_option(encode_option(option)) == option


@given(st.binary(max_size=40))
def test_option_decoder_never_crashes(value: bytes) -> None:
    codes = []
    try:
        decode_option(value)
    except OscoreError as exc:
        codes.append(exc.code)
    assert codes in ([], [0x82])


def test_echo_recovery_after_restart() -> None:
    """Appendix B.1.2: unknown window -> 4.01 Echo; the echoed request starts it."""
    client, _ = pair(sender_id=b"\1", recipient_id=b"", id_context=b"ue-1")
    server = derive_context(
        SECRET, sender_id=b"", recipient_id=b"\1", id_context=b"ue-1",
        window_known=False,
    )  # fmt: skip
    first, _ = protect_request(client, get())
    with pytest.raises(EchoRequired) as caught:
        unprotect_request(server, first, request_option(first))
    echo = caught.value.echo
    wrong, _ = protect_request(client, get("x", (ECHO, b"nope")))
    with pytest.raises(EchoRequired):
        unprotect_request(server, wrong, request_option(wrong))
    again, _ = protect_request(client, get("x", (ECHO, echo)))
    inner, _ = unprotect_request(server, again, request_option(again))
    assert inner_option(inner, ECHO) == echo
    with pytest.raises(OscoreError, match="Replay"):  # the old one is stale now
        unprotect_request(server, first, request_option(first))
    later, _ = protect_request(client, get())
    unprotect_request(server, later, request_option(later))


def test_sequence_reservation() -> None:
    ctx = derive_context(
        SECRET, sender_id=b"", recipient_id=b"\1", sender_sequence=10,
        reserved_until=12,
    )  # fmt: skip
    assert ctx.next_piv() == b"\x0a"
    assert ctx.reservation_needed(5)
    ctx.next_piv()
    with pytest.raises(SequenceExhausted):
        ctx.next_piv()
    ctx.reserve(100)
    assert ctx.next_piv() == b"\x0c"
    done = derive_context(
        SECRET, sender_id=b"", recipient_id=b"\1", sender_sequence=(1 << 40)
    )
    with pytest.raises(SequenceExhausted):
        done.next_piv()


def test_repr_has_no_keys() -> None:
    ctx = derive_context(SECRET, sender_id=b"", recipient_id=b"\1")
    assert "f0910e" not in repr(ctx)
    assert SECRET.hex() not in repr(ctx)


def test_nested_oscore_is_refused() -> None:
    client, _ = pair(sender_id=b"\1", recipient_id=b"")
    with pytest.raises(OscoreError, match="nested"):
        protect_request(client, get("x", (9, b"")))
