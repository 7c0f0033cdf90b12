"""The running MSGin5G Server: one backend, one service, CoAP and REST transports.

Start-up order matters for "nothing acknowledged is lost": registrations (UEs and
ASs) are loaded before any socket accepts requests, and stored messages are
resumed only once the sockets can deliver them. The HTTP server of the TS 29.538
APIs (``[rest]``, on by default on 127.0.0.1:8080) runs in the same event loop;
the HTTP client that delivers to Application Servers is always wired, so items
stored for ASs are delivered even when the APIs are switched off.

Groups (docs/groups.md) are resolved in the server's own store, managed through
the hosted ``/ss-gm/v1`` API, unless ``seal.gm_url`` names an external SEAL group
management server: then a :class:`SealGroupSource` asks that server, and the
group registry maps ``valUeId`` members through the live registrations.
"""

import logging
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from msgin5g.config import ServerConfig
from msgin5g.errors import ConfigError, MSGin5GError
from msgin5g.runtime import Clock
from msgin5g.server.deliverers import BindingDeliverer
from msgin5g.server.metrics import (
    CONTENT_TYPE,
    ServerCollector,
    StatsSource,
    render,
    traffic_counts,
)
from msgin5g.service.applications import TargetNetworks
from msgin5g.service.messaging import MessagingService
from msgin5g.service.nef import Reachability
from msgin5g.service.peers import Peers
from msgin5g.service.ports import Cluster, Deliverer
from msgin5g.service.schedule import CommSchedule
from msgin5g.storage import open_backend
from msgin5g.storage.base import Backend
from msgin5g.transports.coap import CoapTransport
from msgin5g.transports.rest import RestTransport
from msgin5g.transports.rest.msgg_client import HttpGatewayDeliverer
from msgin5g.transports.rest.nef_client import HttpNefClient
from msgin5g.transports.rest.peer_client import HttpPeerDeliverer
from msgin5g.transports.rest.seal_client import SealGroupSource

if TYPE_CHECKING:
    from msgin5g.transports.mqtt import MqttTransport

__all__ = ["Server"]

log = logging.getLogger(__name__)


