"""A durable outbox in one SQLite file (the gateway's store and forward).

Rows are grouped in named queues (``sms`` towards the SMSC, ``uplink`` towards
the MSGin5G Server, ``mqtt`` towards devices). A row is written (committed)
before the gateway acknowledges what it stands for, and removed only once the
next hop acknowledged it; a row that failed for now gets a ``not_before`` time
(back-off) and is picked again later. ``kv`` keeps small facts that must
survive a restart (SMSC message id → report route, MSISDN → last originator).

The file runs in WAL mode with ``synchronous=NORMAL``: a committed row
survives the gateway process being killed (``kill -9``); an operating system
crash may lose the last commits (say so in the operations docs). Calls are
synchronous and short (one small transaction each); the gateways call them
from the event loop.
"""

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

__all__ = ["Outbox", "Row"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_ready ON outbox (queue, not_before, id);
CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT NOT NULL, expires REAL);
"""


class Row:
    """One queued item: its id, decoded body and attempts so far."""

    __slots__ = ("attempts", "body", "id")

    def __init__(self, id: int, body: dict[str, Any], attempts: int) -> None:
        self.id = id
        self.body = body
        self.attempts = attempts


class Outbox:
    """The outbox and key-value file of one gateway."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def put(self, queue: str, body: dict[str, Any]) -> int:
        """Queue ``body`` durably; returns the row id."""
        cursor = self._db.execute(
            "INSERT INTO outbox (queue, body) VALUES (?, ?)",
            (queue, json.dumps(body, separators=(",", ":"))),
        )
        return int(cursor.lastrowid or 0)

    def ready(
        self, queue: str, *, exclude: set[int], limit: int, now: float | None = None
    ) -> list[Row]:
        """Up to ``limit`` rows of ``queue`` due now, oldest first, not in ``exclude``."""
        now = time.time() if now is None else now
        rows = self._db.execute(
            "SELECT id, body, attempts FROM outbox WHERE queue = ? AND not_before <= ?"
            " ORDER BY id LIMIT ?",
            (queue, now, limit + len(exclude)),
        ).fetchall()
        found = [Row(r[0], json.loads(r[1]), r[2]) for r in rows if r[0] not in exclude]
        return found[:limit]

    def get(self, row_id: int) -> dict[str, Any] | None:
        """The body of a row, or None once it is gone."""
        row = self._db.execute(
            "SELECT body FROM outbox WHERE id = ?", (row_id,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def next_due(self, queue: str) -> float | None:
        """When the earliest row of ``queue`` becomes due (None: empty)."""
        row = self._db.execute(
            "SELECT MIN(not_before) FROM outbox WHERE queue = ?", (queue,)
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def delay(self, row_id: int, until: float) -> None:
        """Try ``row_id`` again not before ``until`` (one more attempt counted)."""
        self._db.execute(
            "UPDATE outbox SET not_before = ?, attempts = attempts + 1 WHERE id = ?",
            (until, row_id),
        )

    def remove(self, row_id: int) -> None:
        """Forget a row (its next hop acknowledged it)."""
        self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def count(self, queue: str | None = None) -> int:
        """Rows queued (in ``queue``, or all)."""
        if queue is None:
            row = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE queue = ?", (queue,)
            ).fetchone()
        return int(row[0])

    # small durable facts ---------------------------------------------------------

    def remember(self, key: str, value: dict[str, Any], ttl: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl`` seconds."""
        self._db.execute(
            "INSERT OR REPLACE INTO kv (k, v, expires) VALUES (?, ?, ?)",
            (key, json.dumps(value, separators=(",", ":")), time.time() + ttl),
        )

    def recall(self, key: str, *, forget: bool = False) -> dict[str, Any] | None:
        """The live value under ``key`` (and remove it with ``forget``)."""
        row = self._db.execute(
            "SELECT v FROM kv WHERE k = ? AND expires > ?", (key, time.time())
        ).fetchone()
        if forget:
            self._db.execute("DELETE FROM kv WHERE k = ?", (key,))
        return None if row is None else dict(json.loads(row[0]))

    def take_expired(self, prefix: str, now: float) -> list[dict[str, Any]]:
        """Remove and return the expired facts whose key starts with ``prefix``."""
        pattern = prefix.replace("%", "").replace("_", "") + "%"
        rows = self._db.execute(
            "SELECT k, v FROM kv WHERE k LIKE ? AND expires <= ?", (pattern, now)
        ).fetchall()
        for key, _ in rows:
            self._db.execute("DELETE FROM kv WHERE k = ?", (key,))
        return [dict(json.loads(v)) for _, v in rows]

    def purge(self) -> None:
        """Drop expired facts."""
        self._db.execute("DELETE FROM kv WHERE expires <= ?", (time.time(),))
