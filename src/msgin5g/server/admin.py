"""Provisioning on a storage backend (``msgin5g ue …``, ``msgin5g group …``).

These work directly on the storage file, also while a server runs on it
(SQLite WAL allows a second writer process); a running server sees a new UE at
once and a removed UE within ``delivery.credential_cache_ttl`` seconds, and a
group change within ``delivery.group_cache_ttl`` seconds (changes through the
server's ``/ss-gm/v1`` API take effect at once, docs/groups.md).
"""

from msgin5g.config import DeliveryConfig
from msgin5g.errors import StorageConflict
from msgin5g.model.credentials import credential_digest, generate_secret, psk_token
from msgin5g.runtime import SystemClock
from msgin5g.service.groups import Group, GroupDocument, GroupRegistry
from msgin5g.storage import open_backend
from msgin5g.storage.base import Backend

__all__ = [
    "group_documents",
    "list_groups",
    "list_ues",
    "provision_ue",
    "put_group",
    "remove_group_members",
    "remove_ue",
]


async def provision_ue(
    url: str,
    ue_service_id: str,
    secret: str | None = None,
    *,
    synchronous: str = "FULL",
    force: bool = True,
) -> str:
    """Provision a UE; returns the secret (generated when not given).

    Raises:
        StorageConflict: the UE is already provisioned and ``force`` is False.
    """
    secret = secret or generate_secret()
    backend = open_backend(url, synchronous=synchronous)
    await backend.start()
    try:
        if not force and await backend.get_credential(ue_service_id) is not None:
            raise StorageConflict(
                f"{ue_service_id} is already provisioned; its secret is unchanged"
            )
        digest = credential_digest(psk_token(secret, ue_service_id))
        await backend.put_credential(ue_service_id, digest)
    finally:
        await backend.aclose()
    return secret


async def remove_ue(url: str, ue_service_id: str) -> bool:
    """Remove a UE's credential and registration; True if it was provisioned."""
    backend = open_backend(url)
    await backend.start()
    try:
        existed = await backend.delete_credential(ue_service_id)
        await backend.delete_registration(ue_service_id)
    finally:
        await backend.aclose()
    return existed


async def list_ues(url: str) -> list[tuple[str, bool]]:
    """Provisioned UE Service IDs with whether each is currently registered."""
    backend = open_backend(url)
    await backend.start()
    try:
        registered = {r.ue_service_id for r in await backend.load_registrations()}
        return [(ue, ue in registered) for ue in await backend.list_credentials()]
    finally:
        await backend.aclose()


async def put_group(
    url: str, group_id: str, members: list[str], *, add: bool
) -> list[str]:
    """Create/replace a group's UE members, or add some; returns them.

    The group's other content (``valUeId`` members, description, configuration
    set through ``/ss-gm/v1``) is kept.
    """
    backend = open_backend(url)
    await backend.start()
    try:
        registry = _groups(backend)
        current = await registry.document(group_id) if add else None
        merged = (current.members if current else []) + members
        await registry.put(Group(group_id, merged))
        stored = await registry.document(group_id)
        return list(stored.members) if stored else []
    finally:
        await backend.aclose()


async def remove_group_members(url: str, group_id: str, members: list[str]) -> bool:
    """Remove UE members (the whole group when ``members`` is empty)."""
    backend = open_backend(url)
    await backend.start()
    try:
        registry = _groups(backend)
        if not members:
            return await registry.delete(group_id)
        current = await registry.document(group_id)
        if current is None:
            return False
        kept = [m for m in current.members if m not in members]
        await registry.put(Group(group_id, kept))
        return True
    finally:
        await backend.aclose()


async def list_groups(url: str) -> list[tuple[str, list[str]]]:
    """Every group with its UE members (``valUserId``s)."""
    return [(d.group_id, list(d.members)) for d in await group_documents(url)]


async def group_documents(url: str, group_id: str | None = None) -> list[GroupDocument]:
    """Every stored VAL group document (or the one of ``group_id``), by ID."""
    backend = open_backend(url)
    await backend.start()
    try:
        return await _groups(backend).documents(group_id=group_id)
    finally:
        await backend.aclose()


def _groups(backend: Backend) -> GroupRegistry:
    return GroupRegistry(backend, SystemClock(), DeliveryConfig())
