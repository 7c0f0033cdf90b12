"""Provisioning of DTLS pre-shared keys (``msgin5g ue add --dtls``, ``ue remove``).

The key of a UE on ``coaps://`` is its ``PSK_TOKEN`` text (so a device needs
nothing new: ``coap-client -u ID -k TOKEN``). It is computed here from the
secret being provisioned and sealed into ``coap.psk_store``
(:class:`~msgin5g.transports.coap.keystore.PskKeyStore`); the secret itself is
never stored.
"""

from pathlib import Path

from msgin5g.config import CoapConfig
from msgin5g.model.credentials import psk_token
from msgin5g.transports.coap.keystore import PskKeyStore

__all__ = ["forget_dtls_key", "store_dtls_key"]


def store_dtls_key(config: CoapConfig, ue_service_id: str, secret: str) -> None:
    """Seal the ``PSK_TOKEN`` of ``ue_service_id`` into ``config.psk_store``.

    Raises:
        ConfigError: the key file is malformed or readable by others.
    """
    keys = PskKeyStore(config.psk_store, config.psk_key_file)
    try:
        keys.put(ue_service_id, psk_token(secret, ue_service_id).encode())
    finally:
        keys.close()


def forget_dtls_key(config: CoapConfig, ue_service_id: str) -> bool:
    """Remove the DTLS key of ``ue_service_id``, if there is a store holding one."""
    if not Path(config.psk_store).exists():
        return False
    keys = PskKeyStore(config.psk_store, config.psk_key_file, create=False)
    try:
        return keys.remove(ue_service_id)
    finally:
        keys.close()
