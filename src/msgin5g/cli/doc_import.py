"""``msgin5g group import`` and ``msgin5g area import``: many groups or areas at once.

Input: JSON Lines (``-`` for stdin), one group or area per line, in the JSON
that ``group show`` / ``area show`` print, so an export by those commands can
be fed back:

* group: ``{"groupId": "g1", "members": ["ue1", "ue2"]}`` — creates the group
  or replaces its UE members (like ``group create``; ``valUeId`` members and
  the rest of a VAL group document set through ``/ss-gm/v1`` are kept; a
  ``valUeIds`` member in the line is ignored);
* area: ``{"areaId": "a1", "cells": [...], "trackingAreas": [...], "ues":
  [...], "ueMaySend": false, "allowedAs": [...]}`` — creates or replaces the
  area (like ``area create``).

A bad line (not JSON, a member of the wrong type, an invalid ID, an ID given
twice in the file) is reported on stderr as ``line N: reason`` and skipped;
the good lines are written. Exit status 1 if any line was bad. Progress on
stderr (:mod:`.progress`) on a terminal or with ``--progress``; the summary
line always.

The storage is opened once for the whole file; each group is one durable
write (its document is read first to keep its other content), so the job's
time is about one commit per line (``--set storage.synchronous=NORMAL``
trades durability against a crash of the machine for speed).
"""

import argparse
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import IO, TypeVar

import msgspec

from msgin5g.cli.common import server_config
from msgin5g.cli.progress import Progress
from msgin5g.config import DeliveryConfig
from msgin5g.errors import ConfigError
from msgin5g.model.messages import ServiceId
from msgin5g.runtime import SystemClock
from msgin5g.service.broadcast import BroadcastArea, BroadcastRegistry
from msgin5g.service.groups import Group, GroupRegistry
from msgin5g.storage import open_backend
from msgin5g.storage.base import Backend

__all__ = ["AreaLine", "GroupLine", "read_jsonl", "run_area_import", "run_group_import"]


class GroupLine(msgspec.Struct, rename="camel", frozen=True):
    """One line of ``group import``."""

    group_id: ServiceId
    members: list[ServiceId] = []
    val_ue_ids: list[str] = []


class AreaLine(msgspec.Struct, rename="camel", frozen=True):
    """One line of ``area import``."""

    area_id: ServiceId
    cells: list[str] = []
    tracking_areas: list[str] = []
    ues: list[ServiceId] = []
    ue_may_send: bool = False
    allowed_as: list[ServiceId] = []


L = TypeVar("L", GroupLine, AreaLine)


def read_jsonl(
    stream: IO[bytes], kind: type[L], key: Callable[[L], str]
) -> Iterator[tuple[int, L | str]]:
    """``(line number, parsed line or why it is bad)``; blank lines are skipped."""
    decoder = msgspec.json.Decoder(kind)
    seen: dict[str, int] = {}
    for number, raw in enumerate(stream, start=1):
        text = raw.removeprefix(b"\xef\xbb\xbf") if number == 1 else raw
        if not text.strip():
            continue
        try:
            entry = decoder.decode(text)
        except msgspec.ValidationError as exc:
            yield number, str(exc)
            continue
        except msgspec.DecodeError:
            yield number, "not a JSON object"
            continue
        first = seen.setdefault(key(entry), number)
        if first != number:
            yield number, f"duplicate ID {key(entry)!r} (first on line {first})"
            continue
        yield number, entry


def _open(path: str) -> tuple[IO[bytes], int | None]:
    if path == "-":
        return sys.stdin.buffer, None
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    size = stream.seek(0, 2)
    stream.seek(0)
    return stream, size


async def _run(
    args: argparse.Namespace,
    what: str,
    kind: type[L],
    key: Callable[[L], str],
    writer: Callable[[Backend], Callable[[L], Awaitable[None]]],
) -> int:
    config = server_config(args)
    started = time.monotonic()
    stream, total = _open(args.file)
    progress = Progress(what, total=total, forced=args.progress)
    written = bad = 0
    backend = open_backend(config.storage.url, synchronous=config.storage.synchronous)
    await backend.start()
    try:
        write = writer(backend)
        for number, entry in read_jsonl(stream, kind, key):
            if isinstance(entry, str):
                bad += 1
                progress.interrupt()
                print(f"line {number}: {entry}", file=sys.stderr)
                continue
            await write(entry)
            written += 1
            progress.update(written, stream.tell() if total else None)
        progress.finish(written, total)
    finally:
        await backend.aclose()
        if stream is not sys.stdin.buffer:
            stream.close()
    elapsed = time.monotonic() - started
    print(
        f"imported {written:,} {what}, {bad:,} bad lines, in {elapsed:.1f} s",
        file=sys.stderr,
    )
    return 1 if bad else 0


async def run_group_import(args: argparse.Namespace) -> int:
    """``msgin5g group import FILE``; exit status 1 if any line was bad."""

    def writer(backend: Backend) -> Callable[[GroupLine], Awaitable[None]]:
        registry = GroupRegistry(backend, SystemClock(), DeliveryConfig())

        async def write(entry: GroupLine) -> None:
            await registry.put(Group(entry.group_id, list(entry.members)))

        return write

    return await _run(args, "groups", GroupLine, lambda e: e.group_id, writer)


async def run_area_import(args: argparse.Namespace) -> int:
    """``msgin5g area import FILE``; exit status 1 if any line was bad."""

    def writer(backend: Backend) -> Callable[[AreaLine], Awaitable[None]]:
        registry = BroadcastRegistry(backend, SystemClock(), DeliveryConfig())

        async def write(entry: AreaLine) -> None:
            await registry.put(
                BroadcastArea(
                    entry.area_id,
                    cells=list(entry.cells),
                    tracking_areas=list(entry.tracking_areas),
                    ues=list(entry.ues),
                    ue_may_send=entry.ue_may_send,
                    allowed_as=list(entry.allowed_as),
                )
            )

        return write

    return await _run(args, "areas", AreaLine, lambda e: e.area_id, writer)
