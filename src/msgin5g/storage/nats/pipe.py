"""JetStream requests with less Python per request than ``nats-py``'s own.

What:
    :class:`Requests` sends JetStream API requests and acknowledged publishes
    (a publish with a reply subject, answered by a PubAck) on the backend's
    connection and matches the answers itself:

    * one reply subscription ``<inbox>.<nuid>.*`` whose answers are handed to
      :meth:`Requests.set_result` straight from the client's read loop (the
      subscription is given this object as its ``future``, the path
      ``nats-py`` keeps for one-shot requests): no per-subscription queue, no
      task switch per answer;
    * one asyncio future per request and NO timer per request: a sweeper
      fails the requests older than ``timeout`` once a second (requests are
      kept in issue order, so it looks only at the oldest);
    * answers decoded by one msgspec struct (:class:`Reply`) instead of
      ``json.loads`` plus dataclasses.

Why:
    Per stored message the backend makes two or three JetStream requests, and
    ``nats-py``'s ``request`` costs a NUID, a random token, a future with a
    done callback, ``asyncio.wait_for`` (a timer and a task switch) and the
    subscription's queue per request. Measured in docs/performance.md
    ("Cluster on NATS JetStream (issue 12)").

Failures:
    An answer with an ``error`` member raises ``nats.js.errors.APIError`` (or
    its subclasses, as ``nats-py`` does); no responders, a timeout and a closed
    connection raise the ``nats.errors`` classes ``nats-py`` raises, so
    :func:`~msgin5g.storage.nats.driver.map_driver_errors` maps them as before.
"""

import asyncio
import time
from typing import Any, Final

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg as NatsMsg
from nats.aio.subscription import Subscription

__all__ = ["Reply", "Requests"]

LAZY_FLUSH: Final = 0.002
"""Seconds a non-urgent command may wait for a flush (see :meth:`Requests.send`)."""
_NO_RESPONDERS: Final = "503"
_STATUS: Final = "Status"


class Reply(msgspec.Struct, gc=False):
    """The members of a JetStream answer the backend reads (others ignored).

    A PubAck has ``stream``, ``seq`` and ``duplicate``; an API answer may have
    ``success``; any answer may carry ``error``.
    """

    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    success: bool = False
    error: dict[str, Any] | None = None


_DECODER: Final = msgspec.json.Decoder(Reply)


class Requests:
    """Requests on one connection, answered through one reply subscription."""

    def __init__(self, client: Client, timeout: float) -> None:
        """Nothing is sent before :meth:`start`."""
        self._client = client
        self._timeout = timeout
        self._prefix = ""
        self._skip = 0
        self._counter = 0
        self._waiting: dict[str, tuple[asyncio.Future[Reply], float]] = {}
        self._sub: Subscription | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._lazy: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Future[object] | None = None

    async def start(self) -> None:
        """Subscribe to the reply subjects and start the timeout sweeper."""
        self._prefix = self._client.new_inbox() + "."
        self._skip = len(self._prefix)
        self._sub = await self._client.subscribe(
            self._prefix + "*",
            future=self,  # type: ignore[arg-type]  # see set_result
        )
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    def close(self) -> None:
        """Fail what is waiting (the connection is closing); stop the sweeper."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._lazy is not None:
            self._lazy.cancel()
            self._lazy = None
        waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            if not future.done():
                future.set_exception(nats.errors.ConnectionClosedError())

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._waiting)

    async def request(
        self, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> Reply:
        """Send ``body`` to ``subject`` and return the decoded answer.

        Raises:
            nats.js.errors.APIError: the answer carries an ``error``.
            nats.errors.Error: no responders, timeout, connection closed.
        """
        reply = await (await self.send(subject, body, headers))
        if reply.error is not None:
            nats.js.errors.APIError.from_error(reply.error)  # raises
        return reply

    async def send(
        self,
        subject: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        urgent: bool = True,
    ) -> "asyncio.Future[Reply]":
        """Publish a request; return the future of its raw answer (``error`` kept).

        The command is only queued to the connection's write buffer, so many
        requests can be put in flight before the first answer is awaited.
        ``urgent``: kick the connection's flusher now (an answer is awaited on
        the critical path); otherwise the command leaves with the next urgent
        one, or at the latest :data:`LAZY_FLUSH` seconds later (background
        deletes: fewer writes to the socket).
        """
        self._counter += 1
        token = str(self._counter)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (future, time.monotonic() + self._timeout)
        try:
            await self.post(
                subject, body, headers, urgent=urgent, reply=self._prefix + token
            )
        except BaseException:
            self._waiting.pop(token, None)
            raise
        return future

    async def post(
        self,
        subject: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        *,
        urgent: bool = False,
        reply: str = "",
    ) -> None:
        """Queue a publish (no answer awaited unless ``reply``; see :meth:`send`).

        Headers are written as given: keys are the backend's own constants and
        values never hold CR or LF (``nats-py`` checks both per publish).
        """
        client = self._client
        if client.is_closed:
            raise nats.errors.ConnectionClosedError
        if client.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        if len(body) > client.max_payload:
            raise nats.errors.MaxPayloadError
        if not client.is_connected and (
            client._pending_data_size + len(body) > client._max_pending_size
        ):  # reconnecting: buffered like nats-py's publish, up to its limit
            raise nats.errors.OutboundBufferLimitError
        if headers:
            lines = "".join([f"{key}: {value}\r\n" for key, value in headers.items()])
            hdr = f"NATS/1.0\r\n{lines}\r\n".encode()
            size = len(hdr)
            command = b"".join(
                (
                    f"HPUB {subject} {reply} {size} {size + len(body)}\r\n".encode(),
                    hdr,
                    body,
                    b"\r\n",
                )
            )
        else:
            command = b"".join(
                (f"PUB {subject} {reply} {len(body)}\r\n".encode(), body, b"\r\n")
            )
        await client._send_command(command)
        if urgent:
            flushes = client._flush_queue
            if flushes is not None and flushes.empty():
                await client._flush_pending()
        elif self._lazy is None:
            self._lazy = asyncio.get_running_loop().call_later(
                LAZY_FLUSH, self._flush_lazy
            )

    def _flush_lazy(self) -> None:
        self._lazy = None
        client = self._client
        flushes = client._flush_queue
        if client._pending_data_size and flushes is not None and flushes.empty():
            self._flushing = asyncio.ensure_future(client._flush_pending())

    # ------------------------------------------------------------ read loop side

    def cancelled(self) -> bool:
        """Part of the future protocol the client's read loop uses: never."""
        return False

    def set_result(self, msg: NatsMsg) -> None:
        """An answer arrived (called by the client's read loop)."""
        entry = self._waiting.pop(msg.subject[self._skip :], None)
        if entry is None:
            return  # timed out already
        future = entry[0]
        if future.done():
            return
        headers = msg.headers
        if headers and headers.get(_STATUS) == _NO_RESPONDERS:
            future.set_exception(nats.errors.NoRespondersError())
            return
        try:
            future.set_result(_DECODER.decode(msg.data))
        except msgspec.DecodeError as exc:
            future.set_exception(
                nats.errors.Error(f"undecodable JetStream answer: {exc}")
            )

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            expired = []
            for token, (_, deadline) in self._waiting.items():
                if deadline > now:
                    break  # issued in order, same timeout: the rest is younger
                expired.append(token)
            for token in expired:
                future, _ = self._waiting.pop(token)
                if not future.done():
                    future.set_exception(nats.errors.TimeoutError())
