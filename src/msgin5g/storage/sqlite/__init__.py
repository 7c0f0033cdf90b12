"""SQLite storage backend: the embedded default (WAL + group commit).

What:
    :class:`SqliteBackend` implements every protocol of :mod:`msgin5g.storage.base`
    on one SQLite file. Queued messages and reports live in the ``queue`` table
    (the ``MSG``/``IMDN`` body as msgspec JSON, routing columns beside it; a
    fan-out stores its payload once in ``payloads``), registrations in
    ``registrations`` (msgpack), credentials in ``credentials``, expected report
    routes in ``report_routes``, generic records in ``records`` and the
    duplicate-detection records (originator, messageId) -> (fingerprint, answer)
    in ``dedup``, written in the same transaction as the message they guard.

Layout (each module imports only those below it):
    * :mod:`.backend`: :class:`SqliteBackend`, the async methods of the port;
    * :mod:`.writer`: the group-commit writer thread; :mod:`.reader`: the read
      connection;
    * :mod:`.migrations`: ordered schema steps v1 -> v2 -> ... (``PRAGMA
      user_version``); :mod:`.schema`: the DDL of the current version;
    * :mod:`.queue_ops`, :mod:`.record_ops`: the SQL, one ``fn(conn, *args)``
      per operation;
    * :mod:`.driver`: connections and :func:`map_driver_errors`, the one place
      ``sqlite3`` exceptions become :class:`~msgin5g.errors.StorageError`.

Durability semantics:
    The await of a write method returns only after the transaction holding that
    write committed. With ``synchronous=FULL`` (default) the WAL was fsynced, so
    the write survives a power loss; with ``NORMAL`` it survives a crash or
    ``kill -9`` of the process (the WAL is in the OS page cache) but may be lost on
    power loss. :meth:`SqliteBackend.remove_nowait` only schedules a delete; it is
    committed by the writer's next batch (normally within one commit time).
    Reads run on a second connection in a reader thread and therefore see every
    write whose await returned (WAL readers see all committed transactions).
    ``:memory:`` databases have a single connection, so reads go through the
    writer thread as well.
"""

from msgin5g.storage.sqlite.backend import SqliteBackend
from msgin5g.storage.sqlite.driver import map_driver_errors
from msgin5g.storage.sqlite.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "SqliteBackend", "map_driver_errors"]
