"""UE provisioning and registration (TS 23.554 §8.2.1/§8.2.2, digest §3.2, §3.3).

Registrations live in memory (a dict keyed by UE Service ID, loaded at start-up)
and durably in the backend; the dict is the routing table on the hot path.
Credentials are looked up in the backend and cached for
``delivery.credential_cache_ttl`` seconds.

Memory (docs/performance.md, "Memory per registered idle UE"): a registration
is one ``gc=False`` Struct sharing what it can: the UE Service ID string is the
dict key, an empty profile is one shared ``"{}"``, the host of a contact is
interned (many UEs behind one NAT or gateway share it), and consecutive
registrations from one source (a ``BULKREG``) share its Contact object;
registrations within :data:`STAMP_SHARE` of each other share one
``registered_at`` float. The credential cache is
bounded (:data:`CREDENTIAL_CACHE_MAX` entries, oldest dropped first): caching
the digest of each of a million registered UEs cost ~200 B per UE and saves a
storage read only for a UE that authenticates twice within the TTL.
"""

import asyncio
import copy
import itertools
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import msgspec

from msgin5g.config import DeliveryConfig
from msgin5g.errors import InvalidRequest, NotRegistered
from msgin5g.logsafe import LogThrottle
from msgin5g.model.credentials import verify_credential
from msgin5g.model.messages import Reg, UECredentialInfo
from msgin5g.model.registry import Contact, UERegistration
from msgin5g.runtime import Clock
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import AuthType
from msgin5g.storage.base import Backend

__all__ = ["Registry", "contact_from_address"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)  # refused senders: a flood repeats them

_NO_DIGEST = bytes(32)
_EMPTY_PROFILE = "{}"

CREDENTIAL_CACHE_MAX = 65_536
"""Most cached credential digests; the oldest eighth goes when it is full."""

STAMP_SHARE = 0.001
"""Registrations within this many seconds share one ``registered_at`` float
(24 B per UE otherwise): the time of the first of them, so a registration's
time may be up to this much early. Never shared by two registrations of one UE:
a UE's re-registration gets a later time (:meth:`Registry.apply_stored` orders
by it)."""

_PROFILE_FIELDS = (
    "msgin5g_ue_id",
    "client_ports",
    "triggering_info",
    "comm_availability",
    "max_segment_size",
    "client_address",
)


def contact_from_address(address: str) -> Contact:
    """Parse a ``clientAddress`` URI (``coap://host:port/path``).

    Raises:
        InvalidRequest: not a usable coap URI.
    """
    try:
        parts = urlsplit(address)
        port = parts.port or 5683
    except ValueError:
        raise InvalidRequest("clientAddress is not a valid URI") from None
    if parts.scheme != "coap" or not parts.hostname:
        raise InvalidRequest("clientAddress must be a coap:// URI with a host")
    path = tuple(p for p in parts.path.split("/") if p) or ("msgin5g",)
    return Contact(parts.hostname, port, path)


def _compact(contact: Contact) -> Contact:
    """``contact`` with its host string interned (one copy per distinct host)."""
    host = sys.intern(contact.host)
    if host is contact.host:
        return contact
    return Contact(host, contact.port, contact.path)


def _shared(
    registration: UERegistration, contacts: dict[Contact, Contact]
) -> UERegistration:
    """A loaded registration sharing equal contacts, gateway IDs and empty profiles.

    Each decoded record has its own copies of them (a million copies of the
    gateway's ID and of ``"{}"`` after a restart otherwise).
    """
    source = contacts.setdefault(registration.source, _compact(registration.source))
    contact = contacts.setdefault(registration.contact, _compact(registration.contact))
    gateway = registration.gateway
    profile = registration.profile
    return msgspec.structs.replace(
        registration,
        source=source,
        contact=contact,
        gateway=None if gateway is None else sys.intern(gateway),
        profile=_EMPTY_PROFILE if profile == _EMPTY_PROFILE else profile,
    )


def _fail(
    batch: dict[str, list[asyncio.Future[bytes | None]]], exc: BaseException
) -> None:
    """End every waiter of a failed lookup: cancelled, or its copy of ``exc``."""
    for waiters in batch.values():
        for waiter in waiters:
            if waiter.done():
                continue
            if isinstance(exc, asyncio.CancelledError):
                waiter.cancel()
            else:
                waiter.set_exception(copy.copy(exc))