class Server:
    """An MSGin5G Server from its configuration; ``async with`` starts and stops it."""

    def __init__(self, config: ServerConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self._clock = clock
        self.backend: Backend | None = None
        self.service: MessagingService | None = None
        self.coap: CoapTransport | None = None
        self.rest: RestTransport | None = None
        self.mqtt: MqttTransport | None = None
        self._stack: AsyncExitStack | None = None

    async def start(self) -> None:
        """Open storage, load state, bind the sockets, resume deliveries.

        Every part that is opened pushes its ``aclose`` on one
        :class:`~contextlib.AsyncExitStack`, so a step that fails (a port is
        taken, storage cannot be opened) closes exactly what was opened before
        it, in reverse order, before the error propagates: no storage thread,
        socket or task outlives a failed start. :meth:`aclose` unwinds the same
        stack.
        """
        if self._stack is not None:
            raise RuntimeError("server already started")
        async with AsyncExitStack() as stack:
            stack.callback(self._forget_parts)  # runs last
            await self._start(stack)
            self._stack = stack.pop_all()

    async def _start(self, stack: AsyncExitStack) -> None:
        config = self.config
        backend = open_backend(
            config.storage.url,
            synchronous=config.storage.synchronous,
            commit_interval=config.storage.commit_interval,
            writer_cache_mib=config.storage.writer_cache_mib,
        )
        await backend.start()
        stack.push_async_callback(backend.aclose)
        self.backend = backend
        group_source = self._group_source_for()
        if group_source is not None:
            stack.push_async_callback(group_source.aclose)
        as_deliverer = HttpGatewayDeliverer(
            config.rest.delivery_timeout, TargetNetworks.from_config(config.rest)
        )
        stack.push_async_callback(as_deliverer.aclose)
        coap = CoapTransport(config.coap)
        cluster = self._cluster_for(backend)
        deliverer: Deliverer = coap
        mqtt = None
        if config.mqtt.url:
            try:
                from msgin5g.transports.mqtt import MqttTransport
            except ModuleNotFoundError as exc:
                raise ConfigError(
                    f"mqtt.url is set but the MQTT binding needs {exc.name} "
                    "(pip install 'msgin5g[mqtt]')"
                ) from exc
            mqtt = MqttTransport(config.mqtt, service_id=config.coap.service_id)
            deliverer = BindingDeliverer(coap, mqtt)
        service = MessagingService(
            backend,
            deliverer,
            config=config.delivery,
            clock=self._clock,
            as_deliverer=as_deliverer,
            group_source=group_source,
            seal=config.seal,
            topics=config.topics,
            limits=config.limits,
            cluster=cluster,
        )
        stack.push_async_callback(service.aclose)
        self.service = service
        self._wire_network(stack, service)
        service.delivery.set_gateway_deliverer(as_deliverer)
        await service.load()
        stack.push_async_callback(coap.aclose)
        if config.rest.enabled:
            rest = RestTransport(config.rest)
            stack.push_async_callback(rest.aclose)
            await rest.start(service)
            self.rest = rest
        await coap.start(service)
        self.coap = coap
        if mqtt is not None:
            stack.push_async_callback(mqtt.aclose)
            await mqtt.start(service)
            self.mqtt = mqtt
        if self.rest is not None:
            self._wire_ops(self.rest, service, coap, backend)
        await service.resume()
        log.info(
            "MSGin5G server ready: %d registered UEs, %d stored items",
            len(service.registry),
            await backend.count(),
        )

    def _wire_ops(
        self,
        rest: RestTransport,
        service: MessagingService,
        coap: CoapTransport,
        backend: Backend,
    ) -> None:
        """Give ``/metrics`` its collector, ``/readyz`` its checks, the console its rates."""
        app = rest.app
        if app is None:
            return
        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            ServerCollector(
                service,
                coap,
                lambda: dict(app.state.rest_requests),
                cluster=self._cluster_stats(service),
            )
        )
        app.state.admin.traffic = partial(
            traffic_counts, service, coap, lambda: dict(app.state.rest_requests)
        )
        ops = app.state.ops
        if self.mqtt is not None:
            from msgin5g.server.mqtt_metrics import MqttCollector

            registry.register(MqttCollector(self.mqtt))
        ops.metrics = partial(render, registry)
        ops.content_type = CONTENT_TYPE

        async def storage() -> str | None:
            await backend.get_credential("\x00readyz")  # a point read
            return None

        async def coap_socket() -> str | None:
            try:
                coap.local_address  # noqa: B018 - raises when not bound
            except (RuntimeError, MSGin5GError) as exc:
                return f"CoAP socket not bound: {exc}"
            return None

        ops.checks.update({"storage": storage, "coap": coap_socket})
        mqtt = self.mqtt
        if mqtt is not None:

            async def mqtt_broker() -> str | None:
                if mqtt.link.connected.is_set():
                    return None
                return f"MQTT broker {mqtt.config.url} not connected"

            ops.checks["mqtt"] = mqtt_broker

    @staticmethod
    def _cluster_stats(service: MessagingService) -> StatsSource | None:
        """The cluster membership's figures for ``/metrics``, when it has them."""
        cluster = service.cluster
        return cluster if isinstance(cluster, StatsSource) else None

    def _cluster_for(self, backend: Backend) -> Cluster | None:
        """This node's cluster membership, when ``cluster.node_id`` is set."""
        node_id = self.config.cluster.node_id
        if not node_id:
            return None
        from msgin5g.storage.nats import NatsBackend, NatsCluster  # the nats extra

        if not isinstance(backend, NatsBackend):
            raise ConfigError("cluster.node_id needs storage.url = nats://...")

        def describe() -> dict[str, object]:
            service, coap, rest = self.service, self.coap, self.rest
            info: dict[str, object] = {"stored_items": len(backend._entries)}
            if service is not None:
                info["registered_ues"] = service.registry.owned
            if coap is not None:
                host, port = coap.local_address[:2]
                info["coap"] = f"{host}:{port}"
            if rest is not None and rest.local_address is not None:
                host, port = rest.local_address[:2]
                info["http"] = f"{host}:{port}"
            return info

        return NatsCluster(
            backend, node_id, lease=self.config.cluster.lease, describe=describe
        )

    def _wire_network(self, stack: AsyncExitStack, service: MessagingService) -> None:
        """Communication windows, MSGin5G-8 peers (docs/federation.md), the NEF (docs/nef.md)."""
        config = self.config
        service.delivery.watch(
            CommSchedule(service.registry, service.delivery, service.clock)
        )
        if config.peers.table:
            link = HttpPeerDeliverer(config.peers)
            stack.push_async_callback(link.aclose)
            service.set_peers(Peers(config.peers, link))
            log.info("peer servers: %s", ", ".join(sorted(config.peers.table)))
        if config.nef.enabled:
            callback = config.nef.callback_url or f"http://{config.rest.bind}"
            nef = HttpNefClient(config.nef, callback)
            stack.push_async_callback(nef.aclose)
            service.set_nef(
                Reachability(
                    config.nef,
                    nef,
                    registry=service.registry,
                    delivery=service.delivery,
                    clock=service.clock,
                    tasks=service.tasks,
                )
            )
            log.info("NEF at %s, notifications to %s", config.nef.url, callback)

    def _group_source_for(self) -> SealGroupSource | None:
        """The external SEAL group management server, when configured."""
        seal = self.config.seal
        source = SealGroupSource(seal) if seal.gm_url else None
        if source is not None:
            log.info("groups are resolved at %s", seal.gm_url)
        return source

    def _forget_parts(self) -> None:
        self.coap = self.service = self.backend = None
        self.rest = self.mqtt = None

    @property
    def coap_address(self) -> tuple[str, int]:
        """The bound CoAP address (plain CoAP's, else ``coaps://``'s)."""
        if self.coap is None:
            raise RuntimeError("server not started")
        return self.coap.local_address

    @property
    def coap_addresses(self) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
        """The bound (plain CoAP, ``coaps://``) addresses; None for one that is off."""
        if self.coap is None:
            raise RuntimeError("server not started")
        return self.coap.plain_address, self.coap.secure_address

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The bound HTTP address, or None when the REST APIs are off."""
        return None if self.rest is None else self.rest.local_address

    async def aclose(self) -> None:
        """Stop accepting, stop deliveries, flush and close storage.

        In reverse order of :meth:`start`: the REST and CoAP transports, the
        service (its supervisor's tasks), the HTTP clients, then storage.
        """
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def __aenter__(self) -> "Server":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
