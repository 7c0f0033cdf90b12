"""What the procedure modules of a gateway share, built once by its façade."""

from collections.abc import Callable
from dataclasses import dataclass

from msgin5g.coap.address import host_port
from msgin5g.coap.endpoint import Endpoint
from msgin5g.gateway.cache import GatewayState
from msgin5g.gateway.config import GatewayConfig
from msgin5g.gateway.upstream import Upstream
from msgin5g.runtime import Clock, Supervisor
from msgin5g.storage.base import MessageQueue

__all__ = ["GatewayContext", "host_port"]


@dataclass(frozen=True, slots=True)
class GatewayContext:
    """The opened parts of one running gateway.

    Attributes:
        config: the gateway's settings.
        state: the durable cache (pending requests, constrained UEs, apps).
        queue: the durable queues of the relay (the gateway's storage).
        upstream: the client towards the server.
        local: the constrained-side endpoint.
        tasks: the supervisor of every background task.
        clock: the one clock.
    """

    config: GatewayConfig
    state: GatewayState
    queue: MessageQueue
    upstream: Upstream
    local: Callable[[], Endpoint]
    tasks: Supervisor
    clock: Clock
