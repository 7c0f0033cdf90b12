"""The DTLS pre-shared keys, encrypted at rest (docs/security-dtls.md).

Why a separate store: the server keeps only SHA-256 of each ``PSK_TOKEN``
(:mod:`msgin5g.model.credentials`), which is enough to check a token a UE
*sends* but not to run a DTLS-PSK handshake, where both ends must hold the key
itself. So a UE that is to use ``coaps://`` opts in at provisioning
(``msgin5g ue add ID --dtls``): its token is sealed with AES-256-GCM under a
server key and stored here; every other UE stays digest-only. The DTLS key is
a prefix of the token (``coap.dtls_key_length``, :mod:`.secure`).

Layout:
    * the **key file** (``coap.psk_key_file``, default: the store's path +
      ``.key``): 32 random octets, hex, created with mode 0600; the server
      refuses to use one that group or others can read. Keep it off the
      database's backups (a stolen store without it reveals nothing).
    * the **store** (``coap.psk_store``): an SQLite file with one row per
      identity: a random 96-bit nonce and the sealed token, with the identity
      as associated data (a row copied to another identity does not open).

Reads are synchronous on purpose: Mbed TLS asks for the key inside a
handshake step, which cannot await. A read is one primary-key lookup and one
AES-GCM open (tens of microseconds); nothing is cached, so decrypted keys live
only for the handshake that needs them.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
from pathlib import Path

from mbedtls.cipher import AES, Mode
from mbedtls.exceptions import TLSError

from msgin5g.errors import ConfigError

__all__ = ["PskKeyStore", "key_file_for"]

_KEY_OCTETS = 32
_NONCE_OCTETS = 12
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dtls_psk ("
    "identity TEXT PRIMARY KEY, nonce BLOB NOT NULL, sealed BLOB NOT NULL, "
    "tag BLOB NOT NULL) WITHOUT ROWID"
)


def key_file_for(store: str, key_file: str = "") -> Path:
    """The key file of ``store``: ``key_file`` if given, else ``store`` + ``.key``."""
    return Path(key_file) if key_file else Path(store + ".key")


def _load_key(path: Path, *, create: bool) -> bytes:
    """Read (or create) the server key; refuse a file others can read."""
    if not path.exists():
        if not create:
            raise ConfigError(f"DTLS key file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(_KEY_OCTETS) + "\n")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"DTLS key file {path} is readable by group or others "
            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it"
        )
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) != _KEY_OCTETS:
        raise ConfigError(f"DTLS key file {path}: expected {_KEY_OCTETS} octets in hex")
    return key


class PskKeyStore:
    """Sealed ``PSK_TOKEN`` keys by PSK identity (the UE Service ID).

    Args:
        path: the SQLite file (created when missing).
        key_file: the server key (see :func:`key_file_for`).
        create: create a missing key file (False: a missing one is an error).

    Raises:
        ConfigError: the key file is missing, malformed or too open.
        OSError: the store cannot be opened.
    """

    def __init__(self, path: str, key_file: str = "", *, create: bool = True) -> None:
        self.path = path
        self._key = _load_key(key_file_for(path, key_file), create=create)
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(f"DTLS key store {path}: {exc}") from exc

    def __repr__(self) -> str:
        return f"PskKeyStore({self.path!r})"  # never the key

    def put(self, identity: str, psk: bytes) -> None:
        """Store (or replace) the key of ``identity``."""
        nonce = secrets.token_bytes(_NONCE_OCTETS)
        sealed, tag = AES.new(self._key, Mode.GCM, nonce, identity.encode()).encrypt(
            psk
        )
        self._db.execute(
            "INSERT OR REPLACE INTO dtls_psk VALUES (?, ?, ?, ?)",
            (identity, nonce, sealed, tag),
        )

    def remove(self, identity: str) -> bool:
        """Forget the key of ``identity``; False if it had none."""
        cursor = self._db.execute(
            "DELETE FROM dtls_psk WHERE identity = ?", (identity,)
        )
        return cursor.rowcount > 0

    def get(self, identity: str) -> bytes | None:
        """The key of ``identity``, or None (unknown, or sealed under another key)."""
        row = self._db.execute(
            "SELECT nonce, sealed, tag FROM dtls_psk WHERE identity = ?", (identity,)
        ).fetchone()
        if row is None:
            return None
        nonce, sealed, tag = row
        try:
            return bytes(
                AES.new(self._key, Mode.GCM, nonce, identity.encode()).decrypt(
                    sealed, tag
                )
            )
        except TLSError:
            return None

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM dtls_psk").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()
