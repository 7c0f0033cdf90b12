"""``msgin5g ue import`` and ``msgin5g ue export``: provisioning in bulk.

What:
    :func:`read_lines` turns a CSV (header ``ueServiceId,secret`` or
    ``ueServiceId,digest``) or JSON Lines stream into ``(line, ID, digest)``
    rows and :class:`BadLine` reports, validating each line like the wire does
    (:data:`~msgin5g.model.messages.ServiceId`) and refusing an ID seen earlier
    in the file. :func:`run_import` writes the good rows in chunks of
    :data:`CHUNK` through :meth:`~msgin5g.storage.base.CredentialStore.put_credentials`
    (one chunk in flight while the next is read), :func:`run_export` writes
    ``ueServiceId,digest`` (never secrets: the server has none).

Why through the storage and not the server:
    Like ``msgin5g ue add`` this works on the storage itself, also while a
    server runs on it: SQLite in WAL mode takes a second writer process (each
    chunk is one short transaction; the server's writer waits at most
    ``busy_timeout`` for it). A running server looks up a UE it has not cached
    in storage, so an imported UE can register at once; an ID that tried to
    register *before* the import is cached as unknown for
    ``delivery.credential_cache_ttl`` seconds, and so is a replaced digest.

Imported by :mod:`msgin5g.cli.main` only when one of the commands runs.
"""

import argparse
import asyncio
import base64
import binascii
import csv
import hashlib
import hmac
import io
import itertools
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Final, NamedTuple

import msgspec

from msgin5g.cli.common import server_config
from msgin5g.cli.progress import Progress
from msgin5g.errors import ConfigError
from msgin5g.model.messages import ServiceId
from msgin5g.storage import open_backend
from msgin5g.storage.base import Backend

__all__ = ["CHUNK", "BadLine", "Row", "read_lines", "run_export", "run_import"]

CHUNK: Final = 10_000
"""Rows per :meth:`put_credentials` call of ``ue import``."""

_MAX_SECRET: Final = 1024
"""Longest accepted secret (characters)."""


class Row(NamedTuple):
    """A good line: its number, the UE Service ID and the digest to store."""

    line: int
    ue_service_id: str
    digest: bytes


class BadLine(NamedTuple):
    """A line that is not imported, and why."""

    line: int
    reason: str


