"""The MSGin5G Gateway UE (TS 23.554 §8.2.7-§8.2.9, §8.11; TS 24.538-R18 §6.3.4).

One :class:`Gateway` is one process-worth of gateway: an MSGin5G Client towards
the server (:class:`~msgin5g.gateway.upstream.Upstream`, its own UDP socket) and
a CoAP endpoint on ``listen`` for constrained UEs (MSGin5G-6 for UEs with a
client, MSGin5G-5 Annex A.3 form for application clients). This module is the
façade and the wiring; the procedures live in their own modules:

* :mod:`~msgin5g.gateway.local`: the constrained-side resources (``/msgin5g``,
  ``/msgin5g/config``, ``/msgin5g/pending``) and the gateway services
  (``APPREG``, ``GWREG``, bulk configuration);
* :mod:`~msgin5g.gateway.bulkreg`: bulk registration and de-registration
  (cache, batches, matched ``REGRESP``/``DEREGRESP``); :mod:`~msgin5g.gateway.bulk`
  its pure batching rules;
* :mod:`~msgin5g.gateway.relay`: messages and reports both ways, durable;
* :mod:`~msgin5g.gateway.oscore_relay`: OSCORE-protected exchanges of UEs that
  talk to the server end to end, forwarded without being readable;
* :mod:`~msgin5g.gateway.cache`: the durable state; :mod:`~msgin5g.gateway.upstream`:
  the client towards the server; :mod:`~msgin5g.gateway.device`: a constrained
  UE (the other end, for the CLI and tests).

``GET /msgin5g/gateway`` (loopback only) serves :meth:`Gateway.status`.

Start-up and shutdown go through one :class:`contextlib.AsyncExitStack`:
storage, the upstream socket, the local socket and the task supervisor are each
released when a later step fails (e.g. the ``listen`` port is taken), and in
reverse order by :meth:`Gateway.aclose`. All background tasks run under one
:class:`~msgin5g.runtime.Supervisor`; all time goes through one
:class:`~msgin5g.runtime.Clock`.
"""

import contextlib
import logging
import socket
from typing import Any

import msgspec

from msgin5g.coap.endpoint import Endpoint, Request, Site
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code, TransmissionParameters
from msgin5g.config import parse_hostport
from msgin5g.gateway.bulkreg import BulkRegistration
from msgin5g.gateway.cache import GatewayState
from msgin5g.gateway.config import GatewayConfig
from msgin5g.gateway.context import GatewayContext, host_port
from msgin5g.gateway.local import LocalResources, rfc3339
from msgin5g.gateway.oscore_relay import OscoreRelay
from msgin5g.gateway.relay import UPSTREAM, Relay
from msgin5g.gateway.upstream import Upstream
from msgin5g.model.messages import Imdn, Msg
from msgin5g.runtime import Clock, Supervisor, SystemClock
from msgin5g.spec.coap import (
    CONFIG_PATH,
    CONTENT_FORMAT_JSON,
    GATEWAY_STATUS_PATH,
    MSGIN5G_PATH,
    PENDING_PATH,
)
from msgin5g.storage import open_backend
from msgin5g.storage.base import Backend

__all__ = ["Gateway"]

log = logging.getLogger(__name__)

_GET = frozenset({Code.GET})


