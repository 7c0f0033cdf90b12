"""Connection, options and error mapping of the NATS JetStream backend.

What:
    * :class:`NatsOptions` and :func:`parse_url`: the ``nats://`` storage URL
      with the options NATS users expect (see :func:`parse_url`);
    * :func:`connect`: one ``nats-py`` connection that fails in seconds when
      no server answers at start-up, then reconnects without end while running;
    * :func:`map_driver_errors`: the one place where ``nats-py`` exceptions
      become the project's :class:`~msgin5g.errors.StorageError` tree.
"""

import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client

from msgin5g.errors import (
    ConfigError,
    StorageConflict,
    StorageError,
    StorageUnavailable,
)
from msgin5g.storage.nats.codec import check_prefix

__all__ = ["NatsOptions", "connect", "map_driver_errors", "parse_url"]

_log = logging.getLogger(__name__)

_QUERY_KEYS: Final = frozenset(
    {
        "prefix",
        "replicas",
        "creds",
        "nkey",
        "token",
        "tls",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "tls_hostname",
        "connect_timeout",
        "dup_window",
        "dedup_ttl",
    }
)


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """Where and how to reach JetStream, parsed from the storage URL.

    Attributes:
        servers: ``nats://`` / ``tls://`` URLs (comma-separated hosts in the URL).
        prefix: name prefix of every stream and bucket (``msgin5g``).
        replicas: JetStream replicas of every stream and bucket (1).
        user: user name (``nats://user:password@host``).
        password: password.
        token: authentication token (``?token=`` or ``nats://token@host``).
        creds: path of a ``.creds`` file (JWT + NKey seed).
        nkey: path of an NKey seed file.
        tls: use TLS (``tls://`` scheme or ``?tls=1``).
        tls_ca: CA bundle to verify the server.
        tls_cert: client certificate (mutual TLS).
        tls_key: key of the client certificate.
        tls_hostname: name expected in the server certificate.
        connect_timeout: seconds to wait for the first connection (5).
        dup_window: JetStream duplicate window of the queue stream (s, 120).
        dedup_ttl: age after which any duplicate-detection record is dropped by
            JetStream itself (s, 7 days): the bound on that bucket.
    """

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    prefix: str = "msgin5g"
    replicas: int = 1
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_hostname: str | None = None
    connect_timeout: float = 5.0
    dup_window: float = 120.0
    dedup_ttl: float = 7 * 86400.0

    def redacted(self) -> str:
        """The servers without credentials (for logs and repr)."""
        return ",".join(self.servers)


def _number(name: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"storage.url: {name}={text!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"storage.url: {name} must be within [{low:g}, {high:g}]")
    return value


def parse_url(url: str) -> NatsOptions:
    """Parse ``nats://[user:password@]host[:port][,host2:port2...][?options]``.

    ``tls://`` instead of ``nats://`` requires TLS. Query options: ``prefix``
    (stream/bucket name prefix, default ``msgin5g``), ``replicas`` (1-5,
    default 1), ``creds`` (path of a ``.creds`` file), ``nkey`` (path of an
    NKey seed file), ``token``, ``tls=1``, ``tls_ca``, ``tls_cert``,
    ``tls_key``, ``tls_hostname``, ``connect_timeout`` (s), ``dup_window``
    (s, JetStream duplicate window), ``dedup_ttl`` (s, bound on
    duplicate-detection records). A user name without password is a token.

    Raises:
        ConfigError: malformed URL or option (message starts ``storage.url:``).

    Example:
        >>> parse_url("nats://app:s3cret@10.0.0.1:4222?replicas=3").replicas
        3
    """
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls") or not parts.netloc:
        raise ConfigError(f"storage.url: {_redact(url)!r} is not nats://host:port")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    if not hosts:
        raise ConfigError("storage.url: no NATS server host given")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - _QUERY_KEYS)
    if unknown:
        raise ConfigError(f"storage.url: unknown NATS option {unknown[0]!r}")
    tls = parts.scheme == "tls" or query.get("tls", "") in ("1", "true", "yes")
    scheme = "tls" if tls else "nats"
    kwargs: dict[str, Any] = {
        "servers": tuple(
            f"{scheme}://{h.strip()}" for h in hosts.split(",") if h.strip()
        ),
        "tls": tls,
        **_userinfo(userinfo),
        **_query_options(query),
    }
    if kwargs.get("tls_cert") and not kwargs.get("tls_key"):
        raise ConfigError("storage.url: tls_cert needs tls_key")
    return NatsOptions(**kwargs)


def _userinfo(userinfo: str) -> dict[str, str]:
    """``user:password`` -> user and password; a lone ``name`` is a token."""
    if not userinfo:
        return {}
    name, sep, secret = userinfo.partition(":")
    if sep:
        return {"user": unquote(name), "password": unquote(secret)}
    return {"token": unquote(name)}


