"""MSGin5G groups hosted by the server (TS 23.554 §8.7.4; digest §3.16.2).

PROJECT CHOICE for this release: the group store is local (records of kind
``"group"`` in the server's storage), managed with ``msgin5g group …``; the
TS 29.549 SEAL group management API and resolution through an external SEAL
server are the next step (issue #4). Lookups go to storage and are cached for
``delivery.group_cache_ttl`` seconds (GROUP_CACHE_TTL), so changes made by the
CLI in another process reach a running server within that time.

Policy (PROJECT CHOICE): only members may send to a group; the originator gets
no copy of its own group message.
"""

import msgspec

from msgin5g.config import DeliveryConfig
from msgin5g.service.ports import Clock
from msgin5g.storage.base import Backend

__all__ = ["Group", "GroupRegistry"]

_KIND = "group"


class Group(msgspec.Struct, frozen=True):
    """A group: its Group Service ID and member UE Service IDs."""

    group_id: str
    members: list[str] = []


class GroupRegistry:
    """Group lookups with a short cache over the durable store."""

    def __init__(self, backend: Backend, clock: Clock, config: DeliveryConfig) -> None:
        self._backend = backend
        self._clock = clock
        self._ttl = config.group_cache_ttl
        self._cache: dict[str, tuple[float, Group | None]] = {}

    async def get(self, group_id: str) -> Group | None:
        """The group, or None if unknown."""
        now = self._clock.now()
        cached = self._cache.get(group_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        group = await self._backend.get_record(_KIND, group_id, Group)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[group_id] = (now + self._ttl, group)
        return group

    async def put(self, group: Group) -> None:
        """Create or replace a group (members de-duplicated, order kept)."""
        members = list(dict.fromkeys(group.members))
        await self._backend.put_record(
            _KIND, group.group_id, Group(group.group_id, members)
        )
        self._cache.pop(group.group_id, None)

    async def delete(self, group_id: str) -> bool:
        """Remove a group; True if it existed."""
        self._cache.pop(group_id, None)
        return await self._backend.delete_record(_KIND, group_id)

    async def all(self) -> list[Group]:
        """Every group, by Group Service ID."""
        return await self._backend.load_records(_KIND, Group)
