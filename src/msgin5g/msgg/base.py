"""What both Message Gateways run: outbox, MSGG API server, registration, uplink.

:class:`GatewayRuntime` owns, on one ``AsyncExitStack``:

1. the outbox file (:mod:`.outbox`);
2. the MSGG API (:mod:`.api`) on ``listen`` (an ASGI server in this loop);
3. the registration with the server, refreshed every ``validity / 3``
   (:class:`~.server_link.ServerLink`); a server that is down is retried every
   2 s and reported in the log, the gateway keeps serving meanwhile;
4. the uplink pump (:class:`~.server_link.UplinkPump`).

A stop does **not** de-register: the server keeps storing messages for the
gateway's UEs while it restarts (the registration lapses after ``validity``).
"""

import asyncio
import base64
import logging
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msgin5g.msgg.api import GatewayHandler, create_app
from msgin5g.msgg.outbox import Outbox
from msgin5g.msgg.server_link import ServerLink, UplinkPump
from msgin5g.transports.rest.runner import AsgiServer

__all__ = [
    "GatewayConfig",
    "GatewayProcess",
    "GatewayRuntime",
    "cancel",
    "split_hostport",
]

log = logging.getLogger(__name__)

UE_MESSAGE = "/msgs-msgdelivery/v1/deliver-ue-message"
REPORT = "/msgs-msgdelivery/v1/deliver-report"


def split_hostport(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) → (host, port)."""
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


@dataclass
class GatewayConfig:
    """Settings both gateways share (the CLI fills them in)."""

    gateway_id: str
    kind: str
    api_name: str
    server: str = "http://127.0.0.1:8080"
    listen: str = "127.0.0.1:8090"
    public_uri: str | None = None
    outbox: Path = Path("msgg-outbox.db")
    validity: float = 300.0
    http_server: str = "granian"
    client_id: str | None = None
    """OAuth2 client id at the server (default: the gateway id)."""
    secret: str | None = None
    """OAuth2 client secret; None: call the server without a token."""


class GatewayRuntime:
    """The parts of a gateway process that do not depend on its technology."""

    def __init__(
        self,
        config: GatewayConfig,
        handler: GatewayHandler,
        ue_service_ids: Callable[[], list[str]],
    ) -> None:
        self.config = config
        self._handler = handler
        self._ue_ids = ue_service_ids
        self._stack: AsyncExitStack | None = None
        self.outbox: Outbox | None = None
        self.link: ServerLink | None = None
        self.pump: UplinkPump | None = None
        self.api: AsgiServer | None = None

    @property
    def uri(self) -> str:
        """The ``{apiRoot}`` the server calls."""
        if self.config.public_uri:
            return self.config.public_uri.rstrip("/")
        if self.api is None:
            raise RuntimeError("gateway not started")
        return f"http://{self.api.host}:{self.api.port}"

    @property
    def box(self) -> Outbox:
        """The outbox (once started)."""
        if self.outbox is None:
            raise RuntimeError("gateway not started")
        return self.outbox

    def _uplink(self) -> UplinkPump:
        if self.pump is None:
            raise RuntimeError("gateway not started")
        return self.pump

    async def start(self, stack: AsyncExitStack) -> None:
        """Open every part on ``stack`` (unwound in reverse by the caller)."""
        config = self.config
        self.outbox = outbox = Outbox(config.outbox)
        stack.callback(outbox.close)
        self.link = link = ServerLink(
            config.server,
            config.gateway_id,
            config.kind,
            validity=config.validity,
            client_id=config.client_id,
            secret=config.secret,
        )
        stack.push_async_callback(link.aclose)
        self.pump = pump = UplinkPump(outbox, link)
        host, port = split_hostport(config.listen)
        api = AsgiServer(
            create_app(config.api_name, self._handler), host, port, config.http_server
        )
        await api.start()
        stack.push_async_callback(api.aclose)
        self.api = api
        for coro, name in (
            (pump.run(), "uplink"),
            (link.keep_registered(self.uri, self._ue_ids), "registration"),
        ):
            task = asyncio.create_task(coro, name=name)
            stack.push_async_callback(cancel, task)
        log.info(
            "%s %s serving %s at %s for %d UEs (server %s)",
            config.kind,
            config.gateway_id,
            config.api_name,
            self.uri,
            len(self._ue_ids()),
            config.server,
        )

    def send_ue_message(
        self,
        originator: str,
        recipient: tuple[str, str],
        payload: bytes,
        *,
        report: bool = False,
        application_id: str | None = None,
    ) -> str:
        """Queue a message from one of the gateway's UEs; returns its msgId."""
        msg_id = f"{self.config.gateway_id}-{uuid.uuid4().hex[:16]}"
        body: dict[str, Any] = {
            "oriAddr": {"addrType": "UE", "addr": originator},
            "destAddr": {"addrType": recipient[0], "addr": recipient[1]},
            "msgId": msg_id,
            "payload": base64.b64encode(payload).decode("ascii"),
            "stoAndFwInd": True,
        }
        if report:
            body["delivStReqInd"] = True
        if application_id:
            body["appId"] = application_id
        self._uplink().put(UE_MESSAGE, body)
        return msg_id

    def send_report(
        self,
        reporter: str,
        destination: dict[str, str],
        msg_id: str,
        *,
        delivered: bool,
        cause: str | None = None,
    ) -> None:
        """Queue a DeliveryStatusReport on behalf of one of the gateway's UEs."""
        body: dict[str, Any] = {
            "oriAddr": {"addrType": "UE", "addr": reporter},
            "destAddr": destination,
            "msgId": msg_id,
            "delivSt": "REPT_DELY_SUCCESS" if delivered else "REPT_DELY_FAILED",
        }
        if cause and not delivered:
            body["failureCause"] = cause
        self._uplink().put(REPORT, body)


async def cancel(task: "asyncio.Task[None]") -> None:
    """Cancel ``task`` and wait for it (an exit-stack callback)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class GatewayProcess:
    """Start/stop of a gateway: the runtime, then its technology (:meth:`_open`)."""

    runtime: GatewayRuntime
    _stack: AsyncExitStack | None = None

    async def _open(self, stack: AsyncExitStack) -> None:
        """Open the gateway's own network side on ``stack`` (subclasses)."""

    async def start(self) -> None:
        """Open the outbox, serve the API, register, then :meth:`_open`."""
        async with AsyncExitStack() as stack:
            await self.runtime.start(stack)
            await self._open(stack)
            self._stack = stack.pop_all()

    async def aclose(self) -> None:
        """Stop everything; what is queued stays in the outbox."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()

    async def __aenter__(self) -> "GatewayProcess":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
