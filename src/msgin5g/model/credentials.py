"""The ``PSK_TOKEN`` credential (digest §3.2.4, PROJECT CHOICE).

``credential = base64(HMAC-SHA256(key = secret, message = UE Service ID))``.

The token is a *bearer* credential: anyone who sees it can register as that UE.
It must therefore travel only over a protected transport (DTLS or OSCORE, a later
issue). The server never stores the secret nor the token, only
``SHA-256(token)``, so a copy of the database does not reveal credentials.
"""

import base64
import hashlib
import hmac
import secrets
from typing import Any

__all__ = [
    "REDACTED",
    "credential_digest",
    "generate_secret",
    "psk_token",
    "redacted_repr",
    "verify_credential",
]

REDACTED = "<redacted>"
"""What ``repr()`` shows instead of a secret, credential or its digest."""


def psk_token(secret: str, ue_service_id: str) -> str:
    """Compute the ``PSK_TOKEN`` credential a UE presents.

    Args:
        secret: the per-UE shared secret provisioned with ``msgin5g ue add``.
        ue_service_id: the UE Service ID.

    Returns:
        The base64 (RFC 4648 §4, padded) HMAC-SHA256 of the UE Service ID.
    """
    mac = hmac.new(secret.encode(), ue_service_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode("ascii")


def credential_digest(credential: str) -> bytes:
    """The value the server stores for a credential: SHA-256 of its text."""
    return hashlib.sha256(credential.encode()).digest()


def verify_credential(credential: str, stored_digest: bytes) -> bool:
    """Constant-time check of a presented credential against the stored digest."""
    return hmac.compare_digest(credential_digest(credential), stored_digest)


def generate_secret() -> str:
    """A new random secret (256 bits, URL-safe text).

    It never starts with ``-``: people paste it after ``--secret`` on a command
    line, where argparse would take it for an option (one secret in 64 did).
    """
    while True:
        secret = secrets.token_urlsafe(32)
        if not secret.startswith("-"):
            return secret


def redacted_repr(struct: Any, *hidden: str) -> str:
    """``repr()`` of a msgspec Struct with the ``hidden`` fields redacted.

    msgspec has no per-field ``repr=False`` (dataclasses have it): a Struct that
    holds a secret defines ``__repr__`` with this, so a log line, a traceback or
    an assertion message never shows the secret. Empty values stay visible (an
    absent credential is worth seeing).
    """
    parts = []
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        shown = REDACTED if name in hidden and value else repr(value)
        parts.append(f"{name}={shown}")
    return f"{type(struct).__name__}({', '.join(parts)})"
