"""The few CBOR (RFC 8949) items OSCORE needs, encoded by hand.

RFC 8613 encodes two small structures in CBOR: the HKDF ``info`` array
(§3.2.1) and the COSE ``Enc_structure`` with the external AAD (§5.4). Both are
arrays of unsigned integers, byte strings, text strings and null; a full CBOR
library would be a dependency for about forty lines. Decoding is never needed.
"""

__all__ = ["CborItem", "encode"]

CborItem = int | bytes | str | None | list["CborItem"]


def _head(major: int, value: int) -> bytes:
    """The initial byte(s) of a data item of ``major`` type with ``value``."""
    if value < 24:
        return bytes((major << 5 | value,))
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes((major << 5 | extra,)) + value.to_bytes(width, "big")
    raise ValueError(f"CBOR value {value} does not fit 64 bits")


def encode(item: CborItem) -> bytes:
    """The deterministic CBOR encoding of ``item`` (RFC 8949 §4.2.1).

    Raises:
        ValueError: a negative integer or a type this encoder does not know.
    """
    if item is None:
        return b"\xf6"
    if isinstance(item, bool):
        raise ValueError("booleans are not used by OSCORE")
    if isinstance(item, int):
        if item < 0:
            raise ValueError("negative integers are not used by OSCORE")
        return _head(0, item)
    if isinstance(item, bytes):
        return _head(2, len(item)) + item
    if isinstance(item, str):
        raw = item.encode()
        return _head(3, len(raw)) + raw
    if isinstance(item, list):
        return _head(4, len(item)) + b"".join(encode(x) for x in item)
    raise ValueError(f"cannot CBOR-encode {type(item).__name__}")
