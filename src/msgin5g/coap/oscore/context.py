"""OSCORE security context (RFC 8613 §3): derivation, nonces, AEAD, replay.

What: :func:`derive_context` runs the HKDF derivation of §3.2.1 (HKDF-SHA-256,
AES-CCM-16-64-128) and returns a :class:`SecurityContext` holding the Sender
and Recipient Keys, the Common IV, the Sender Sequence Number and the
Recipient's replay window. Everything here is sans-I/O: persisting sequence
numbers is the caller's job, through :meth:`SecurityContext.reservation_needed`
and :meth:`SecurityContext.reserve`.

RFC clauses:
    * §3.2.1 key and IV derivation (``info`` array, L = 16 / 13 octets).
    * §3.3 Sender/Recipient IDs at most ``nonce length - 6`` = 7 octets.
    * §5.2 AEAD nonce; §5.4 AAD (``Enc_structure`` with the external AAD).
    * §7.2.1 Sender Sequence Number at most 2^40 - 1; never reused.
    * §7.4 / §3.2.2 sliding replay window of 32 (RFC 4303 style).
    * Appendix B.1.1 sequence numbers persisted every K (a *reservation*: the
      caller stores "used up to N" before any number >= N is sent, so that
      after a restart numbering resumes at N and a nonce is never reused).
    * Appendix B.1.2 / RFC 9175: a context whose replay window is not known
      (after a restart) accepts a request only when it carries the Echo value
      the server issued in a 4.01 Unauthorized; the window then starts at that
      request's Partial IV.

Design choices:
    * Failures are :class:`OscoreError` (a :class:`~msgin5g.errors.DecodeError`:
      what cannot be verified is malformed input) with the CoAP code that
      RFC 8613 §8.2 / §8.4 prescribes, so the transport edge answers without a
      table of its own.
    * The AEAD objects are built once per context (``cryptography``'s AESCCM).
    * ``cryptography`` is imported when a context is derived, not with this
      module: the option codec and the Gateway UE's opaque relay need no
      crypto, and the device side's base install does not have it (the
      ``oscore`` extra adds it).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable

from msgin5g.coap.oscore.cbor import encode as cbor
from msgin5g.errors import DecodeError

__all__ = [
    "ALG_AES_CCM_16_64_128",
    "ECHO",
    "MAX_SEQUENCE",
    "OSCORE",
    "EchoRequired",
    "OscoreError",
    "ReplayError",
    "ReplayWindow",
    "SecurityContext",
    "SequenceExhausted",
    "UnknownContext",
    "derive_context",
]

OSCORE = 9
"""The OSCORE option number (RFC 8613 §2)."""
ECHO = 252
"""The Echo option number (RFC 9175 §2.2)."""
ALG_AES_CCM_16_64_128 = 10
KEY_LENGTH = 16
NONCE_LENGTH = 13
TAG_LENGTH = 8
MAX_ID_LENGTH = NONCE_LENGTH - 6
MAX_SEQUENCE = (1 << 40) - 1
WINDOW = 32
ECHO_LIFETIME = 300.0
"""Seconds an issued Echo value stays acceptable (RFC 9175 §2.3: short-lived)."""

_BAD_REQUEST = 0x80  # 4.00
_UNAUTHORIZED = 0x81  # 4.01
_BAD_OPTION = 0x82  # 4.02
_UNAVAILABLE = 0xA3  # 5.03


class OscoreError(DecodeError):
    """A protected message could not be processed (RFC 8613 §8.2, §8.4).

    Attributes:
        code: the CoAP code to answer a request with (unprotected).
    """

    def __init__(self, detail: str, code: int = _BAD_REQUEST) -> None:
        super().__init__(detail)
        self.code = code

    def hint(self) -> str | None:
        """Advice for a CLI user."""
        if self.code == _UNAUTHORIZED:
            return (
                "the peer has no OSCORE context for this UE, or refused a replay: "
                "is the UE provisioned, its secret right, coap.oscore on, and the "
                "OSCORE state file the one of its last run?"
            )
        return None


class UnknownContext(OscoreError):
    """No security context for the kid / kid context (§8.2 step 2: 4.01)."""

    def __init__(self, detail: str = "Security context not found") -> None:
        super().__init__(detail, _UNAUTHORIZED)


class ReplayError(OscoreError):
    """The Partial IV was seen before or is below the window (§7.4: 4.01)."""

    def __init__(self, detail: str = "Replay detected") -> None:
        super().__init__(detail, _UNAUTHORIZED)


class SequenceExhausted(OscoreError):
    """No Sender Sequence Number may be used now.

    Either the reservation persisted by the caller is used up (store a new one
    and retry) or the 2^40 numbers of the context are spent (re-key).
    """

    def __init__(self, detail: str) -> None:
        super().__init__(detail, _UNAVAILABLE)


class EchoRequired(OscoreError):
    """A verified request whose freshness is unknown (Appendix B.1.2).

    The transport answers 4.01 Unauthorized with the ``echo`` option value,
    protected with a Partial IV of its own (never with the request's nonce).

    Attributes:
        echo: the value the client must send back in its next request.
    """

    def __init__(self, echo: bytes) -> None:
        super().__init__("freshness unknown: Echo required", _UNAUTHORIZED)
        self.echo = echo


class ReplayWindow:
    """Sliding window of received Partial IVs (RFC 8613 §7.4, RFC 4303 §3.4.3).

    ``known`` is False for a window whose state was lost (a restart): such a
    window refuses to judge, and the caller asks for Echo instead.
    """

    __slots__ = ("_bits", "_top", "known")

    def __init__(self, *, known: bool = True) -> None:
        self._top = -1
        self._bits = 0
        self.known = known

    def fresh(self, seq: int) -> bool:
        """Whether ``seq`` was neither seen nor left behind by the window."""
        if seq > self._top:
            return True
        offset = self._top - seq
        return offset < WINDOW and not (self._bits >> offset) & 1

    def mark(self, seq: int) -> None:
        """Record ``seq`` as received (call only after :meth:`fresh` and AEAD)."""
        if seq > self._top:
            shift = seq - self._top
            self._bits = ((self._bits << shift) | 1) & ((1 << WINDOW) - 1)
            self._top = seq
        else:
            self._bits |= 1 << (self._top - seq)

    def start_at(self, seq: int) -> None:
        """Appendix B.1.2: ``seq`` and everything below it count as received."""
        self._top = seq
        self._bits = (1 << WINDOW) - 1
        self.known = True


def _hkdf(salt: bytes, secret: bytes, info: bytes, length: int) -> bytes:
    from cryptography.hazmat.primitives.hashes import SHA256
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(SHA256(), length, salt or None, info).derive(secret)


def derive_context(
    master_secret: bytes,
    *,
    sender_id: bytes,
    recipient_id: bytes,
    master_salt: bytes = b"",
    id_context: bytes | None = None,
    sender_sequence: int = 0,
    reserved_until: int | None = None,
    window_known: bool = True,
    clock: Callable[[], float] | None = None,
) -> SecurityContext:
    """Derive a security context (RFC 8613 §3.2.1, AES-CCM-16-64-128, SHA-256).

    Args:
        master_secret: the Master Secret (at least 16 octets recommended).
        sender_id: our Sender ID (at most 7 octets).
        recipient_id: the peer's Sender ID.
        master_salt: the Master Salt (empty: none).
        id_context: the ID Context, or None.
        sender_sequence: the first Sender Sequence Number to use.
        reserved_until: numbers ``>= reserved_until`` need a new reservation
            (None: no persistence, every number may be used).
        window_known: False after a restart (Echo recovery, Appendix B.1.2).
        clock: monotonic seconds for Echo lifetimes (default ``time.monotonic``).

    Raises:
        ValueError: an ID is longer than 7 octets or the sequence is out of range.
    """
    if len(sender_id) > MAX_ID_LENGTH or len(recipient_id) > MAX_ID_LENGTH:
        raise ValueError(f"OSCORE Sender/Recipient IDs are at most {MAX_ID_LENGTH} B")
    if not 0 <= sender_sequence <= MAX_SEQUENCE + 1:
        raise ValueError(f"sender sequence {sender_sequence} out of range")

    def info(identifier: bytes, kind: str, length: int) -> bytes:
        return cbor([identifier, id_context, ALG_AES_CCM_16_64_128, kind, length])

    sender_key = _hkdf(
        master_salt, master_secret, info(sender_id, "Key", KEY_LENGTH), KEY_LENGTH
    )
    recipient_key = _hkdf(
        master_salt, master_secret, info(recipient_id, "Key", KEY_LENGTH), KEY_LENGTH
    )
    common_iv = _hkdf(
        master_salt, master_secret, info(b"", "IV", NONCE_LENGTH), NONCE_LENGTH
    )
    return SecurityContext(
        sender_id=sender_id,
        recipient_id=recipient_id,
        id_context=id_context,
        sender_key=sender_key,
        recipient_key=recipient_key,
        common_iv=common_iv,
        sender_sequence=sender_sequence,
        reserved_until=reserved_until,
        window_known=window_known,
        clock=clock,
    )


class SecurityContext:
    """One OSCORE security context (both roles: it may send and receive requests).

    Keys are never part of ``repr`` (logs may print a context).

    Attributes:
        sender_id, recipient_id, id_context: the identifiers of §3.1.
        sender_sequence: the next Sender Sequence Number.
        reserved_until: first number not covered by the persisted reservation
            (None: not persisted).
        window: the Recipient's replay window.
        owner: free label set by the owner of the context (e.g. a UE Service ID).
    """

    __slots__ = (
        "_common_iv",
        "_echo",
        "_echo_issued",
        "_now",
        "_recipient_aead",
        "_sender_aead",
        "id_context",
        "owner",
        "recipient_id",
        "reserved_until",
        "sender_id",
        "sender_sequence",
        "window",
    )

    def __init__(
        self,
        *,
        sender_id: bytes,
        recipient_id: bytes,
        id_context: bytes | None,
        sender_key: bytes,
        recipient_key: bytes,
        common_iv: bytes,
        sender_sequence: int = 0,
        reserved_until: int | None = None,
        window_known: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """Prefer :func:`derive_context`."""
        from cryptography.hazmat.primitives.ciphers.aead import AESCCM

        self.sender_id = sender_id
        self.recipient_id = recipient_id
        self.id_context = id_context
        self._sender_aead = AESCCM(sender_key, tag_length=TAG_LENGTH)
        self._recipient_aead = AESCCM(recipient_key, tag_length=TAG_LENGTH)
        self._common_iv = int.from_bytes(common_iv, "big")
        self.sender_sequence = sender_sequence
        self.reserved_until = reserved_until
        self.window = ReplayWindow(known=window_known)
        self._now = clock if clock is not None else time.monotonic
        self._echo: bytes | None = None
        self._echo_issued = 0.0
        self.owner: str | None = None

    def __repr__(self) -> str:
        return (
            f"SecurityContext(owner={self.owner!r}, sender_id={self.sender_id.hex()},"
            f" recipient_id={self.recipient_id.hex()},"
            f" sequence={self.sender_sequence})"
        )

    # nonces, AAD, AEAD -----------------------------------------------------------

    def nonce(self, id_piv: bytes, piv: bytes) -> bytes:
        """The AEAD nonce of §5.2 for the ID and Partial IV of the message."""
        block = (
            bytes((len(id_piv),))
            + id_piv.rjust(NONCE_LENGTH - 6, b"\0")
            + piv.rjust(5, b"\0")
        )
        value = int.from_bytes(block, "big") ^ self._common_iv
        return value.to_bytes(NONCE_LENGTH, "big")

    @staticmethod
    def aad(request_kid: bytes, request_piv: bytes) -> bytes:
        """The AAD of §5.4 (no Class I options, no ``alg`` in protected)."""
        external = cbor([1, [ALG_AES_CCM_16_64_128], request_kid, request_piv, b""])
        return cbor(["Encrypt0", b"", external])

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt with the Sender Key."""
        return self._sender_aead.encrypt(nonce, plaintext, aad)

    def open(self, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Decrypt with the Recipient Key.

        Raises:
            OscoreError: authentication failed (4.00 "Decryption failed").
        """
        from cryptography.exceptions import InvalidTag

        try:
            return self._recipient_aead.decrypt(nonce, ciphertext, aad)
        except (InvalidTag, ValueError):
            raise OscoreError("Decryption failed") from None

    # sender sequence -------------------------------------------------------------

    def next_piv(self) -> bytes:
        """Take the next Sender Sequence Number; its Partial IV (minimal octets).

        Raises:
            SequenceExhausted: beyond the reservation or 2^40 - 1.
        """
        seq = self.sender_sequence
        if seq > MAX_SEQUENCE:
            raise SequenceExhausted("OSCORE sender sequence numbers are used up")
        limit = self.reserved_until
        if limit is not None and seq >= limit:
            raise SequenceExhausted("OSCORE sequence reservation used up")
        self.sender_sequence = seq + 1
        return seq.to_bytes(max(1, (seq.bit_length() + 7) >> 3), "big")

    def reservation_needed(self, margin: int) -> bool:
        """Whether fewer than ``margin`` reserved numbers remain."""
        limit = self.reserved_until
        return limit is not None and limit - self.sender_sequence < margin

    def reserve(self, until: int) -> None:
        """The caller durably stored ``until``: numbers below it may be used."""
        if self.reserved_until is None or until > self.reserved_until:
            self.reserved_until = until

    # replay and freshness --------------------------------------------------------

    def issue_echo(self) -> bytes:
        """An Echo value for a 4.01 (the same one while it is young)."""
        now = self._now()
        if self._echo is None or now - self._echo_issued > ECHO_LIFETIME / 2:
            self._echo = secrets.token_bytes(8)
            self._echo_issued = now
        return self._echo

    def check_replay(self, seq: int, echo: bytes | None) -> None:
        """Accept request ``seq`` (already authenticated) or raise.

        Raises:
            ReplayError: ``seq`` was seen or lies below the window.
            EchoRequired: the window is unknown and no valid Echo came back.
        """
        window = self.window
        if window.known:
            if not window.fresh(seq):
                raise ReplayError
            window.mark(seq)
            return
        issued = self._echo
        if (
            echo is not None
            and issued is not None
            and self._now() - self._echo_issued <= ECHO_LIFETIME
            and hmac.compare_digest(echo, issued)
        ):
            window.start_at(seq)
            self._echo = None
            return
        raise EchoRequired(self.issue_echo())
