"""MSGin5G-1 over CoAP on the device side (digest §2, §3.2.4, §5.1).

The rules both ends share (request options, JSON and error answers, the
Content-Format check, ``raise_for_code``) live in :mod:`msgin5g.coap_binding`,
which the server's transport uses too; they are re-exported here for the
client and the gateway. What only a device needs is defined here: the
``ueCredentialInfo`` it presents (:func:`ue_credential_info`).
"""

from msgin5g.coap_binding import (
    JSON_FORMAT,
    error_response,
    json_response,
    post_options,
    raise_for_code,
    require_json,
)
from msgin5g.model.messages import UECredentialInfo
from msgin5g.spec.delivery import AuthType

__all__ = [
    "JSON_FORMAT",
    "error_response",
    "json_response",
    "post_options",
    "raise_for_code",
    "require_json",
    "ue_credential_info",
]


def ue_credential_info(credential: str | None) -> UECredentialInfo:
    """``ueCredentialInfo`` for a ``PSK_TOKEN`` credential (``NONE`` without one)."""
    if credential is None:
        return UECredentialInfo(auth_type=AuthType.NONE)
    return UECredentialInfo(auth_type=AuthType.PSK_TOKEN, credential=credential)
