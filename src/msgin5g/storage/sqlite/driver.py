"""The sqlite3 driver's edge: opening connections and translating its errors.

What:
    :func:`connect` opens a connection the way every part of the backend needs it
    (autocommit: we issue ``BEGIN``/``COMMIT`` ourselves; ``busy_timeout`` in
    milliseconds; ``synchronous`` on the writer, ``query_only`` on the reader).
    :func:`map_driver_errors` is the one place where ``sqlite3`` exceptions (and
    undecodable stored rows) become the project's
    :class:`~msgin5g.errors.StorageError` tree; :func:`is_disk_full` and
    :func:`clone_error` help the writer report a failed batch to each waiter.

Why a module of its own:
    The writer thread, the reader connection and the schema migrations all open
    connections and map errors; none of them should own the rules.
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import msgspec

from msgin5g.errors import StorageConflict, StorageError, StorageUnavailable

__all__ = [
    "SYNCHRONOUS_MODES",
    "clone_error",
    "connect",
    "is_disk_full",
    "map_driver_errors",
]

SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
"""Accepted values of ``PRAGMA synchronous`` (``storage.synchronous``)."""

_SQLITE_FULL: Final = 13

# Primary SQLite result codes meaning "the database cannot be used right now".
_UNAVAILABLE_CODES: Final = frozenset(
    {
        3,  # SQLITE_PERM
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        _SQLITE_FULL,
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
    }
)
_UNAVAILABLE_TEXT: Final = (
    "database is locked",
    "database table is locked",
    "unable to open",
    "disk i/o error",
    "database or disk is full",
    "readonly database",
)


@contextmanager
def map_driver_errors() -> Iterator[None]:
    """Translate sqlite3 (and stored-data decoding) errors into StorageError.

    * locked/busy database, file that cannot be opened, I/O error, full disk,
      read-only file -> :class:`~msgin5g.errors.StorageUnavailable`;
    * constraint violation (``sqlite3.IntegrityError``) ->
      :class:`~msgin5g.errors.StorageConflict`;
    * any other ``sqlite3.Error`` or an undecodable stored row ->
      :class:`~msgin5g.errors.StorageError`.

    The driver exception is kept as ``__cause__``.

    Raises:
        StorageError: or a subclass, for every driver error raised in the block.
    """
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise StorageConflict(f"sqlite: {exc}") from exc
    except sqlite3.OperationalError as exc:
        if _is_unavailable(exc):
            raise StorageUnavailable(f"sqlite: {exc}") from exc
        raise StorageError(f"sqlite: {exc}") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"sqlite: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise StorageError(f"sqlite: undecodable stored row: {exc}") from exc


def _is_unavailable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _UNAVAILABLE_CODES:
        return True
    text = str(exc).lower()
    return any(fragment in text for fragment in _UNAVAILABLE_TEXT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or its driver cause) is SQLITE_FULL."""
    cause = exc.__cause__ if isinstance(exc.__cause__, sqlite3.Error) else exc
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) == _SQLITE_FULL:
        return True
    return "disk is full" in str(exc).lower()


def clone_error(exc: BaseException) -> BaseException:
    """A fresh instance of ``exc`` (same type, args and cause) for another waiter."""
    try:
        clone = type(exc)(*exc.args)
    except Exception:  # exotic constructor: share the instance
        return exc
    clone.__cause__ = exc.__cause__
    return clone


def connect(
    path: str,
    busy_timeout: float,
    *,
    synchronous: str | None = None,
    query_only: bool = False,
    cache_kib: int | None = None,
) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode with the backend's pragmas.

    Args:
        path: database file, ``":memory:"`` or a ``file:`` URI.
        busy_timeout: seconds to wait for another connection's lock.
        synchronous: the ``PRAGMA synchronous`` mode (writer only).
        query_only: refuse writes on this connection (reader).
        cache_kib: the page cache's limit in KiB (``PRAGMA cache_size``;
            None: SQLite's default, 2,000 KiB).

    Returns:
        The connection; the caller closes it.

    Raises:
        sqlite3.Error: the file cannot be opened (wrap the call in
            :func:`map_driver_errors`).
    """
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout,
        isolation_level=None,  # we issue BEGIN/COMMIT ourselves
        uri=path.startswith("file:"),
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if synchronous is not None:
            conn.execute(f"PRAGMA synchronous = {synchronous}")
        if query_only:
            conn.execute("PRAGMA query_only = 1")
        if cache_kib is not None:
            conn.execute(f"PRAGMA cache_size = {-int(cache_kib)}")
    except BaseException:
        conn.close()
        raise
    return conn
