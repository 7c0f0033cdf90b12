"""The MSGin5G profile of OSCORE: how a UE's security context is provisioned.

RFC 8613 leaves the establishment of the Master Secret and the identifiers to
the deployment (§3.2, Appendix B). MSGin5G devices are already provisioned
with a ``PSK_TOKEN`` credential, and the server already keeps SHA-256 of it for
registration (``model.credentials``). The profile reuses that, so an existing
device needs nothing new (docs/security-oscore.md):

=================  ========================================================
Master Secret      SHA-256 of the PSK_TOKEN text (32 octets): the device
                   computes it from its token, the server reads the digest
                   it stores
Master Salt        ``"MSGin5G-OSCORE"`` (domain separation from other uses
                   of the digest)
ID Context         the UE Service ID in UTF-8 (at most 255 octets); sent
                   as kid context in every request, it selects the context
Sender ID (UE)     ``0x01``
Sender ID (server) ``0x00``
Algorithms         AES-CCM-16-64-128, HKDF-SHA-256 (the defaults)
=================  ========================================================

Consequence: the stored digest is now a key, not only a verifier. Whoever
reads the server's database can act as any UE over OSCORE (as with the
PSK of DTLS); protect the database file and its backups accordingly.
"""

from collections.abc import Callable

from msgin5g.coap.oscore import OscoreOption, SecurityContext, derive_context
from msgin5g.errors import ConfigError
from msgin5g.model.credentials import credential_digest

__all__ = [
    "MASTER_SALT",
    "SERVER_SENDER_ID",
    "UE_SENDER_ID",
    "aiocoap_settings",
    "id_context",
    "server_context",
    "ue_context",
    "ue_of",
]

MASTER_SALT = b"MSGin5G-OSCORE"
UE_SENDER_ID = b"\x01"
SERVER_SENDER_ID = b"\x00"


def id_context(ue_service_id: str) -> bytes:
    """The ID Context of a UE.

    Raises:
        ConfigError: the UE Service ID is longer than 255 octets in UTF-8.
    """
    raw = ue_service_id.encode()
    if len(raw) > 255:
        raise ConfigError(
            f"UE Service ID too long for an OSCORE ID Context: {len(raw)}"
        )
    return raw


def ue_of(option: OscoreOption) -> str | None:
    """The UE Service ID a request's OSCORE option names, or None."""
    if option.kid != UE_SENDER_ID or not option.kid_context:
        return None
    try:
        return option.kid_context.decode()
    except UnicodeDecodeError:
        return None


def ue_context(
    ue_service_id: str,
    credential: str,
    *,
    sender_sequence: int = 0,
    reserved_until: int | None = None,
    window_known: bool = True,
) -> SecurityContext:
    """The device's context, from its PSK_TOKEN."""
    return _derive(
        ue_service_id,
        credential_digest(credential),
        UE_SENDER_ID,
        SERVER_SENDER_ID,
        sender_sequence=sender_sequence,
        reserved_until=reserved_until,
        window_known=window_known,
    )


def server_context(
    ue_service_id: str,
    digest: bytes,
    *,
    sender_sequence: int = 0,
    reserved_until: int | None = None,
    clock: Callable[[], float] | None = None,
) -> SecurityContext:
    """The server's context for a UE, from the stored credential digest.

    Its replay window is unknown: the first request after the context is
    derived is answered 4.01 with Echo (RFC 8613 Appendix B.1.2).
    """
    return _derive(
        ue_service_id,
        digest,
        SERVER_SENDER_ID,
        UE_SENDER_ID,
        sender_sequence=sender_sequence,
        reserved_until=reserved_until,
        window_known=False,
        clock=clock,
    )


def _derive(
    ue_service_id: str,
    digest: bytes,
    sender_id: bytes,
    recipient_id: bytes,
    *,
    sender_sequence: int,
    reserved_until: int | None,
    window_known: bool,
    clock: Callable[[], float] | None = None,
) -> SecurityContext:
    """One side's context of the profile (the table above), owned by the UE."""
    ctx = derive_context(
        digest,
        master_salt=MASTER_SALT,
        id_context=id_context(ue_service_id),
        sender_id=sender_id,
        recipient_id=recipient_id,
        sender_sequence=sender_sequence,
        reserved_until=reserved_until,
        window_known=window_known,
        clock=clock,
    )
    ctx.owner = ue_service_id
    return ctx


def aiocoap_settings(ue_service_id: str, credential: str) -> dict[str, str]:
    """The ``settings.json`` of an aiocoap OSCORE client context for this UE."""
    return {
        "sender-id_hex": UE_SENDER_ID.hex(),
        "recipient-id_hex": SERVER_SENDER_ID.hex(),
        "secret_hex": credential_digest(credential).hex(),
        "salt_hex": MASTER_SALT.hex(),
        "id-context_hex": id_context(ue_service_id).hex(),
    }
