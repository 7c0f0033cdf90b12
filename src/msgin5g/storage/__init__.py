"""Persistence behind one interface: :class:`Backend` and :func:`open_backend`.

The service layer depends only on :mod:`msgin5g.storage.base`; the composition root
picks a backend with :func:`open_backend`, which imports the backend module (and
its driver) only when that backend is chosen.
"""

from typing import Any, Final

from msgin5g.errors import ConfigError
from msgin5g.storage.base import Backend

__all__ = ["Backend", "open_backend"]

_OPTIONS: Final = frozenset(
    {"synchronous", "batch_max", "busy_timeout", "commit_interval", "writer_cache_mib"}
)
"""Options :func:`open_backend` understands (backends ignore those they lack)."""


def open_backend(url: str, **options: Any) -> Backend:
    """Create (but do not start) the backend named by ``url``.

    Supported URLs:

    * ``memory:`` -> :class:`msgin5g.storage.memory.MemoryBackend` (options ignored);
    * ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db`` or
      ``sqlite:///:memory:`` -> :class:`msgin5g.storage.sqlite.SqliteBackend`,
      with ``synchronous`` (default ``"FULL"``), ``batch_max``,
      ``busy_timeout``, ``commit_interval`` and ``writer_cache_mib`` taken
      from ``options``;
    * ``nats://[user:password@]host:port[,host2:port...][?prefix=&replicas=&creds=&tls_ca=...]``
      or ``tls://...`` -> :class:`msgin5g.storage.nats.NatsBackend` (NATS JetStream;
      needs the ``nats`` extra; options above ignored, see
      :func:`msgin5g.storage.nats.driver.parse_url`).

    Args:
        url: the ``storage.url`` setting.
        **options: backend tuning (see above).

    Returns:
        The backend; call ``await backend.start()`` before use.

    Raises:
        ConfigError: unsupported scheme, empty path or unknown option.

    Example:
        >>> open_backend("memory:")
        MemoryBackend(items=0)
    """
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigError(f"storage.{unknown[0]}: unknown storage option")
    if url in ("memory:", "memory://"):
        from msgin5g.storage.memory import MemoryBackend  # lazy: imports the driver

        return MemoryBackend()
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if not path:
            raise ConfigError(f"storage.url: {url!r} names no database file")
        from msgin5g.storage.sqlite import SqliteBackend  # lazy: imports the driver

        kwargs: dict[str, Any] = {"synchronous": options.get("synchronous", "FULL")}
        for name in (
            "batch_max",
            "busy_timeout",
            "commit_interval",
            "writer_cache_mib",
        ):
            if name in options:
                kwargs[name] = options[name]
        return SqliteBackend(path, **kwargs)
    if url.startswith(("nats://", "tls://")):
        return _open_nats(url)
    raise ConfigError(
        f"storage.url: unsupported scheme in {url!r} "
        "(expected 'memory:', 'sqlite:///path.db' or 'nats://host:port')"
    )


def _open_nats(url: str) -> Backend:
    try:
        from msgin5g.storage.nats import NatsBackend, parse_url  # lazy: imports nats-py
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("nats"):
            raise
        raise ConfigError(
            "storage.url: nats:// needs the NATS client: pip install 'msgin5g[nats]'"
        ) from exc
    return NatsBackend(parse_url(url))
