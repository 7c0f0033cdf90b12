"""MSGin5G groups as SEAL VAL groups (TS 23.554 §8.7.4; TS 29.549; digest §5).

A Group Service ID is a SEAL VAL group ID; its members are VAL user IDs (UE
Service IDs) or VAL UE IDs (MSGin5G UE IDs). :class:`GroupRegistry` answers the
one question group messaging asks, ``get(group_id) -> Group | None`` (the member
UE Service IDs), from one of two places (digest §5.2):

* **hosted** (``seal.gm_url`` empty, the default): the server's own store, VAL
  group documents kept as records of kind ``"group"`` keyed by ``valGroupId``
  and managed through ``{apiRoot}/ss-gm/v1`` (TS 29.549 SS_GroupManagement,
  ``transports/rest/ss_gm.py``) or ``msgin5g group …``;
* **external**: a :class:`GroupSource` asking a SEAL group management server
  (``transports/rest/seal_client.py``), wired by ``server/app.py``.

PROJECT CHOICES (docs/groups.md):

* The group document id (``groupDocId``) is the ``valGroupId`` itself: one
  document per VAL group, so a second ``POST`` of the same ``valGroupId`` is
  refused and the records written by ``msgin5g group`` before the SEAL API
  existed (``{group_id, members}``) are documents as they are.
* A document whose ``valServiceIds`` is absent serves every VAL service; one
  with ``valServiceIds`` serves only those (the MSGin5G Server's own is
  ``seal.val_service_id``), in both modes.
* A ``valUeId`` member is an MSGin5G UE ID: it stands for every UE Service ID
  currently registered with that ``msgin5gUeId`` (the REG profile), looked up
  when the group is resolved. A ``valUserId`` is a UE Service ID as it is.
* Resolutions are cached for ``delivery.group_cache_ttl`` seconds, unknown
  groups too. Changes through this registry (the hosted API) drop the entry at
  once; changes by another process (the CLI, another node) are seen within the
  TTL. When the external server cannot be asked, a stale entry is used (and
  kept another TTL); without one the lookup raises
  :class:`~msgin5g.errors.RecipientUnreachable`.

Sending policy lives in the messaging service: only members may send from a
UE, any registered AS may send; the originator gets no copy unless
``delivery.group_include_originator``.
"""

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from typing import Protocol

import msgspec

from msgin5g.config import DeliveryConfig, SealConfig
from msgin5g.errors import InvalidRequest, NotAuthorized, RecipientUnreachable
from msgin5g.model.registry import UERegistration
from msgin5g.runtime import Clock
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.base import Backend

__all__ = [
    "Group",
    "GroupDocument",
    "GroupRegistry",
    "GroupSource",
    "RegistrationIndex",
    "ValTarget",
    "may_manage",
    "serves",
]

log = logging.getLogger(__name__)

_KIND = "group"
_MAX_CACHE = 100_000


class Group(msgspec.Struct, frozen=True):
    """A resolved group: its Group Service ID and member UE Service IDs."""

    group_id: str
    members: list[str] = []


class ValTarget(msgspec.Struct, frozen=True, omit_defaults=True):
    """A ``ValTargetUe``: exactly one of a VAL user ID or a VAL UE ID."""

    val_user_id: str | None = None
    val_ue_id: str | None = None


class GroupDocument(msgspec.Struct, frozen=True, omit_defaults=True):
    """A VAL group document (``VALGroupDocument``) as stored.

    Attributes:
        group_id: ``valGroupId`` = Group Service ID = ``groupDocId``.
        members: the VAL user IDs (UE Service IDs) among the members; the whole
            record of a group written before the SEAL API (read-only legacy).
        targets: every member in order; empty in legacy records, where
            ``members`` is the list.
        description: ``grpDesc``.
        configuration: ``valGrpConf``.
        service_ids: ``valServiceIds``; None = absent (every VAL service).
        service_info: ``valSvcInf``.
        extra: the document's other members (``locInfo``, ``addLocInfo``,
            ``valSvcAreaId``, ``extGrpId``, ``com5GLanType``, unknown ones) as JSON
            text, written and read by the REST codec only (opaque here).
        owner: the OAuth2 client id that created it through the API; None for
            documents made with OAuth2 off or by ``msgin5g group`` (then only
            an operator client may manage it while OAuth2 is on). Kept by
            every change.
    """

    group_id: str
    members: list[str] = []
    targets: list[ValTarget] = []
    description: str | None = None
    configuration: str | None = None
    service_ids: list[str] | None = None
    service_info: str | None = None
    extra: str = ""
    owner: str | None = None

    @property
    def member_targets(self) -> list[ValTarget]:
        """Every member, in order (legacy records: their UE Service IDs)."""
        if self.targets:
            return list(self.targets)
        return [ValTarget(val_user_id=m) for m in self.members]

    def with_targets(self, targets: Iterable[ValTarget]) -> "GroupDocument":
        """A copy with these members (duplicates dropped, order kept)."""
        unique = list(dict.fromkeys(targets))
        users = [t.val_user_id for t in unique if t.val_user_id is not None]
        return msgspec.structs.replace(self, members=users, targets=unique)