class Registry:
    """Provisioned credentials and current registrations."""

    def __init__(self, backend: Backend, clock: Clock, config: DeliveryConfig) -> None:
        self._backend = backend
        self._clock = clock
        self._config = config
        self._registrations: dict[str, UERegistration] = {}
        self._by_source: dict[Contact, str] = {}
        self._credentials: dict[str, tuple[float, bytes | None]] = {}
        # credential lookups waiting for the next storage read (see _lookup)
        self._lookups: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._lookup_busy = False
        self._lookup_tasks: set[asyncio.Task[None]] = set()
        self._last_contact = Contact("", 0)  # see _contact
        self._stamp = float("-inf")  # see _registered_at
        self._stamp_object: Any = self._stamp  # the same, as one shared object
        self.node = ""
        """This node's ID in a cluster (``""``: single process); set once by the
        service before :meth:`load`. Written into every registration made here."""
        self.owned = 0
        """Registrations held by this node (all of them in a single process)."""

    async def load(self) -> None:
        """Fill the routing table from the backend (start-up)."""
        contacts: dict[Contact, Contact] = {}  # one object per distinct contact
        for stored in await self._backend.load_registrations():
            registration = _shared(stored, contacts)
            self._registrations[registration.ue_service_id] = registration
            if registration.gateway is None:
                self._by_source[registration.source] = registration.ue_service_id
            if registration.node == self.node:
                self.owned += 1
        log.info("loaded %d registrations", len(self._registrations))

    def __len__(self) -> int:
        return len(self._registrations)

    def registrations(self) -> Iterator[UERegistration]:
        """Every current registration (a snapshot is safe to iterate)."""
        return iter(list(self._registrations.values()))

    def by_source(self, source: Contact) -> UERegistration | None:
        """The UE registered directly (not through a gateway) from ``source``."""
        ue = self._by_source.get(source)
        return None if ue is None else self._registrations.get(ue)

    def get(self, ue_service_id: str) -> UERegistration | None:
        """The registration of a UE, or None."""
        return self._registrations.get(ue_service_id)

    def refuse_sender(
        self,
        ue_service_id: str,
        source: Contact,
        kind: str | None = None,
        what: str = "",
        subject: object = None,
    ) -> NotRegistered | None:
        """Why ``source`` may not send for ``ue_service_id``, or None if it may.

        The check every uplink procedure starts with: the UE must be registered,
        from ``source`` itself or through the gateway registered from there. A
        refusal is returned, not raised, so each procedure turns it into its own
        failure response; with ``kind`` it is also logged at WARNING through a
        :class:`~msgin5g.logsafe.LogThrottle` (a flood of spoofed requests writes
        a few lines per minute) as ``what % subject`` followed by the reason.

        Returns:
            None, or a :class:`NotRegistered` whose ``cause`` is
            ``NOT_REGISTERED`` (unknown) or ``NOT_AUTHORIZED`` (other address).
        """
        registration = self._registrations.get(ue_service_id)
        if registration is not None and (
            registration.source == source or self._via_gateway(registration, source)
        ):
            return None
        if registration is None:
            refusal = NotRegistered(f"{ue_service_id} is not registered")
        else:
            refusal = NotRegistered(
                f"{ue_service_id} is registered from another address",
                cause=FailureCause.NOT_AUTHORIZED,
            )
        if kind is not None:
            _throttled.log(
                kind, logging.WARNING, what + ": %s", subject, refusal.detail
            )
        return refusal

    def _via_gateway(self, registration: UERegistration, source: Contact) -> bool:
        if registration.gateway is None:
            return False
        gateway = self._registrations.get(registration.gateway)
        return gateway is not None and gateway.source == source

    def contact_for(self, ue_service_id: str) -> Contact | None:
        """Where downlink for a UE goes now (its gateway's contact if it has one)."""
        registration = self._registrations.get(ue_service_id)
        if registration is None:
            return None
        if registration.gateway is None:
            return registration.contact
        gateway = self._registrations.get(registration.gateway)
        return None if gateway is None else gateway.contact

    async def credential(self, ue_service_id: str) -> bytes | None:
        """The stored credential digest of a UE (None: not provisioned)."""
        now = self._clock.now()
        cached = self._credentials.get(ue_service_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytes | None] = loop.create_future()
        waiters = self._lookups.setdefault(ue_service_id, [])
        waiters.append(waiter)
        if not self._lookup_busy:
            self._lookup_busy = True
            loop.call_soon(self._start_lookup)
        return await waiter

    def _start_lookup(self) -> None:
        batch, self._lookups = self._lookups, {}
        task = asyncio.get_running_loop().create_task(self._lookup(batch))
        self._lookup_tasks.add(task)
        task.add_done_callback(self._lookup_tasks.discard)

    async def _lookup(
        self, batch: dict[str, list[asyncio.Future[bytes | None]]]
    ) -> None:
        """One storage read for every credential asked since the last one.

        Lookups wait while one read is in flight and then go together (like the
        writer's group commit): under load a read carries many IDs.
        """
        try:
            found = await self._backend.get_credentials(list(batch))
        except BaseException as exc:  # each waiter gets the storage error
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            expires = self._clock.now() + self._config.credential_cache_ttl
            for ue, waiters in batch.items():
                digest = found.get(ue)
                self._cache(ue, expires, digest)
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(digest)
        finally:
            if self._lookups:
                asyncio.get_running_loop().call_soon(self._start_lookup)
            else:
                self._lookup_busy = False

    def _cache(self, ue_service_id: str, expires: float, digest: bytes | None) -> None:
        cache = self._credentials
        cache.pop(ue_service_id, None)  # re-inserted last: the oldest stay first
        if len(cache) >= CREDENTIAL_CACHE_MAX:
            for old in list(itertools.islice(cache, CREDENTIAL_CACHE_MAX // 8)):
                del cache[old]
        cache[ue_service_id] = (expires, digest)

    async def is_known(self, ue_service_id: str) -> bool:
        """Whether the UE is registered or at least provisioned."""
        if ue_service_id in self._registrations:
            return True
        return await self.credential(ue_service_id) is not None

    async def authenticate(
        self, ue_service_id: str, info: UECredentialInfo | None
    ) -> FailureCause | None:
        """Verify ``ueCredentialInfo``; None when valid, else the failure cause."""
        digest = await self.credential(ue_service_id)
        if digest is None:
            if info is not None and info.credential:
                verify_credential(info.credential, _NO_DIGEST)  # same work either way
            return FailureCause.UNKNOWN_UE_SERVICE_ID
        if info is None:
            return FailureCause.AUTHENTICATION_FAILED
        if info.auth_type == AuthType.NONE:
            return None if self._config.allow_auth_none else FailureCause.NOT_AUTHORIZED
        if info.auth_type != AuthType.PSK_TOKEN:
            return FailureCause.AUTHENTICATION_FAILED
        if not verify_credential(info.credential, digest):
            return FailureCause.AUTHENTICATION_FAILED
        return None

    async def register(
        self, reg: Reg, source: Contact, *, gateway: str | None = None
    ) -> tuple[UERegistration, bool]:
        """Store the client profile of an authenticated UE.

        With ``gateway`` the UE registered in bulk through that Gateway UE: its
        contact is the gateway (``clientAddress`` is ignored).

        Returns:
            The registration and whether it is new (True) or a refresh.

        Raises:
            InvalidRequest: unusable ``clientAddress``.
        """
        source = self._contact(source)
        contact = (
            self._contact(contact_from_address(reg.client_address))
            if reg.client_address and gateway is None
            else source
        )
        previous = self._registrations.get(reg.ue_service_id)
        avail = reg.comm_availability
        profile = {
            name: msgspec.to_builtins(getattr(reg, name))
            for name in _PROFILE_FIELDS
            if getattr(reg, name) is not None
        }
        registration = UERegistration(
            ue_service_id=reg.ue_service_id,
            source=source,
            contact=contact,
            registered_at=self._registered_at(previous),
            refuses_store_and_forward=bool(
                avail is not None and avail.store_and_forward_option is not None
            ),
            max_segment_size=reg.max_segment_size,
            profile=(
                json.dumps(profile, separators=(",", ":"))
                if profile
                else _EMPTY_PROFILE
            ),
            gateway=gateway,
            cell_id=reg.ue_location.cell_id if reg.ue_location else None,
            tracking_area_id=(
                reg.ue_location.tracking_area_id if reg.ue_location else None
            ),
            node=self.node,
        )
        await self._backend.put_registration(registration)
        new = self._registrations.get(reg.ue_service_id) is None
        self._set(registration)
        return registration, new

    def _contact(self, contact: Contact) -> Contact:
        """``contact`` compacted, or the previous registration's equal object.

        The entries of a ``BULKREG`` all come from the gateway's source: without
        this each got its own Contact (40 B per UE).
        """
        if contact == self._last_contact:
            return self._last_contact
        self._last_contact = _compact(contact)
        return self._last_contact

    def _registered_at(self, previous: UERegistration | None) -> Any:
        """Now, or the float of a registration less than :data:`STAMP_SHARE` ago.

        Not the float of ``previous`` (the same UE's registration): its
        re-registration gets a later time.

        Typed ``Any`` and kept boxed in ``_stamp_object``: compiled (mypyc), a
        ``float`` is a C double, boxed anew wherever it becomes an object again,
        so the registrations would no longer share one float object.
        """
        now = self._clock.now()
        stamp = self._stamp
        if 0 <= now - stamp < STAMP_SHARE and (
            previous is None or previous.registered_at < stamp
        ):
            return self._stamp_object
        self._stamp = now
        self._stamp_object = now
        return self._stamp_object

    def _set(self, registration: UERegistration) -> None:
        ue = registration.ue_service_id
        previous = self._registrations.get(ue)
        if previous is not None:
            if self._by_source.get(previous.source) == ue:
                del self._by_source[previous.source]
            if previous.node == self.node:
                self.owned -= 1
        if registration.node == self.node:
            self.owned += 1
        self._registrations[ue] = registration
        if registration.gateway is None:
            self._by_source[registration.source] = ue

    def _unset(self, ue_service_id: str) -> UERegistration | None:
        previous = self._registrations.pop(ue_service_id, None)
        if previous is None:
            return None
        if self._by_source.get(previous.source) == ue_service_id:
            del self._by_source[previous.source]
        if previous.node == self.node:
            self.owned -= 1
        return previous

    # cluster ------------------------------------------------------------------

    def owner_of(self, ue_service_id: str) -> str | None:
        """The node that delivers to the UE (``""`` single process), or None.

        The node holding the UE's registration; for a UE registered through a
        Gateway UE, the node holding the gateway's (downlink goes to the
        gateway's contact, whose datagrams reach that node).
        """
        registration = self._registrations.get(ue_service_id)
        if registration is None:
            return None
        if registration.gateway is not None:
            gateway = self._registrations.get(registration.gateway)
            if gateway is not None:
                return gateway.node
        return registration.node

    def apply_stored(
        self, ue_service_id: str, stored: UERegistration | None
    ) -> tuple[UERegistration | None, UERegistration | None]:
        """Follow a registration change another node (or this one) stored.

        Events arrive in storage order, after this node's own in-memory change
        for its own writes; a stored registration older than the one held is
        ignored (``registered_at``), so a late echo of this node's earlier write
        never undoes a newer one. ``stored=None``: the key is gone (the cluster
        re-reads the key on a delete event, so a deletion followed by a new
        registration arrives as that registration).

        Returns:
            (previous, current) as held in memory.
        """
        previous = self._registrations.get(ue_service_id)
        if stored is None:
            self._unset(ue_service_id)
            return previous, None
        if previous is not None and (
            previous == stored or previous.registered_at > stored.registered_at
        ):
            return previous, previous
        self._set(_shared(stored, {}))
        return previous, self._registrations[ue_service_id]

    async def rebind(
        self, ue_service_id: str, source: Contact
    ) -> UERegistration | None:
        """Move a UE authenticated by its security context to a new address.

        For a UE whose requests are authorised by its key (OSCORE), not by its
        address: after a NAT rebinding its uplink comes from ``source``, and
        downlink must follow. The contact moves too unless the UE gave a
        ``clientAddress`` of its own. None: not registered (directly).
        """
        registration = self._registrations.get(ue_service_id)
        if registration is None or registration.gateway is not None:
            return None
        source = _compact(source)
        if registration.source == source:
            return registration
        contact = (
            source
            if registration.contact == registration.source
            else registration.contact
        )
        moved = msgspec.structs.replace(
            registration,
            source=source,
            contact=contact,
            registered_at=self._clock.now(),
            node=self.node,
        )
        await self._backend.put_registration(moved)
        self._set(moved)
        return moved

    async def claim(self, ue_service_id: str) -> UERegistration | None:
        """Take over a UE registered at another node (its uplink now reaches here)."""
        registration = self._registrations.get(ue_service_id)
        if registration is None or registration.node == self.node:
            return registration
        claimed = msgspec.structs.replace(
            registration, node=self.node, registered_at=self._clock.now()
        )
        await self._backend.put_registration(claimed)
        self._set(claimed)
        return claimed

    async def deregister(self, ue_service_id: str) -> bool:
        """Remove a registration; True if there was one."""
        existed = self._unset(ue_service_id) is not None
        await self._backend.delete_registration(ue_service_id)
        return existed

    def forget_credential(self, ue_service_id: str) -> None:
        """Drop a cached credential (after provisioning changes in-process)."""
        self._credentials.pop(ue_service_id, None)
