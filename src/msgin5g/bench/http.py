"""A small HTTP client for the generator: HTTP/1.1 keep-alive and h2c.

Why not httpx: the generator is device side (no server extra installed) and
must stay cheaper than the server it measures; a request here is one
pre-formatted write and one header parse. :class:`H1Connection` keeps one
request in flight (no pipelining); :class:`H2Connection` multiplexes streams on
one connection with prior knowledge (RFC 9113 §3.3) through the ``h2`` package
(``pip install h2``), imported only when ``--h2c`` is given.
"""

import asyncio
from typing import Any, Final

from msgin5g.errors import ConfigError, ServerUnreachable

__all__ = ["H1Connection", "H2Connection", "Response", "open_connection"]

_CONNECT_TIMEOUT: Final = 5.0


class Response:
    """Status, lower-case headers and body of one answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def retry_after(self) -> float:
        """``Retry-After`` in seconds (0 when absent or a date)."""
        try:
            return float(self.headers.get("retry-after", "0"))
        except ValueError:
            return 0.0


async def _open(
    host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(host, port), _CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        raise ServerUnreachable(
            f"cannot connect to http://{host}:{port}: {exc or 'timed out'}"
        ) from None


class _Connection:
    """What both kinds of connection hold."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
        token: str | None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host
        self.token = token
        self._start()

    def _start(self) -> None:
        """What a kind of connection does once connected."""

    async def aclose(self) -> None:
        self.writer.close()


class H1Connection(_Connection):
    """One HTTP/1.1 keep-alive connection, one request at a time."""

    def _start(self) -> None:
        auth = f"authorization: Bearer {self.token}\r\n" if self.token else ""
        self._head = f"host: {self.host}\r\n{auth}".encode()

    async def request(self, method: str, path: str, body: bytes = b"") -> Response:
        """Send one request (JSON body) and read its answer.

        Raises:
            ServerUnreachable: the server closed the connection.
        """
        self.writer.write(
            b"%s %s HTTP/1.1\r\n%scontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s"
            % (method.encode(), path.encode(), self._head, len(body), body)
        )
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ServerUnreachable(
                f"the HTTP server closed the connection: {exc}"
            ) from None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            data = await self._chunked()
        else:
            length = int(headers.get("content-length", "0"))
            data = await self.reader.readexactly(length) if length else b""
        return Response(status, headers, data)

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)


class H2Connection(_Connection):
    """h2c with prior knowledge: many streams on one connection."""

    def _start(self) -> None:
        try:
            import h2.config
            import h2.connection
        except ImportError:
            raise ConfigError("--h2c needs the h2 package: pip install h2") from None
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(2**30)
        self.writer.write(self.conn.data_to_send())
        self._streams: dict[
            int, tuple[asyncio.Future[Response], dict[str, str], list[bytes]]
        ] = {}
        self._reading = asyncio.create_task(self._read())

    async def request(self, method: str, path: str, body: bytes = b"") -> Response:
        """Send one request (JSON body) on a new stream and await its answer."""
        if self._reading.done():
            raise ServerUnreachable("the HTTP/2 server closed the connection")
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":path", path),
            (":scheme", "http"),
            (":authority", self.host),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
        ]
        if self.token:
            headers.append(("authorization", f"Bearer {self.token}"))
        self.conn.send_headers(sid, headers)
        self.conn.send_data(sid, body, end_stream=True)
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._streams[sid] = (future, {}, [])
        self.writer.write(self.conn.data_to_send())
        return await future

    async def _read(self) -> None:
        import h2.events

        try:
            while data := await self.reader.read(65536):
                for event in self.conn.receive_data(data):
                    self._event(event, h2.events)
                self.writer.write(self.conn.data_to_send())
        except ConnectionError:
            pass
        for future, _, _ in self._streams.values():
            if not future.done():
                future.set_exception(
                    ServerUnreachable("the HTTP/2 server closed the connection")
                )

    def _event(self, event: Any, events: Any) -> None:
        stream = self._streams.get(getattr(event, "stream_id", 0))
        if stream is None:
            return
        future, headers, parts = stream
        if isinstance(event, events.ResponseReceived):
            headers.update(dict(event.headers))
        elif isinstance(event, events.DataReceived):
            parts.append(event.data)
            self.conn.acknowledge_received_data(
                event.flow_controlled_length, event.stream_id
            )
        elif isinstance(event, events.StreamEnded | events.StreamReset):
            del self._streams[event.stream_id]
            status = int(headers.get(":status", "0"))
            if not future.done():
                future.set_result(Response(status, headers, b"".join(parts)))

    async def aclose(self) -> None:
        self._reading.cancel()
        self.writer.close()


async def open_connection(
    host: str, port: int, *, token: str | None = None, h2c: bool = False
) -> H1Connection | H2Connection:
    """A connection to ``http://host:port``.

    Raises:
        ServerUnreachable: nothing answers there (within 5 s).
        ConfigError: ``h2c`` without the h2 package.
    """
    reader, writer = await _open(host, port)
    if h2c:
        return H2Connection(reader, writer, f"{host}:{port}", token)
    return H1Connection(reader, writer, f"{host}:{port}", token)
