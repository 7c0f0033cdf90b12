"""The Observe (RFC 7641) server role of :class:`~msgin5g.coap.endpoint.Endpoint`.

What: registering observations (:meth:`ObserveRole.observe`), forgetting them,
and pushing notifications (:meth:`ObserveRole.notify`, and
:meth:`ObserveRole.notify_nowait` for fan-outs that must not hold a task per
observer). An RST or a timed-out CON notification ends the observation (§3.6,
§4.5): ``notify`` raises for a CON, and the ``observe_reset`` callback reports
an RST to a NON. Sequence numbers and notification options come from the
sans-I/O :class:`~msgin5g.coap.observe.ObserverTable`; matching ACKs and RSTs
is the message layer's (:mod:`~msgin5g.coap.outgoing`); who observes what is
the application's.

Design choice: a mixin of :class:`~msgin5g.coap.endpoint.Endpoint`, which
owns the socket, the message layer and the observer table; this module only
keeps the endpoint's largest role apart (the attributes it uses are declared
below). It is not meant to be used on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from msgin5g.coap.actions import Action, Rejected
from msgin5g.coap.address import Peer
from msgin5g.coap.exchange import MessageLayer
from msgin5g.coap.message import CoapMessage
from msgin5g.coap.numbers import Code, Type
from msgin5g.coap.observe import ObserverTable

__all__ = ["ObserveResetCallback", "ObserveRole"]

log = logging.getLogger("msgin5g.coap.endpoint")

_CONTENT = int(Code.CONTENT)
_CON = int(Type.CON)
_NON = int(Type.NON)

ObserveResetCallback = Callable[[Peer, bytes], None]
"""Called with ``(peer, token)`` when an RST answers a NON notification: the
observer lost interest (RFC 7641 §3.6) and the application must drop it."""


class ObserveRole:
    """Observe server methods of the endpoint (mixin; see the module docstring)."""

    _closed: bool
    _family: int
    _loop: asyncio.AbstractEventLoop
    _layer: MessageLayer
    _observers: ObserverTable
    _observe_reset: ObserveResetCallback | None

    if TYPE_CHECKING:  # provided by Endpoint; declared here for the type checker only

        def _run(self, actions: list[Action]) -> None: ...

        def _arm_timer(self) -> None: ...

        def _numeric(self, peer: Peer) -> Peer | None: ...

        async def _destination(self, peer: Peer) -> Peer: ...

        def _numeric_destination(self, peer: Peer) -> Peer: ...

    def observe(self, peer: Peer, token: bytes) -> int:
        """Register (or refresh) the observation ``(peer, token)`` in the engine.

        Call it from the handler of a GET with Observe = 0 and put the returned
        value into the Observe option of the 2.05 answer (RFC 7641 §4.1).

        Returns:
            the sequence number for the registration response.
        """
        return self._observers.next(self._observer_key(peer), token)

    def forget_observation(self, peer: Peer, token: bytes) -> bool:
        """Drop the engine's state of ``(peer, token)`` (deregistration).

        Returns:
            True if the engine knew the observation.
        """
        return self._observers.forget(self._observer_key(peer), token)

    async def notify(
        self,
        peer: Peer,
        token: bytes,
        payload: bytes,
        *,
        confirmable: bool = True,
        final: bool = False,
        code: int = _CONTENT,
        content_format: int | None = 50,
        options: list[tuple[int, bytes]] | None = None,
    ) -> int | None:
        """Send a notification to the observation ``(peer, token)`` (RFC 7641 §4.2).

        A 2.05 with the next Observe sequence number and Content-Format 50 by
        default. A CON notification waits for the ACK; a NON one returns once
        sent (an RST answering it reaches the ``observe_reset`` callback).
        With ``final`` the message carries no Observe option and ends the
        observation in the engine (RFC 7641 §3.2: "the last notification").

        Args:
            peer: the observer's address (host, port); host names are resolved.
            token: the token of the registration request.
            payload: the representation.
            confirmable: CON (True) or NON.
            final: send without Observe option and forget the observation.
            code: response code (2.05 by default; an error code ends the
                observation on the client, §3.2).
            content_format: Content-Format option value, or None for none.
            options: further options.

        Returns:
            the sequence number sent, or None for a ``final`` notification.

        Raises:
            RemoteReset: the observer answered with RST (it lost interest).
            RequestTimeout: a CON notification was not acknowledged.
            ConnectError: the endpoint is closed or the peer cannot be resolved.
            ValueError: invalid token or code.
        """
        peer = await self._destination(peer)
        seq, opts = self._observers.notification_options(
            peer, token, final=final, content_format=content_format, options=options
        )
        mtype = _CON if confirmable else _NON
        message = CoapMessage(mtype, code, 0, token, opts, payload)
        if not confirmable:
            self._run(self._layer.send_notification(message, peer, None)[1])
            return seq
        future: asyncio.Future[CoapMessage] = self._loop.create_future()
        self._run(self._layer.send_notification(message, peer, future)[1])
        try:
            await future
        except Exception:
            self._observers.forget(peer, token)
            raise
        finally:
            if future.cancelled() or not future.done():
                self._layer.cancel(future)
                self._arm_timer()
        return seq

    def notify_nowait(
        self,
        peer: Peer,
        token: bytes,
        payload: bytes,
        *,
        confirmable: bool = True,
        final: bool = False,
        content_format: int | None = 50,
    ) -> asyncio.Future[None]:
        """Start a notification like :meth:`notify`; return the future of its outcome.

        No task waits for the ACK, so many notifications to slow or dead
        observers cost one exchange each and hold nothing else. The future
        ends when a CON notification is acknowledged (or at once for NON and
        ``final``); it fails like :meth:`notify` raises. Cancelling it stops
        the retransmissions. ``peer`` must be a numeric address.

        Raises:
            ConnectError: the endpoint is closed.
            ValueError: ``peer`` is not a numeric address, or invalid token.
        """
        normal = self._numeric_destination(peer)
        _, opts = self._observers.notification_options(
            normal, token, final=final, content_format=content_format
        )
        outcome: asyncio.Future[None] = self._loop.create_future()
        if not confirmable:
            message = CoapMessage(_NON, _CONTENT, 0, token, opts, payload)
            self._run(self._layer.send_notification(message, normal, None)[1])
            outcome.set_result(None)
            return outcome
        message = CoapMessage(_CON, _CONTENT, 0, token, opts, payload)
        self._run(self._layer.send_notification(message, normal, outcome)[1])
        if outcome.done():  # refused at once (max_pending)
            self._observers.forget(normal, token)
        else:
            outcome.add_done_callback(
                lambda future: self._notification_done(future, normal, token)
            )
        return outcome

    def _notification_done(
        self, future: asyncio.Future[None], peer: Peer, token: bytes
    ) -> None:
        """Outcome of a :meth:`notify_nowait` CON (its exchange resolved it)."""
        if future.cancelled():
            self._layer.cancel(future)
            self._arm_timer()
        elif future.exception() is not None:
            self._observers.forget(peer, token)

    def _observer_key(self, peer: Peer) -> Peer:
        normal = self._numeric(peer)
        return normal if normal is not None else peer

    def _on_rejected(self, action: Rejected) -> None:
        token = action.token
        self._observers.forget(action.peer, token)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("observer %r reset a notification", action.peer)
        callback = self._observe_reset
        if callback is not None:
            try:
                callback(action.peer, token)
            except Exception:
                log.exception("observe_reset callback failed")
