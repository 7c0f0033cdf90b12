"""Broadcast Area administration on a storage backend (``msgin5g area …``).

Like ``msgin5g ue`` and ``msgin5g group`` these work directly on the storage
file, also while a server runs on it (SQLite WAL allows a second writer); a
running server sees a change within ``delivery.group_cache_ttl`` seconds (its
area lookup cache, :mod:`msgin5g.service.broadcast`).
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec

from msgin5g.config import DeliveryConfig
from msgin5g.runtime import SystemClock
from msgin5g.service.broadcast import BroadcastArea, BroadcastRegistry
from msgin5g.storage import open_backend

__all__ = [
    "assign_ues",
    "delete_area",
    "get_area",
    "list_areas",
    "put_area",
    "unassign_ues",
]


@asynccontextmanager
async def _areas(
    url: str, synchronous: str = "FULL"
) -> AsyncIterator[BroadcastRegistry]:
    backend = open_backend(url, synchronous=synchronous)
    await backend.start()
    try:
        yield BroadcastRegistry(backend, SystemClock(), DeliveryConfig())
    finally:
        await backend.aclose()


async def put_area(
    url: str, area: BroadcastArea, *, synchronous: str = "FULL"
) -> BroadcastArea:
    """Create or replace an area; returns it as stored."""
    async with _areas(url, synchronous) as areas:
        return await areas.put(area)


async def get_area(url: str, area_id: str) -> BroadcastArea | None:
    """One area, or None."""
    async with _areas(url) as areas:
        return await areas.get(area_id)


async def list_areas(url: str) -> list[BroadcastArea]:
    """Every area, by Broadcast Area ID."""
    async with _areas(url) as areas:
        return await areas.all()


async def delete_area(url: str, area_id: str) -> bool:
    """Delete an area; True if it existed."""
    async with _areas(url) as areas:
        return await areas.delete(area_id)


async def assign_ues(url: str, area_id: str, ues: list[str]) -> BroadcastArea | None:
    """Add operator-assigned UEs to an area; None if the area is unknown."""
    async with _areas(url) as areas:
        area = await areas.get(area_id)
        if area is None:
            return None
        return await areas.put(msgspec.structs.replace(area, ues=area.ues + ues))


async def unassign_ues(url: str, area_id: str, ues: list[str]) -> BroadcastArea | None:
    """Remove assigned UEs from an area; None if the area is unknown."""
    async with _areas(url) as areas:
        area = await areas.get(area_id)
        if area is None:
            return None
        kept = [ue for ue in area.ues if ue not in set(ues)]
        return await areas.put(msgspec.structs.replace(area, ues=kept))