def may_manage(document: GroupDocument, client: str | None, operator: bool) -> bool:
    """Whether an API client may read or change a hosted document.

    ``client`` None (OAuth2 off) and operators may manage every document;
    any other client only the documents it created.
    """
    return client is None or operator or document.owner == client


def serves(document: GroupDocument, val_service_id: str | None) -> bool:
    """Whether the document is enabled for a VAL service (None: any)."""
    if val_service_id is None or document.service_ids is None:
        return True
    return val_service_id in document.service_ids


class GroupSource(Protocol):
    """Where a Group Service ID is resolved (digest §5.2 step 2)."""

    @property
    def location(self) -> str | None:
        """URL of an external group management server; None for the local store."""
        ...

    async def find(self, group_id: str, val_service_id: str) -> list[GroupDocument]:
        """The documents of VAL group ``group_id`` enabled for ``val_service_id``.

        Returns:
            Possibly several documents; empty when the group is unknown.

        Raises:
            RecipientUnreachable: the source cannot answer now (network error,
                timeout, error status, unreadable answer).
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class RegistrationIndex(Protocol):
    """The current UE registrations (``service.registry.Registry``)."""

    def registrations(self) -> Iterable[UERegistration]:
        """Every current registration."""
        ...


class _StoreSource:
    """The server's own group store as a :class:`GroupSource`."""

    location: str | None = None

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def find(self, group_id: str, val_service_id: str) -> list[GroupDocument]:
        document = await self._backend.get_record(_KIND, group_id, GroupDocument)
        if document is None or not serves(document, val_service_id):
            return []
        return [document]

    async def aclose(self) -> None:
        return None


def _ue_id_of(registration: UERegistration) -> str | None:
    try:
        profile = json.loads(registration.profile)
    except ValueError:
        return None
    if not isinstance(profile, dict):
        return None
    value = profile.get("msgin5g_ue_id", profile.get("msgin5gUeId"))
    return value if isinstance(value, str) else None


