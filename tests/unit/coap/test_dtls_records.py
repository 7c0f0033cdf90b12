"""The record checks the DTLS layer applies before Mbed TLS sees a datagram."""

from msgin5g.coap.dtls_records import (
    framed,
    identity_of,
    identity_peer,
    is_client_hello,
    one_protected_record,
)


def record(kind: int, epoch: int, body: bytes) -> bytes:
    return (
        bytes([kind, 254, 253])
        + epoch.to_bytes(2, "big")
        + (7).to_bytes(6, "big")
        + len(body).to_bytes(2, "big")
        + body
    )


def test_client_hello_is_an_epoch_zero_handshake_record_of_type_1() -> None:
    assert is_client_hello(record(22, 0, b"\x01" + bytes(40)))
    assert not is_client_hello(record(22, 1, b"\x01" + bytes(40)))
    assert not is_client_hello(record(22, 0, b"\x10" + bytes(40)))  # ClientKeyExchange
    assert not is_client_hello(record(23, 0, b"\x01" + bytes(40)))
    assert not is_client_hello(b"\x16" + bytes(12))


def test_framed_takes_whole_records_only() -> None:
    app = record(23, 1, bytes(40))
    assert framed(app) and framed(app + app)
    assert framed(record(22, 0, bytes(20)) + record(20, 0, b"\x01") + app)
    assert not framed(app + b"\x00")  # trailing octets
    assert not framed(app[:-1])  # short
    assert not framed(record(23, 0, bytes(40)))  # plaintext application data
    assert not framed(record(21, 0, b"\x02\x28"))  # plaintext alert
    assert not framed(record(99, 1, bytes(8)))  # unknown content type
    assert not framed(record(23, 1, bytes(20_000)))  # over the record bound


def test_only_one_protected_record_is_tried_for_a_move() -> None:
    app = record(23, 1, bytes(40))
    assert one_protected_record(app)
    assert not one_protected_record(app + app)
    assert not one_protected_record(record(23, 0, bytes(40)))
    assert not one_protected_record(record(22, 1, bytes(40)))


def test_identity_peers() -> None:
    assert identity_of(identity_peer("ue-1")) == "ue-1"
    assert identity_of(("10.0.0.1", 5684)) is None
    assert identity_of("psk:x") is None
