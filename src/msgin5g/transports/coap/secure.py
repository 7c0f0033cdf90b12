"""MSGin5G-1 over ``coaps://``: the DTLS endpoint and identity binding.

What: :func:`open_secure` opens the ``coap.secure_bind`` socket under a
:class:`~msgin5g.coap.dtls.DtlsServer` (keys from the sealed
:class:`~.keystore.PskKeyStore`, per-source limits from ``coap.source_*``)
and a CoAP :class:`~msgin5g.coap.endpoint.Endpoint` on top of it.
:func:`bind_identity` is what :class:`~.server.CoapTransport` applies to every
uplink that arrived on it.

Identity binding (docs/security-dtls.md): the peer of every request on the
secure endpoint is the session's PSK identity (``("psk:<UE Service ID>", 0)``),
so the registry records that as the UE's ``source`` and ``contact``. Then

* a REG, BULKREG or BULKDEREG must name the session's own identity as its
  ``ueServiceId`` (else 4.03 ``NOT_AUTHORIZED``); its ``ueCredentialInfo`` is
  replaced by the token whose key the handshake proved, so the channel is the
  credential
  (the service still checks it against the stored digest, so a UE removed with
  ``msgin5g ue remove`` cannot register even while its key is in the store);
* every later request is authorised by ``registry.refuse_sender`` comparing
  that identity, never an address: a datagram from another address, even
  carrying the UE's identity in its JSON, either fails to decrypt (no session)
  or belongs to another identity;
* downlink goes to the identity, i.e. to whatever address its session lives
  at now (NAT rebinding moves the session, not the registration).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from msgin5g.coap.dtls import DtlsServer
from msgin5g.coap.dtls_records import identity_of
from msgin5g.coap.endpoint import Endpoint, Site
from msgin5g.coap.limits import SourceLimiter
from msgin5g.coap.notify import ObserveResetCallback
from msgin5g.coap.numbers import TransmissionParameters
from msgin5g.config import CoapConfig
from msgin5g.errors import NotAuthorized
from msgin5g.model.messages import BulkDereg, BulkReg, Reg, UECredentialInfo
from msgin5g.spec.delivery import AuthType
from msgin5g.transports.coap.keystore import PskKeyStore

__all__ = ["SecureEndpoint", "bind_identity", "is_secure_contact", "open_secure"]

log = logging.getLogger(__name__)

_SELF_AUTHENTICATED = (Reg, BulkReg, BulkDereg)
"""Uplinks that carry the sender's own credential: the session replaces it."""


@dataclass(slots=True)
class SecureEndpoint:
    """The parts of the ``coaps://`` listener."""

    endpoint: Endpoint
    dtls: DtlsServer
    keys: PskKeyStore

    async def aclose(self) -> None:
        """Close the endpoint (and the DTLS layer under it) and the key store."""
        await self.endpoint.aclose()
        self.keys.close()


async def open_secure(
    config: CoapConfig,
    site: Site,
    params: TransmissionParameters,
    observe_reset: ObserveResetCallback | None,
) -> SecureEndpoint:
    """Open the DTLS listener of ``config.secure_bind`` serving ``site``.

    Raises:
        ConfigError: the key store or its key file is unusable.
        ConnectError: the address cannot be bound.
    """
    address = config.secure_address
    if address is None:
        raise ValueError("coap.secure_bind is not set")
    keys = PskKeyStore(config.psk_store, config.psk_key_file)
    limiter = None
    if config.source_rate > 0:
        limiter = SourceLimiter(
            asyncio.get_running_loop().time,
            rate=config.source_rate,
            burst=config.source_burst,
            trusted_rate=config.trusted_rate,
            trusted_burst=config.trusted_burst,
            max_sources=config.max_sources,
        )
    length = config.dtls_key_length

    def psk_for(identity: str) -> bytes | None:
        token = keys.get(identity)
        return None if token is None else token[:length]

    dtls = DtlsServer(
        psk_for,
        limiter=limiter,
        max_sessions=config.dtls_max_sessions,
        max_per_host=config.dtls_max_per_host,
        max_handshakes=config.dtls_max_handshakes,
        handshake_timeout=config.dtls_handshake_timeout,
        idle_timeout=config.dtls_idle_timeout,
    )
    try:
        await dtls.open(address, config.recv_buffer, config.recv_buffer)
    except BaseException:
        keys.close()
        raise
    endpoint = Endpoint.create_on(
        dtls,
        site=site,
        params=params,
        max_request_payload=config.max_payload,
        max_concurrent_requests=config.max_concurrent_requests,
        observe_reset=observe_reset,
        max_dedup_bytes=config.dedup_max_bytes,
    )
    log.info(
        "MSGin5G-1 CoAP over DTLS (PSK) listening on %s:%d (%d keys in %s)",
        *dtls.local_address,
        len(keys),
        config.psk_store,
    )
    return SecureEndpoint(endpoint, dtls, keys)


def is_secure_contact(host: str) -> bool:
    """Whether a contact host names a DTLS session (not an address)."""
    return identity_of((host, 0)) is not None


def bind_identity(uplink: Any, peer: Any, keys: PskKeyStore) -> Any:
    """``uplink`` as received on the DTLS session of ``peer``, bound to it.

    Returns:
        ``uplink``, or for REG/BULKREG/BULKDEREG a copy whose credential is the
        session's key.

    Raises:
        NotAuthorized: the uplink registers another identity than the session's.
    """
    if not isinstance(uplink, _SELF_AUTHENTICATED):
        return uplink
    identity = identity_of(peer)
    if identity is None or uplink.ue_service_id != identity:
        raise NotAuthorized(
            f"{type(uplink).__struct_config__.tag} for {uplink.ue_service_id!r} on "
            f"the DTLS session of {identity!r}: a UE registers only itself"
        )
    key = keys.get(identity)
    if key is None:  # the key was removed after the handshake
        raise NotAuthorized(f"{identity!r} has no DTLS key any more")
    credential = UECredentialInfo(
        auth_type=AuthType.PSK_TOKEN, credential=key.decode("utf-8", "replace")
    )
    return msgspec.structs.replace(uplink, ue_credential_info=credential)
