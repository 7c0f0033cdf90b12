"""The configuration resource ``/msgin5g/config`` of the MSGin5G Server (digest §3.1).

PROJECT CHOICE (the SEAL CM transport of TS 24.546 is out of scope): a CON
**POST** to ``/msgin5g/config`` with Content-Format 50 and a JSON ``CONFREQ``
(``ueServiceId``, ``ueCredentialInfo``) or ``BULKCONFREQ`` (a Gateway UE's
identity and credential plus one ``CONFREQ`` per constrained UE). POST rather than
GET because the request carries a credential, which must not travel in a
Uri-Query (it would end up in logs and proxies' caches).

Answer: **2.05 Content**, Content-Format 50, ``CONFRESP`` / ``BULKCONFRESP``.
A ``CONFREQ`` with ``Accept: 41`` gets the XML document of TS 24.538 §7.2.3
(Content-Format 41, ``application/xml``) when it succeeds. Errors follow the
``/msgin5g`` resource: 4.15 for another Content-Format, 4.00 with a JSON body
naming the member for malformed JSON, 4.06 for an unsupported Accept.

``<MSGin5G-Server-address>``: ``coap://HOST:PORT/msgin5g`` where HOST is the
request's Uri-Host if it has one, else the address the socket is bound to, else
(wildcard bind) the machine's fully qualified name.
"""

import logging
import socket
from typing import Protocol

from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code, ContentFormat, OptionNumber
from msgin5g.coap.resource import Request
from msgin5g.coap_binding import error_response, json_response, require_json
from msgin5g.codec.ue_payload import decode_config_request
from msgin5g.errors import DecodeError
from msgin5g.logsafe import LogThrottle
from msgin5g.model.messages import ConfReq
from msgin5g.service.configuration import ConfigurationService, render_document
from msgin5g.service.messaging import MessagingService
from msgin5g.spec.causes import FailureCause, Result
from msgin5g.spec.coap import CONFIG_PATH, CONTENT_FORMAT_JSON
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID

__all__ = ["CONFIG_PATH", "CONTENT_FORMAT_XML", "ConfigurationResource"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)

CONTENT_FORMAT_XML = int(ContentFormat.XML)
"""``application/xml`` (RFC 7252 §12.3)."""


class _Bound(Protocol):
    @property
    def local_address(self) -> tuple[str, int]: ...


class ConfigurationResource:
    """Serves ``/msgin5g/config`` for one server.

    Args:
        service: the running messaging service (its registry authenticates).
        transport: anything with ``local_address`` (the CoAP transport).
    """

    def __init__(
        self,
        service: MessagingService,
        transport: _Bound,
        *,
        service_id: str = MSGIN5G_SERVICE_ID,
    ) -> None:
        self.configuration = ConfigurationService(service.registry)
        self._transport = transport
        self._service_id = service_id

    def server_address(self, message: CoapMessage) -> str:
        """The ``<MSGin5G-Server-address>`` to announce to this requester."""
        host, port = self._transport.local_address
        uri_host = message.opt(OptionNumber.URI_HOST)
        if uri_host:
            host = uri_host.decode("utf-8", "replace")
        elif host in ("0.0.0.0", "::"):
            host = socket.getfqdn()
        if ":" in host:
            host = f"[{host}]"
        return f"coap://{host}:{port}/msgin5g"

    async def render_post(self, request: Request) -> CoapMessage:
        """Handle a POST to ``/msgin5g/config``."""
        message = request.message
        refused = require_json(message)
        if refused is not None:
            _throttled.log(
                "config-content-format",
                logging.INFO,
                "4.15 from %s on /msgin5g/config",
                request.peer,
            )
            return refused
        accept = message.uint_opt(OptionNumber.ACCEPT)
        if accept not in (None, CONTENT_FORMAT_JSON, CONTENT_FORMAT_XML):
            return make_response(message, Code.NOT_ACCEPTABLE)
        try:
            config_request = decode_config_request(
                message.payload, service_id=self._service_id
            )
        except DecodeError as exc:
            _throttled.log(
                "config-decode-error",
                logging.INFO,
                "4.00 from %s on /msgin5g/config: %s",
                request.peer,
                exc,
            )
            return error_response(
                message, Code.BAD_REQUEST, FailureCause.INVALID_MESSAGE, str(exc)
            )
        address = self.server_address(message)
        if isinstance(config_request, ConfReq):
            response = await self.configuration.configure(config_request, address)
            if accept == CONTENT_FORMAT_XML and response.result == Result.SUCCESS:
                return make_response(
                    message,
                    Code.CONTENT,
                    render_document(response).encode(),
                    content_format=CONTENT_FORMAT_XML,
                )
            return json_response(message, Code.CONTENT, response)
        bulk = await self.configuration.bulk_configure(config_request, address)
        return json_response(message, Code.CONTENT, bulk)