class Gateway:
    """An MSGin5G Gateway UE; ``async with Gateway(config)`` runs it.

    Args:
        config: the gateway's settings.
        backend: storage to use instead of opening ``config.storage``
            (tests); the gateway then does not close it.
        clock: time source and timers (tests: a manual clock).
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._given_backend = backend
        self._backend: Backend | None = None
        self._clock: Clock = clock or SystemClock()
        self._tasks = Supervisor(f"gateway {config.ue_service_id}")
        self._stack: contextlib.AsyncExitStack | None = None
        self._local: Endpoint | None = None
        self._relay: Relay | None = None
        self._bulk: BulkRegistration | None = None
        self.upstream = Upstream(
            config.ue_service_id,
            config.secret,
            server=config.server,
            bind=parse_hostport(config.upstream_bind, default_port=0),
            clock=self._clock,
            claim=self._claim,
        )
        params = TransmissionParameters(
            ack_timeout=config.ack_timeout, max_retransmit=config.max_retransmit
        )
        self.oscore_relay = OscoreRelay(
            config.server,
            (parse_hostport(config.upstream_bind, default_port=0)[0], 0),
            params,
        )
        """Forwards OSCORE exchanges of end-to-end protected UEs, unread."""

    # lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, load the cache, bind both sockets, start the tasks.

        Raises:
            ConnectError: a socket cannot be bound; StorageError: storage
                cannot be opened. Whatever was opened before is closed again.
        """
        async with contextlib.AsyncExitStack() as stack:
            backend = self._given_backend
            if backend is None:
                backend = open_backend(self.config.storage)
                await backend.start()
                stack.push_async_callback(backend.aclose)
            self._backend = backend
            state = GatewayState(backend)
            await state.load()
            await self.upstream.client.start()
            stack.push_async_callback(self.upstream.client.aclose)
            self._local = await self._bind_local()
            stack.push_async_callback(self._local.aclose)
            await self.oscore_relay.start(self._local)
            stack.push_async_callback(self.oscore_relay.aclose)
            await self._tasks.start()
            stack.push_async_callback(self._tasks.aclose)
            self._wire(backend, state)
            self._stack = stack.pop_all()

    async def _bind_local(self) -> Endpoint:
        site = Site()
        site.add(MSGIN5G_PATH, self._render_local)
        site.add(CONFIG_PATH, self._render_config)
        site.add(PENDING_PATH, self._render_pending, methods=_GET)
        site.add(GATEWAY_STATUS_PATH, self._render_status, methods=_GET)
        site.add((), self.oscore_relay.up, methods=frozenset({Code.POST, Code.FETCH}))
        params = TransmissionParameters(
            ack_timeout=self.config.ack_timeout,
            max_retransmit=self.config.max_retransmit,
        )
        return await Endpoint.create(
            parse_hostport(self.config.listen), site=site, params=params
        )

    def _wire(self, backend: Backend, state: GatewayState) -> None:
        """Build the procedures on the opened parts and start their tasks."""
        ctx = GatewayContext(
            config=self.config,
            state=state,
            queue=backend,
            upstream=self.upstream,
            local=self._endpoint,
            tasks=self._tasks,
            clock=self._clock,
        )
        relay = Relay(ctx)
        bulk = BulkRegistration(ctx, relay.kick, self._reregister)
        self._local_resources = LocalResources(ctx, bulk, relay, lambda: self.uri)
        self._state, self._relay, self._bulk = state, relay, bulk
        bulk.resume()
        log.info(
            "gateway %s: constrained UEs on coap://%s:%d, %d cached requests",
            self.config.ue_service_id,
            *self.local_address,
            len(state.pending),
        )
        self._tasks.spawn(self._register_self(), name="own registration")
        self._tasks.spawn(bulk.run(), name="bulk loop")
        self._tasks.spawn(relay.run_uplink(), name="uplink pump")
        self._tasks.spawn(relay.run_retries(), name="delivery retries")

    async def aclose(self) -> None:
        """Stop; everything cached or queued stays in storage."""
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._local = None

    async def __aenter__(self) -> "Gateway":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def local_address(self) -> tuple[str, int]:
        """Where constrained UEs reach the gateway."""
        return self._endpoint().local_address

    @property
    def uri(self) -> str:
        """``coap://host:port/msgin5g`` of the constrained-side resource."""
        host, port = self.local_address
        if host in ("0.0.0.0", "::"):
            host = socket.getfqdn()
        return f"coap://{host}:{port}/msgin5g"

    @property
    def bulk_requests(self) -> int:
        """``BULKREG``/``BULKDEREG`` requests sent."""
        return 0 if self._bulk is None else self._bulk.bulk_requests

    @property
    def individual_requests(self) -> int:
        """URGENT requests forwarded on their own (G2), attempts included."""
        return 0 if self._bulk is None else self._bulk.individual_requests

    @property
    def answers_sent(self) -> int:
        """``REGRESP``/``DEREGRESP`` POSTs the constrained UEs acknowledged."""
        return 0 if self._bulk is None else self._bulk.answers_sent

    @property
    def task_failures(self) -> int:
        """Background tasks that failed (each was logged at ERROR)."""
        return self._tasks.failures

    def _endpoint(self) -> Endpoint:
        if self._local is None:
            raise RuntimeError("gateway not started")
        return self._local

    async def _claim(self, item: Msg | Imdn) -> bool | None:
        return None if self._relay is None else await self._relay.claim(item)

    # own registration ------------------------------------------------------------

    async def _register_self(self) -> None:
        """Register the gateway itself, then release the waiting batches."""
        await self.upstream.register_self(self.config.retry_interval)
        if self._bulk is not None:
            self._bulk.wake()
        await self.upstream.apply_own_configuration()

    def _reregister(self) -> None:
        """The server no longer knows the gateway: register again."""
        self.upstream.lost_registration()
        self._tasks.spawn(self._register_self(), name="own registration")

    # resources (handlers live in gateway.local) ---------------------------------------

    async def _render_local(self, request: Request) -> CoapMessage:
        return await self._local_resources.render_post(request)

    async def _render_config(self, request: Request) -> CoapMessage:
        return await self._local_resources.render_config(request)

    async def _render_pending(self, request: Request) -> CoapMessage:
        return await self._local_resources.render_pending(request)

    async def _render_status(self, request: Request) -> CoapMessage:
        """``GET /msgin5g/gateway``: status for ``msgin5g gateway status``."""
        message = request.message
        if not _is_loopback(host_port(request.peer)[0]):
            log.warning("status request from %s refused", request.peer)
            return make_response(message, Code.FORBIDDEN)
        return make_response(
            message,
            Code.CONTENT,
            msgspec.json.encode(await self.status()),
            content_format=CONTENT_FORMAT_JSON,
        )

    async def status(self) -> dict[str, Any]:
        """Cached requests, queues and counters (the ``gateway status`` view)."""
        if self._relay is None or self._backend is None:
            raise RuntimeError("gateway not started")
        state, relay, backend = self._state, self._relay, self._backend
        queues: dict[str, int] = {}
        for target in await backend.recipients_with_pending():
            queues[target] = len(await backend.pending_for(target, limit=1_000_000))
        return {
            "ueServiceId": self.config.ue_service_id,
            "registered": self.upstream.registered,
            "serverReachable": relay.server_reachable,
            "listen": self.uri,
            "cachedRequests": [
                {
                    "messageType": p.kind,
                    "ueServiceId": p.ue_service_id,
                    "peer": f"{p.host}:{p.port}",
                    "mid": p.mid,
                    "token": p.token.hex(),
                    "urgent": p.urgent,
                    "sendBy": rfc3339(p.send_by),
                }
                for p in sorted(state.pending.values(), key=lambda p: p.received_at)
            ],
            "uplinkQueue": queues.pop(UPSTREAM, 0),
            "downlinkQueues": queues,
            "constrainedUes": len(state.peers),
            "applications": sorted(state.apps),
            "bulkRequests": self.bulk_requests,
            "individualRequests": self.individual_requests,
            "answersSent": self.answers_sent,
            "relayedUp": relay.forwarded,
            "relayedDown": relay.delivered,
            "taskFailures": self.task_failures,
        }


def _is_loopback(host: str) -> bool:
    return host.startswith(("127.", "::ffff:127.")) or host == "::1"
