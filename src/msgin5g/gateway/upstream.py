"""The Gateway UE's MSGin5G-1 side: an MSGin5G Client that also relays (digest §3.17).

Towards the server the gateway is an ordinary :class:`~msgin5g.client.Client`
(its own ``REG``, re-registration on ``NOT_REGISTERED``, segmentation of long
payloads). This subclass adds what only a gateway does on that socket:

* raw POSTs of ``BULKREG``/``BULKDEREG`` and of relayed ``REG``/``IMDN`` payloads
  (they must leave from the socket the gateway registered from: the server
  accepts requests on behalf of constrained UEs only from there);
* a POST to the server's ``/msgin5g/config`` (bulk configuration);
* server ``MSG``/``IMDN`` addressed to a constrained UE (or to one of the
  gateway's application registrations) are handed to ``claim`` instead of the
  gateway's own inbox; ``claim`` stores them durably and the server gets its 2.04
  only then (acknowledged means stored, as on the server).
"""

from collections.abc import Awaitable, Callable

from msgin5g.client import Client
from msgin5g.coap.endpoint import Request
from msgin5g.coap.message import CoapMessage, encode_uint, make_response
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.codec.ue_payload import decode_downlink
from msgin5g.errors import DecodeError, RemoteError
from msgin5g.model.messages import Imdn, Msg, MsgResp, UECredentialInfo
from msgin5g.spec.coap import CONTENT_FORMAT_JSON

__all__ = ["Upstream"]

Claim = Callable[[Msg | Imdn], Awaitable[bool | None]]
"""Returns None: not for a constrained UE; True: stored; False: cannot store now."""

_CONFIG_OPTIONS = [
    (OptionNumber.URI_PATH, b"msgin5g"),
    (OptionNumber.URI_PATH, b"config"),
    (OptionNumber.CONTENT_FORMAT, encode_uint(CONTENT_FORMAT_JSON)),
]


class Upstream(Client):
    """The gateway's client towards the MSGin5G Server.

    Args:
        ue_service_id: the gateway's UE Service ID.
        secret: its secret.
        claim: takes server downlink meant for constrained UEs (see module doc).
        **kwargs: as for :class:`~msgin5g.client.Client`.
    """

    def __init__(
        self,
        ue_service_id: str,
        secret: str | None,
        *,
        claim: Claim,
        **kwargs: object,
    ) -> None:
        super().__init__(ue_service_id, secret, **kwargs)  # type: ignore[arg-type]
        self._claim = claim

    def credential_info(self) -> UECredentialInfo:
        """The gateway's own ``ueCredentialInfo`` (for bulk requests)."""
        return self._credential_info()

    async def post(self, payload: bytes) -> CoapMessage:
        """POST a JSON payload to the server's ``/msgin5g``.

        Raises:
            RemoteError: 4.xx/5.xx answer; TransportError otherwise.
        """
        return await self._post(payload)

    async def relay_msg(self, msg: Msg) -> MsgResp:
        """Send a message on behalf of a constrained UE (segmented if long)."""
        return await self._send_segmented(msg)

    async def post_config(self, payload: bytes) -> CoapMessage:
        """POST to the server's ``/msgin5g/config``.

        Raises:
            RemoteError: 4.xx/5.xx answer; TransportError otherwise.
        """
        endpoint = self._require()
        assert self._server is not None  # noqa: S101 - set in start()
        request = CoapMessage(
            Type.CON, Code.POST, options=list(_CONFIG_OPTIONS), payload=payload
        )
        response = await endpoint.request(request, self._server)
        if response.code >= 128:
            code = response.code
            raise RemoteError(f"{code >> 5}.{code & 31:02d}", response.payload)
        return response

    async def _render_post(self, request: Request) -> CoapMessage:
        message = request.message
        if message.content_format == CONTENT_FORMAT_JSON:
            try:
                item = decode_downlink(message.payload)
            except DecodeError:
                item = None  # the inbox answers 4.00 and logs
            if isinstance(item, (Msg, Imdn)):
                claimed = await self._claim(item)
                if claimed is True:
                    return make_response(message, Code.CHANGED)
                if claimed is False:
                    return make_response(message, Code.SERVICE_UNAVAILABLE)
        return await super()._render_post(request)