def _query_options(query: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name in (
        "token",
        "creds",
        "nkey",
        "tls_ca",
        "tls_cert",
        "tls_key",
        "tls_hostname",
    ):
        if query.get(name):
            options[name] = query[name]
    if "prefix" in query:
        options["prefix"] = check_prefix(query["prefix"])
    if "replicas" in query:
        options["replicas"] = int(_number("replicas", query["replicas"], 1, 5))
    for name, low, high in (
        ("connect_timeout", 0.1, 600.0),
        ("dup_window", 1.0, 86400.0),
        ("dedup_ttl", 60.0, 365 * 86400.0),
    ):
        if name in query:
            options[name] = _number(name, query[name], low, high)
    return options


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return url.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2])
    return url


def _tls_context(options: NatsOptions) -> ssl.SSLContext | None:
    if not options.tls:
        return None
    context = ssl.create_default_context(cafile=options.tls_ca)
    if options.tls_cert:
        context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


async def connect(options: NatsOptions, closing: Callable[[], bool]) -> Client:
    """Open one connection; fail fast at start, reconnect forever afterwards.

    ``closing()`` tells the callbacks that a disconnection is our own close.

    Raises:
        StorageUnavailable: no server answered within ``connect_timeout`` (with a
            hint naming the servers), or TLS/authentication failed.
    """

    async def on_error(exc: Exception) -> None:
        if closing():
            return
        _log.warning("nats: %s: %s", type(exc).__name__, exc)

    async def on_disconnect() -> None:
        if closing():
            return
        _log.warning("nats: disconnected from %s; reconnecting", options.redacted())

    async def on_reconnect() -> None:
        _log.warning("nats: reconnected to %s", options.redacted())

    kwargs: dict[str, Any] = {
        "servers": list(options.servers),
        "name": "msgin5g",
        "connect_timeout": options.connect_timeout,
        "max_reconnect_attempts": 1,
        "reconnect_time_wait": 0.25,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": on_reconnect,
        "tls": _tls_context(options),
        "tls_hostname": options.tls_hostname,
        "user": options.user,
        "password": options.password,
        "token": options.token,
    }
    if options.creds:
        kwargs["user_credentials"] = options.creds
    if options.nkey:
        kwargs["nkeys_seed"] = options.nkey
    with map_driver_errors():
        try:
            client = await nats.connect(**kwargs)
        except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(
                f"nats: no server answered at {options.redacted()} within "
                f"{options.connect_timeout:g} s (is nats-server -js running there? "
                "check the host, port, credentials and TLS options of storage.url)"
            ) from exc
    # Running: ride out server restarts instead of giving up after one attempt.
    client.options["max_reconnect_attempts"] = -1
    client.options["reconnect_time_wait"] = 0.5
    return client


_NOT_FOUND_CODES: Final = frozenset({10037, 10057, 10059})
"""JetStream API codes meaning "no such message/stream" (benign on deletes)."""


def is_not_found(exc: BaseException) -> bool:
    """Whether a JetStream API error says the message/key was not there."""
    if isinstance(exc, nats.js.errors.NotFoundError):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in _NOT_FOUND_CODES


@contextmanager
def map_driver_errors() -> Iterator[None]:
    """Translate ``nats-py`` (and stored-data decoding) errors into StorageError.

    * no server, connection closed, timeouts, no JetStream responders, JetStream
      temporarily unavailable -> :class:`~msgin5g.errors.StorageUnavailable`;
    * wrong last sequence on a KV write -> :class:`~msgin5g.errors.StorageConflict`;
    * any other ``nats`` error or an undecodable stored message ->
      :class:`~msgin5g.errors.StorageError`.

    The driver exception is kept as ``__cause__``.

    Raises:
        StorageError: or a subclass, for every driver error raised in the block.
    """
    try:
        yield
    except nats.js.errors.KeyWrongLastSequenceError as exc:
        raise StorageConflict(f"nats: {exc}") from exc
    except (
        nats.errors.NoServersError,
        nats.errors.ConnectionClosedError,
        nats.errors.TimeoutError,
        nats.errors.NoRespondersError,
        nats.errors.StaleConnectionError,
        nats.errors.OutboundBufferLimitError,
        nats.js.errors.ServiceUnavailableError,
    ) as exc:
        raise StorageUnavailable(f"nats: {type(exc).__name__}: {exc}") from exc
    except nats.errors.Error as exc:
        raise StorageError(f"nats: {type(exc).__name__}: {exc}") from exc
    except (msgspec.DecodeError, KeyError, ValueError) as exc:
        raise StorageError(f"nats: undecodable stored message: {exc}") from exc
