"""The settings of one ``msgin5g bench`` run, and the errors it reports.

Standard library only: the CLI builds :class:`BenchOptions` from its arguments
and hands it to :func:`msgin5g.bench.runner.run` (which copies it into every
generator process).
"""

import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Final

from msgin5g.errors import ConfigError, MSGin5GError

__all__ = [
    "ENGINES",
    "MODES",
    "PROVISION_HINT",
    "BenchFailed",
    "BenchOptions",
    "parse_coap_uri",
    "parse_http_url",
]

MODES: Final = ("p2p", "reg", "a2p", "fanout")

ENGINES: Final = ("python", "c")
"""``--engine``: the load phase in the Python workers, or in the C engine
(``p2p`` and ``reg`` only, :mod:`msgin5g.bench.native`)."""

PROVISION_HINT: Final = (
    "provision the bench UEs first: msgin5g bench provision --storage URL "
    "--ues N --secret S (same --ues, --secret and --prefix)"
)


class BenchFailed(MSGin5GError):
    """The load could not be set up or run (the message names what failed)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self._hint = hint

    def hint(self) -> str | None:
        return self._hint


def parse_coap_uri(uri: str) -> tuple[str, int]:
    """``coap://HOST[:PORT]`` as a numeric ``(address, port)`` (resolved once).

    Raises:
        ConfigError: not a coap:// URI, or the host does not resolve.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "coap" or not parts.hostname:
        raise ConfigError(f"--server {uri!r}: expected coap://HOST:PORT")
    try:
        port = parts.port or 5683
    except ValueError:
        raise ConfigError(f"--server {uri!r}: the port is not a number") from None
    host = parts.hostname
    try:
        ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ConfigError(
                f"--server {uri!r}: cannot resolve {host}: {exc}"
            ) from None
        host = str(infos[0][4][0])
    return host, port


def parse_http_url(url: str) -> tuple[str, int]:
    """``http://HOST[:PORT]`` (the server's REST API) as ``(host, port)``.

    Raises:
        ConfigError: not an http:// URL (TLS is not supported by the generator).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"--http {url!r}: expected http://HOST:PORT (the --http of serve; "
            "the generator speaks cleartext HTTP/1.1 or h2c only)"
        )
    try:
        return parts.hostname, parts.port or 80
    except ValueError:
        raise ConfigError(f"--http {url!r}: the port is not a number") from None


@dataclass(frozen=True)
class BenchOptions:
    """One run. Times in seconds, rates per second."""

    mode: str
    server: str
    """``coap://HOST:PORT`` of the MSGin5G-1 interface."""
    ues: int
    secret: str
    prefix: str = "bench-"
    http: str | None = None
    """``http://HOST:PORT`` of the REST API (``a2p``, ``fanout``)."""
    rate: float = 0.0
    """Offered load over all processes; 0: closed loop (saturation)."""
    duration: float = 10.0
    warmup: float = 1.0
    drain: float = 5.0
    """After the window, how long to wait for messages still under way."""
    workers: int = 1
    window: int = 1
    """Outstanding requests per UE (``p2p``), socket (``reg``) or connection (``a2p``)."""
    size: int = 48
    """Payload octets of each message (at least 8: the send time)."""
    sockets: int = 64
    """``reg``: source sockets over all processes."""
    connections: int = 8
    """``a2p``: HTTP connections per process (h2c: streams on one connection)."""
    h2c: bool = False
    store: bool = False
    """``a2p``: ``stoAndFwInd`` true; ``p2p``: ``storeAndForwardFlag`` true (the
    server stores each message durably before it answers)."""
    token: str | None = None
    """Bearer token for the REST API when OAuth2 is on."""
    as_id: str = "bench-as"
    group: str = "bench-group"
    run_id: str = "run"
    """Makes message IDs unique across runs against the same server."""
    engine: str = "python"
    """Who sends the measured load: ``python`` (uvloop workers) or ``c`` (one
    coapgen child per worker, ``p2p`` and ``reg`` only)."""

    def __post_init__(self) -> None:
        problems = [text for ok, text in self._checks() if not ok]
        if problems:
            raise ConfigError("; ".join(problems))

    def _checks(self) -> list[tuple[bool, str]]:
        pair = self.mode in ("p2p", "fanout")
        return [
            (self.mode in MODES, f"mode must be one of {', '.join(MODES)}"),
            (
                self.ues >= (2 if pair else 1),
                "--ues must be at least 2 (1 for reg and a2p)",
            ),
            (self.rate >= 0, "--rate must not be negative (0: closed loop)"),
            (self.duration > 0, "--duration must be positive"),
            (
                self.warmup >= 0 and self.drain >= 0,
                "--warmup and --drain must not be negative",
            ),
            (1 <= self.workers <= 64, "--workers must be 1-64"),
            (self.workers <= self.ues, "--workers must not exceed --ues"),
            (
                min(self.window, self.sockets, self.connections) >= 1,
                "--window, --sockets and --connections must be at least 1",
            ),
            (8 <= self.size <= 4000, "--size must be 8-4000 octets"),
            (bool(self.secret), "--secret is required (the bench UEs' secret)"),
            (
                self.mode not in ("a2p", "fanout") or bool(self.http),
                f"{self.mode} needs --http URL (the server's REST API)",
            ),
            (self.engine in ENGINES, f"--engine must be one of {', '.join(ENGINES)}"),
            (
                self.engine != "c" or self.mode in ("p2p", "reg"),
                f"--engine c: {self.mode} has no C engine (p2p and reg do); "
                "drop --engine c",
            ),
        ]

    def names(self) -> list[str]:
        """The bench UE Service IDs: ``<prefix>00001`` ... ``<prefix>N``."""
        return [f"{self.prefix}{i:05d}" for i in range(1, self.ues + 1)]