class GroupRegistry:
    """Group resolution with a short cache, and the hosted VAL group store.

    Args:
        backend: storage of the hosted documents.
        clock: time source of the cache.
        config: ``group_cache_ttl``.
        source: where groups are resolved; default the hosted store.
        registrations: current registrations, to map ``valUeId`` members; by
            default they are read from ``backend`` at each resolution.
        seal: ``val_service_id`` of the MSGin5G Service.
    """

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        config: DeliveryConfig,
        *,
        source: GroupSource | None = None,
        registrations: RegistrationIndex | None = None,
        seal: SealConfig | None = None,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._ttl = config.group_cache_ttl
        self._source: GroupSource = source or _StoreSource(backend)
        self._registrations = registrations
        self.val_service_id = (seal or SealConfig()).val_service_id
        self._cache: dict[str, tuple[float, Group | None]] = {}
        self._lock = asyncio.Lock()

    @property
    def external(self) -> str | None:
        """URL of the external group management server, None when hosted."""
        return self._source.location

    # resolution (group messaging) ----------------------------------------------

    async def get(self, group_id: str) -> Group | None:
        """The group with its member UE Service IDs, or None if unknown.

        Raises:
            RecipientUnreachable: the external server cannot be asked and no
                earlier answer is cached.
        """
        now = self._clock.now()
        cached = self._cache.get(group_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            documents = await self._source.find(group_id, self.val_service_id)
        except RecipientUnreachable as exc:
            if cached is None:
                log.warning("group %s not resolved: %s", group_id, exc.detail)
                raise
            log.warning(
                "group %s: %s; using the membership cached earlier",
                group_id,
                exc.detail,
            )
            self._remember(group_id, cached[1], now)
            return cached[1]
        group = await self._resolve(group_id, documents) if documents else None
        self._remember(group_id, group, now)
        return group

    def invalidate(self, group_id: str | None = None) -> None:
        """Forget a cached resolution (all of them with None)."""
        if group_id is None:
            self._cache.clear()
        else:
            self._cache.pop(group_id, None)

    def _remember(self, group_id: str, group: Group | None, now: float) -> None:
        if len(self._cache) > _MAX_CACHE:
            self._cache.clear()
        self._cache[group_id] = (now + self._ttl, group)

    async def _resolve(self, group_id: str, documents: list[GroupDocument]) -> Group:
        targets = [t for d in documents for t in d.member_targets]
        by_ue_id: dict[str, list[str]] = {}
        if any(t.val_ue_id is not None for t in targets):
            by_ue_id = await self._ue_index()
        members: list[str] = []
        for target in targets:
            if target.val_user_id is not None:
                members.append(target.val_user_id)
            elif target.val_ue_id is not None:
                found = by_ue_id.get(target.val_ue_id, [])
                if not found:
                    log.debug(
                        "group %s: no UE registered with msgin5gUeId %s",
                        group_id,
                        target.val_ue_id,
                    )
                members.extend(found)
        return Group(group_id, list(dict.fromkeys(members)))

    async def _ue_index(self) -> dict[str, list[str]]:
        registrations: Iterable[UERegistration]
        if self._registrations is not None:
            registrations = list(self._registrations.registrations())
        else:
            registrations = await self._backend.load_registrations()
        index: dict[str, list[str]] = {}
        for registration in registrations:
            ue_id = _ue_id_of(registration)
            if ue_id is not None:
                index.setdefault(ue_id, []).append(registration.ue_service_id)
        return index

    # the hosted store (SS_GroupManagement API, CLI) -----------------------------

    async def document(self, group_id: str) -> GroupDocument | None:
        """The stored document of a VAL group, or None."""
        return await self._backend.get_record(_KIND, group_id, GroupDocument)

    async def documents(
        self, *, group_id: str | None = None, val_service_id: str | None = None
    ) -> list[GroupDocument]:
        """Stored documents, optionally of one group and/or one VAL service."""
        if group_id is not None:
            found = await self.document(group_id)
            candidates = [] if found is None else [found]
        else:
            candidates = await self._backend.load_records(_KIND, GroupDocument)
        return [d for d in candidates if serves(d, val_service_id)]

    async def create(self, document: GroupDocument) -> GroupDocument:
        """Store a new document.

        Raises:
            NotAuthorized: a document for that ``valGroupId`` exists already.
        """
        async with self._lock:
            if await self.document(document.group_id) is not None:
                raise NotAuthorized(
                    f"VAL group {document.group_id} exists already: change it "
                    "with PUT or PATCH on its group document"
                )
            return await self._store(document)

    async def update(
        self,
        group_id: str,
        change: Callable[[GroupDocument], GroupDocument],
        *,
        client: str | None = None,
        operator: bool = False,
    ) -> GroupDocument:
        """Replace a stored document by ``change(current)`` (serialised).

        The owner is kept whatever ``change`` returns.

        Raises:
            InvalidRequest: no such document (cause ``GROUP_NOT_FOUND``), or
                ``change`` renamed the group.
            NotAuthorized: ``client`` may not manage it (:func:`may_manage`).
        """
        async with self._lock:
            current = await self._owned(group_id, client, operator)
            updated = change(current)
            if updated.group_id != group_id:
                raise InvalidRequest("valGroupId cannot be changed")
            updated = msgspec.structs.replace(updated, owner=current.owner)
            return await self._store(updated)

    async def _owned(
        self, group_id: str, client: str | None, operator: bool
    ) -> GroupDocument:
        current = await self.document(group_id)
        if current is None:
            raise InvalidRequest(
                f"no VAL group document {group_id}",
                cause=FailureCause.GROUP_NOT_FOUND,
            )
        if not may_manage(current, client, operator):
            raise NotAuthorized(f"VAL group document {group_id} is not yours")
        return current

    async def put(self, group: Group) -> None:
        """Create a group or replace its members by UE Service IDs (the CLI).

        The other members of an existing document (VAL UE IDs, description,
        configuration, …) are kept.
        """
        async with self._lock:
            current = await self.document(group.group_id)
            keep = [] if current is None else current.member_targets
            targets = [t for t in keep if t.val_ue_id is not None] + [
                ValTarget(val_user_id=m) for m in group.members
            ]
            base = current or GroupDocument(group.group_id)
            await self._store(base.with_targets(targets))

    async def delete(
        self, group_id: str, *, client: str | None = None, operator: bool = False
    ) -> bool:
        """Remove a group; True if it existed.

        Raises:
            NotAuthorized: ``client`` may not manage it (:func:`may_manage`).
        """
        async with self._lock:
            current = await self.document(group_id)
            if current is not None and not may_manage(current, client, operator):
                raise NotAuthorized(f"VAL group document {group_id} is not yours")
            self.invalidate(group_id)
            return await self._backend.delete_record(_KIND, group_id)

    async def _store(self, document: GroupDocument) -> GroupDocument:
        document = document.with_targets(document.member_targets)
        await self._backend.put_record(_KIND, document.group_id, document)
        self.invalidate(document.group_id)
        return document
