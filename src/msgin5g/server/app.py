"""The running MSGin5G Server: one backend, one service, the CoAP transport.

Start-up order matters for "nothing acknowledged is lost": registrations are
loaded before the socket accepts requests, and stored messages are resumed only
once the socket can deliver them.
"""

import logging

from msgin5g.config import ServerConfig
from msgin5g.service.messaging import MessagingService
from msgin5g.service.ports import Clock
from msgin5g.storage import open_backend
from msgin5g.storage.base import Backend
from msgin5g.transports.coap import CoapTransport

__all__ = ["Server"]

log = logging.getLogger(__name__)


class Server:
    """An MSGin5G Server built from configuration; ``async with`` starts and stops it."""

    def __init__(self, config: ServerConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock
        self.backend: Backend | None = None
        self.service: MessagingService | None = None
        self.coap: CoapTransport | None = None

    async def start(self) -> None:
        """Open storage, load state, bind the CoAP socket, resume deliveries."""
        backend = open_backend(
            self.config.storage.url, synchronous=self.config.storage.synchronous
        )
        await backend.start()
        self.backend = backend
        coap = CoapTransport(self.config.coap)
        service = MessagingService(
            backend, coap, config=self.config.delivery, clock=self._clock
        )
        await service.load()
        await coap.start(service)
        self.coap, self.service = coap, service
        await service.resume()
        log.info(
            "MSGin5G server ready: %d registered UEs, %d stored items",
            len(service.registry),
            await backend.count(),
        )

    @property
    def coap_address(self) -> tuple[str, int]:
        """The bound CoAP address."""
        if self.coap is None:
            raise RuntimeError("server not started")
        return self.coap.local_address

    async def aclose(self) -> None:
        """Stop accepting, stop deliveries, flush and close storage."""
        if self.coap is not None:
            await self.coap.aclose()
        if self.service is not None:
            await self.service.aclose()
        if self.backend is not None:
            await self.backend.aclose()
        self.coap = self.service = self.backend = None

    async def __aenter__(self) -> "Server":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
