"""TS 29.538 northbound REST transport (MSGS_ASRegistration, MSGS_MSGDelivery).

One module per API (``msgs_asregistration``, ``msgs_msgdelivery``), the shared
pipeline in ``asgi``, the error table in ``problems``, OAuth2 and rate limits in
``auth``, the HTTP client towards ASs in ``outbound`` and the embedded ASGI
server in ``runner``. :class:`RestTransport` ties them to a running service.
"""

from fastapi import FastAPI

from msgin5g.config import RestConfig
from msgin5g.service.messaging import MessagingService
from msgin5g.transports.rest.asgi import create_app
from msgin5g.transports.rest.outbound import HttpASDeliverer
from msgin5g.transports.rest.runner import AsgiServer

__all__ = ["HttpASDeliverer", "RestTransport", "create_app"]


class RestTransport:
    """The HTTP server of the northbound APIs inside the running event loop."""

    def __init__(self, config: RestConfig) -> None:
        self.config = config
        self._server: AsgiServer | None = None
        self.app: FastAPI | None = None
        """The ASGI application once started (``app.state.ops``: /metrics, /readyz)."""

    async def start(self, service: MessagingService) -> None:
        """Bind ``rest.bind`` and serve the APIs for ``service``.

        Raises:
            ConfigError: ``rest.jwt_key_file`` is unreadable or not an RSA key.
            ConnectError: the address cannot be bound.
        """
        host, port = self.config.address
        self.app = app = create_app(service, self.config)
        if self.config.oauth2:
            # the token signing key: a bad key file stops the start here, and
            # the nodes of a cluster agree on the key before the first token
            await app.state.ctx.tokens.ensure_keys()
        server = AsgiServer(
            app,
            host,
            port,
            self.config.server,
            header_timeout=self.config.header_timeout,
            max_connections=self.config.max_connections,
            tls_cert=self.config.tls_cert,
            tls_key=self.config.tls_key,
            reuse_port=self.config.reuse_port,
        )
        await server.start()
        self._server = server

    @property
    def local_address(self) -> tuple[str, int]:
        """Address and port actually bound."""
        if self._server is None:
            raise RuntimeError("RestTransport not started")
        return self._server.host, self._server.port

    async def aclose(self) -> None:
        """Stop the HTTP server."""
        if self._server is not None:
            await self._server.aclose()
            self._server = None