class _Entry(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    """One line of the file, validated like the wire."""

    ue_service_id: ServiceId
    secret: str | None = None
    digest: str | None = None


_DECODE_LINE: Final = msgspec.json.Decoder(_Entry).decode
_COLUMNS: Final = {
    ("ueServiceId", "secret"),
    ("ueServiceId", "digest"),
}


def parse_digest(text: str) -> bytes:
    """The 32-byte SHA-256 digest from 64 hex digits or base64 (either alphabet).

    Raises:
        ValueError: neither form of 32 bytes.
    """
    text = text.strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 32:
        raise ValueError(
            "digest must be the SHA-256 of the PSK_TOKEN: 64 hex digits or base64 "
            "of 32 bytes"
        )
    return raw


def _digest(entry: _Entry) -> bytes:
    """The digest to store for a validated entry (raises ValueError)."""
    if entry.secret is not None and entry.digest is not None:
        raise ValueError("give either secret or digest, not both")
    if entry.digest is not None:
        return parse_digest(entry.digest)
    if not entry.secret:
        raise ValueError("secret is missing or empty")
    if len(entry.secret) > _MAX_SECRET:
        raise ValueError(f"secret is longer than {_MAX_SECRET} characters")
    return _stored_digest(entry.secret, entry.ue_service_id)


def _stored_digest(secret: str, ue_service_id: str) -> bytes:
    """``credential_digest(psk_token(secret, ue_service_id))``, ~2x faster.

    One-shot ``hmac.digest`` (C) instead of an ``hmac.HMAC`` object per line:
    the largest cost of importing secrets. Same bytes (tests compare them).
    """
    mac = hmac.digest(secret.encode(), ue_service_id.encode(), "sha256")
    return hashlib.sha256(base64.b64encode(mac)).digest()


_BAD_ID: Final = (
    "ueServiceId must be a string of 1-255 characters without '/', '+', '#' "
    "or control characters"
)


def _short(exc: Exception) -> str:
    """A one-line reason from a validation error (no control characters)."""
    text = str(exc).replace("`", "")
    if text.endswith("at $.ueServiceId") and "missing" not in text:
        return _BAD_ID
    return "".join(c if c.isprintable() else "?" for c in text)[:200]


def _csv_entries(lines: Iterable[str]) -> Iterator[tuple[int, _Entry | str]]:
    reader = csv.reader(lines, strict=True)
    header: list[str] = []
    try:
        while not header:
            header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ConfigError(
            f"line {reader.line_num}: unreadable CSV header: {exc}"
        ) from None
    first = reader.line_num
    columns = tuple(name.strip().lstrip("\ufeff") for name in header)
    if columns not in _COLUMNS:
        raise ConfigError(
            f"line {first}: the CSV header must be ueServiceId,secret or "
            f"ueServiceId,digest (got {_short(ValueError(','.join(columns)))})"
        )
    key = columns[1]
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, f"unreadable CSV: {_short(exc)}"
            continue
        line = reader.line_num
        if not fields:
            continue
        if len(fields) != 2:
            yield line, f"expected 2 fields (ueServiceId,{key}), got {len(fields)}"
            continue
        try:
            entry = msgspec.convert({"ueServiceId": fields[0], key: fields[1]}, _Entry)
        except msgspec.ValidationError as exc:
            yield line, _short(exc)
            continue
        yield line, entry


def _jsonl_entries(lines: Iterable[str]) -> Iterator[tuple[int, _Entry | str]]:
    for line, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            yield line, _DECODE_LINE(text)
        except msgspec.DecodeError as exc:
            yield line, _short(exc)


def read_lines(stream: IO[str], fmt: str | None = None) -> Iterator[Row | BadLine]:
    """The rows and bad lines of a CSV or JSON Lines stream, in line order.

    Args:
        stream: text stream (a file opened with ``newline=""`` for CSV).
        fmt: ``"csv"``, ``"jsonl"``, or None to detect from the first
            non-empty line (``{`` starts JSON Lines).

    Yields:
        A :class:`Row` per good line; a :class:`BadLine` for each line that is
        invalid or repeats an ID of an earlier line (the first one counts).

    Raises:
        ConfigError: a CSV file whose header is not one of the two accepted.
    """
    head: list[str] = []
    for text in stream:
        head.append(text)
        if text.strip():
            break
    if fmt is None:
        fmt = "jsonl" if "".join(head).lstrip().startswith("{") else "csv"
    lines = itertools.chain(head, stream)
    entries = _csv_entries(lines) if fmt == "csv" else _jsonl_entries(lines)
    seen: dict[str, int] = {}
    for line, entry in entries:
        if isinstance(entry, str):
            yield BadLine(line, entry)
            continue
        try:
            digest = _digest(entry)
        except ValueError as exc:
            yield BadLine(line, str(exc))
            continue
        earlier = seen.setdefault(entry.ue_service_id, line)
        if earlier != line:
            yield BadLine(
                line,
                f"duplicate ueServiceId {entry.ue_service_id!r} (first on line {earlier})",
            )
            continue
        yield Row(line, entry.ue_service_id, digest)


class _Importer:
    """Streams rows into the backend, one chunk in flight, and counts."""

    def __init__(self, backend: Backend, *, replace: bool, progress: Progress) -> None:
        self.backend = backend
        self.replace = replace
        self.progress = progress
        self.imported = 0
        self.replaced = 0
        self.bad = 0

    def report(self, bad: BadLine) -> None:
        self.bad += 1
        self.progress.interrupt()
        print(f"line {bad.line}: {bad.reason}", file=sys.stderr)

    async def write(self, chunk: list[Row]) -> None:
        existing = await self.backend.put_credentials(
            [(row.ue_service_id, row.digest) for row in chunk], replace=self.replace
        )
        self.imported += len(chunk)
        if not existing:
            return
        if self.replace:
            self.replaced += len(existing)
            return
        self.imported -= len(existing)
        lines = {row.ue_service_id: row.line for row in chunk}
        for ue in existing:
            self.report(
                BadLine(
                    lines[ue],
                    f"ueServiceId {ue!r} is already provisioned (--force replaces it)",
                )
            )


async def _import(
    backend: Backend, stream: IO[str], args: argparse.Namespace, total: int | None
) -> _Importer:
    progress = Progress("import", total=total, forced=getattr(args, "progress", False))
    importer = _Importer(backend, replace=args.force, progress=progress)
    raw = getattr(stream, "buffer", None) if total else None  # bytes read so far
    chunk: list[Row] = []
    pending: asyncio.Task[None] | None = None
    lines = 0
    for item in read_lines(stream, args.format):
        lines += 1
        if isinstance(item, BadLine):
            importer.report(item)
            continue
        chunk.append(item)
        if len(chunk) >= CHUNK:
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(importer.write(chunk))
            chunk = []
            progress.update(lines, raw.tell() if raw is not None else None)
            await asyncio.sleep(0)  # let the chunk reach the writer
    if pending is not None:
        await pending
    if chunk:
        await importer.write(chunk)
    progress.finish(lines, total)
    return importer


def _open_input(path: str) -> tuple[IO[str], int | None]:
    """The input stream (UTF-8, a BOM skipped) and its size, if a regular file."""
    if path == "-":
        return io.TextIOWrapper(
            sys.stdin.buffer, encoding="utf-8-sig", newline=""
        ), None
    try:
        stream = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return stream, os.fstat(stream.fileno()).st_size


def _open_output(path: str) -> IO[str]:
    if path == "-":
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


async def run_import(args: argparse.Namespace) -> int:
    """``msgin5g ue import FILE``; exit status 1 if any line was bad."""
    config = server_config(args)
    started = time.monotonic()
    stream, total = _open_input(args.file)
    backend = open_backend(config.storage.url, synchronous=config.storage.synchronous)
    await backend.start()
    try:
        with stream:
            importer = await _import(backend, stream, args, total)
    finally:
        await backend.aclose()
    elapsed = time.monotonic() - started
    replaced = f" ({importer.replaced:,} replaced)" if importer.replaced else ""
    print(
        f"imported {importer.imported:,} UEs{replaced}, {importer.bad:,} bad lines, "
        f"in {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 1 if importer.bad else 0


async def run_export(args: argparse.Namespace) -> int:
    """``msgin5g ue export [FILE]``: ``ueServiceId,digest`` (hex), sorted by ID."""
    config = server_config(args)
    backend = open_backend(config.storage.url)
    await backend.start()
    try:
        credentials = await backend.load_credentials()
    finally:
        await backend.aclose()
    out = _open_output(args.file)
    try:
        if args.format == "jsonl":
            for ue, digest in credentials:
                out.write(
                    json.dumps({"ueServiceId": ue, "digest": digest.hex()}) + "\n"
                )
        else:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(("ueServiceId", "digest"))
            writer.writerows((ue, digest.hex()) for ue, digest in credentials)
        out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {len(credentials):,} UEs", file=sys.stderr)
    return 0
