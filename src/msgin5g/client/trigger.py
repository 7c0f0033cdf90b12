"""Device triggers reaching the client (TS 24.538 §6.7.3.1; protocol digest §3.15).

In a network the NEF/SCEF hands the trigger to the device over SMS or NIDD, to
the application port the client announced in ``triggeringInfo.clientPorts``.
This module is the client's receiving side as it runs in a lab or on a device
whose modem passes application-port SMS payloads to a UDP socket: a
:class:`TriggerListener` listens on ``(host, port)``, parses each datagram as the
trigger payload ``{"msgin5gServiceId": …, "ueServiceId": …, "pending": n}`` and,
when it names this client's UE Service ID (and the MSGin5G service), sends its
registration again (:meth:`Client.refresh_registration`); the server then
delivers what it stored. Anything else is ignored with a DEBUG line (digest
§3.15 client step 2: "Unknown payload → ignore").
"""

import asyncio
import json
import logging

from msgin5g.client.core import Client
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID

__all__ = ["TriggerListener", "parse_trigger"]

log = logging.getLogger(__name__)


def parse_trigger(payload: bytes) -> str | None:
    """The UE Service ID a trigger payload names, or None if it is not one."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("msgin5gServiceId") != MSGIN5G_SERVICE_ID:
        return None
    ue = body.get("ueServiceId")
    return ue if isinstance(ue, str) else None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: "TriggerListener") -> None:
        self._listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._listener.received(data)


class TriggerListener:
    """Listens for device triggers for ``client`` on a UDP port."""

    def __init__(self, client: Client, host: str = "127.0.0.1", port: int = 0) -> None:
        self._client = client
        self._bind = (host, port)
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
        self.triggers = 0
        """Triggers for this client received so far."""

    async def start(self) -> None:
        """Bind the socket."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=self._bind
        )
        self._transport = transport

    @property
    def port(self) -> int:
        """The bound port (announce it in ``triggeringInfo.clientPorts``)."""
        if self._transport is None:
            raise RuntimeError("trigger listener not started")
        return int(self._transport.get_extra_info("sockname")[1])

    def received(self, payload: bytes) -> None:
        """Handle one trigger payload."""
        ue = parse_trigger(payload)
        if ue != self._client.ue_service_id:
            log.debug("ignored a trigger payload of %d octets", len(payload))
            return
        self.triggers += 1
        log.info("%s: device trigger received; registering", ue)
        task = asyncio.get_running_loop().create_task(
            self._client.refresh_registration()
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: "asyncio.Task[bool]") -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("registration after a trigger failed: %s", task.exception())

    async def aclose(self) -> None:
        """Close the socket; cancel a registration in progress."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
