"""SQL of the keyed stores: credentials, registrations and generic records.

What:
    Every ``op_*`` function runs as ``fn(conn, *args)`` like those of
    :mod:`.queue_ops`; together they implement
    :class:`~msgin5g.storage.base.CredentialStore`,
    :class:`~msgin5g.storage.base.RegistrationStore` and
    :class:`~msgin5g.storage.base.RecordStore`. Bodies arrive encoded (msgpack,
    by the event loop); reads of records return the stored bytes, decoded by the
    caller with :func:`msgin5g.storage.rules.decode_records`.
"""

import sqlite3
from collections.abc import Sequence
from typing import Final

import msgspec

from msgin5g.model.registry import UERegistration

__all__ = [
    "PUT_REGISTRATION_SQL",
    "REG_ENCODER",
    "op_delete_credential",
    "op_delete_record",
    "op_delete_registration",
    "op_get_credential",
    "op_get_credentials",
    "op_get_record",
    "op_list_credentials",
    "op_load_credentials",
    "op_load_records",
    "op_load_registrations",
    "op_put_credential",
    "op_put_credentials",
    "op_put_record",
    "op_put_registration",
]

REG_ENCODER: Final = msgspec.msgpack.Encoder()
_REG_DECODER: Final = msgspec.msgpack.Decoder(UERegistration)

# ---------------------------------------------------------------- credentials


def op_put_credential(conn: sqlite3.Connection, ue: str, digest: bytes) -> None:
    """Insert or replace a credential digest."""
    conn.execute(
        "INSERT INTO credentials(ue_service_id, digest) VALUES (?, ?) "
        "ON CONFLICT(ue_service_id) DO UPDATE SET digest = excluded.digest",
        (ue, digest),
    )


_UPSERT_CREDENTIAL: Final = (
    "INSERT INTO credentials(ue_service_id, digest) VALUES (?, ?) "
    "ON CONFLICT(ue_service_id) DO UPDATE SET digest = excluded.digest"
)
_CREATE_CREDENTIAL: Final = (
    "INSERT INTO credentials(ue_service_id, digest) VALUES (?, ?) "
    "ON CONFLICT(ue_service_id) DO NOTHING"
)
_IN_MAX: Final = 500
"""IDs per ``IN (...)`` lookup (SQLite's parameter limit is 999 on old builds)."""


def op_get_credentials(conn: sqlite3.Connection, ues: list[str]) -> dict[str, bytes]:
    """The digests of the IDs of ``ues`` that are provisioned."""
    found: dict[str, bytes] = {}
    for start in range(0, len(ues), _IN_MAX):
        part = ues[start : start + _IN_MAX]
        marks = ",".join("?" * len(part))
        for ue, digest in conn.execute(
            f"SELECT ue_service_id, digest FROM credentials WHERE ue_service_id IN ({marks})",  # noqa: S608
            part,
        ):
            found[ue] = bytes(digest)
    return found


def op_load_credentials(conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
    """Every ``(ue_service_id, digest)``, sorted by ID."""
    rows = conn.execute(
        "SELECT ue_service_id, digest FROM credentials ORDER BY ue_service_id"
    ).fetchall()
    return [(row[0], bytes(row[1])) for row in rows]


def op_put_credentials(
    conn: sqlite3.Connection, rows: Sequence[tuple[str, bytes]], replace: bool
) -> list[str]:
    """Insert many digests in one ``executemany``; returns the IDs already present.

    With ``replace`` those IDs get the new digest, without it they keep theirs.
    """
    existing: list[str] = []
    for start in range(0, len(rows), _IN_MAX):
        part = [ue for ue, _ in rows[start : start + _IN_MAX]]
        marks = ",".join("?" * len(part))
        found = {
            row[0]
            for row in conn.execute(
                f"SELECT ue_service_id FROM credentials WHERE ue_service_id IN ({marks})",  # noqa: S608
                part,
            )
        }
        existing.extend(ue for ue in part if ue in found)
    conn.executemany(_UPSERT_CREDENTIAL if replace else _CREATE_CREDENTIAL, rows)
    return existing


def op_get_credential(conn: sqlite3.Connection, ue: str) -> bytes | None:
    """The digest of ``ue``, or None."""
    row = conn.execute(
        "SELECT digest FROM credentials WHERE ue_service_id = ?", (ue,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def op_delete_credential(conn: sqlite3.Connection, ue: str) -> bool:
    """Delete a credential; True if it existed."""
    cur = conn.execute("DELETE FROM credentials WHERE ue_service_id = ?", (ue,))
    return cur.rowcount > 0


def op_list_credentials(conn: sqlite3.Connection) -> list[str]:
    """Every provisioned UE Service ID, sorted."""
    rows = conn.execute(
        "SELECT ue_service_id FROM credentials ORDER BY ue_service_id"
    ).fetchall()
    return [row[0] for row in rows]


# ---------------------------------------------------------------- registrations


PUT_REGISTRATION_SQL: Final = (
    "INSERT INTO registrations(ue_service_id, body) VALUES (?, ?) "
    "ON CONFLICT(ue_service_id) DO UPDATE SET body = excluded.body"
)
"""The registration upsert (the writer runs a run of them as one ``executemany``)."""


def op_put_registration(conn: sqlite3.Connection, ue: str, body: bytes) -> None:
    """Insert or replace a registration (``body``: msgpack ``UERegistration``)."""
    conn.execute(PUT_REGISTRATION_SQL, (ue, body))


def op_delete_registration(conn: sqlite3.Connection, ue: str) -> bool:
    """Delete a registration; True if it existed."""
    cur = conn.execute("DELETE FROM registrations WHERE ue_service_id = ?", (ue,))
    return cur.rowcount > 0


def op_load_registrations(conn: sqlite3.Connection) -> list[UERegistration]:
    """Every registration, by UE Service ID."""
    rows = conn.execute(
        "SELECT body FROM registrations ORDER BY ue_service_id"
    ).fetchall()
    return [_REG_DECODER.decode(row[0]) for row in rows]


# ---------------------------------------------------------------- records


def op_put_record(conn: sqlite3.Connection, kind: str, key: str, body: bytes) -> None:
    """Insert or replace a record."""
    conn.execute(
        "INSERT INTO records(kind, key, body) VALUES (?, ?, ?) "
        "ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body",
        (kind, key, body),
    )


def op_get_record(conn: sqlite3.Connection, kind: str, key: str) -> bytes | None:
    """The stored body of a record, or None."""
    row = conn.execute(
        "SELECT body FROM records WHERE kind = ? AND key = ?", (kind, key)
    ).fetchone()
    return None if row is None else bytes(row[0])


def op_delete_record(conn: sqlite3.Connection, kind: str, key: str) -> bool:
    """Delete a record; True if it existed."""
    cur = conn.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
    return cur.rowcount > 0


def op_load_records(conn: sqlite3.Connection, kind: str) -> list[bytes]:
    """The bodies of every record of ``kind``, by key."""
    rows = conn.execute(
        "SELECT body FROM records WHERE kind = ? ORDER BY key", (kind,)
    ).fetchall()
    return [bytes(row[0]) for row in rows]
