"""Durable state of a Gateway UE (digest Appendix X1.2, §3.4.3 G3/G8, §3.6).

Everything the gateway acknowledged lives in the storage layer's
:class:`~msgin5g.storage.base.RecordStore` (SQLite by default, the backend the
server uses) **before** the acknowledgement leaves: a cached ``REG``/``DEREG`` is
written before its empty ACK, an ``APPREG``/``GWREG`` before its answer. The
in-memory dicts here mirror the records and are rebuilt by :meth:`GatewayState.load`
after a restart, so a gateway killed at any point still answers every request it
acknowledged (with the constrained UE's own Message ID and Token).

Record kinds: ``gw-pending`` (cached requests, key ``REG:<ue>``/``DEREG:<ue>``),
``gw-peer`` (constrained UEs registered through the gateway or its services:
UE Service ID → CoAP endpoint), ``gw-app`` (application registrations, key
``<owner>/<applicationId>``).
"""

import msgspec

from msgin5g.model.messages import Dereg, Reg
from msgin5g.storage.base import RecordStore

__all__ = ["AppBinding", "ConstrainedPeer", "GatewayState", "PendingRequest"]

_PENDING = "gw-pending"
_PEER = "gw-peer"
_APP = "gw-app"


class PendingRequest(msgspec.Struct, frozen=True):
    """A constrained UE's ``REG``/``DEREG`` acknowledged with an empty ACK.

    Attributes:
        kind: ``"REG"`` or ``"DEREG"``.
        ue_service_id: the constrained UE.
        host: source address of the request.
        port: source port.
        mid: CoAP Message ID of the request (re-used by the ``REGRESP`` POST).
        token: CoAP Token of the request (re-used likewise).
        request: the decoded request as received.
        received_at: epoch seconds.
        send_by: epoch seconds by which it must be in a bulk request.
        urgent: ``registrationUrgentDegree = URGENT``: forwarded on its own.
    """

    kind: str
    ue_service_id: str
    host: str
    port: int
    mid: int
    token: bytes
    request: Reg | Dereg
    received_at: float
    send_by: float
    urgent: bool = False

    @property
    def key(self) -> str:
        """Cache key: one outstanding request per kind and UE."""
        return f"{self.kind}:{self.ue_service_id}"


class ConstrainedPeer(msgspec.Struct, frozen=True):
    """A constrained UE the gateway serves (G8): where to reach it."""

    ue_service_id: str
    host: str
    port: int
    since: float
    layer2_id: str | None = None
    packet_size: int | None = None


class AppBinding(msgspec.Struct, frozen=True):
    """An application registration (``APPREG``, TS 23.554 §8.11.2).

    Attributes:
        application_id: the Application ID.
        layer2_id: the constrained UE's Layer-2 ID.
        owner: the UE Service ID its messages carry as originator: its own
            (``ueServiceId`` in the ``APPREG``) or the gateway's.
        host: the Application Client's CoAP address.
        port: its port.
    """

    application_id: str
    layer2_id: str
    owner: str
    host: str
    port: int

    @property
    def key(self) -> str:
        """``<owner>/<applicationId>`` (``/`` cannot occur in a Service ID)."""
        return f"{self.owner}/{self.application_id}"


class GatewayState:
    """The gateway's records, in memory and durable."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self.pending: dict[str, PendingRequest] = {}
        self.peers: dict[str, ConstrainedPeer] = {}
        self.apps: dict[str, AppBinding] = {}
        self._by_address: dict[tuple[str, int], str] = {}

    async def load(self) -> None:
        """Rebuild the in-memory view from storage (start-up)."""
        for pending in await self._store.load_records(_PENDING, PendingRequest):
            self.pending[pending.key] = pending
        for peer in await self._store.load_records(_PEER, ConstrainedPeer):
            self.peers[peer.ue_service_id] = peer
            self._by_address[(peer.host, peer.port)] = peer.ue_service_id
        for app in await self._store.load_records(_APP, AppBinding):
            self.apps[app.key] = app

    async def put_pending(self, pending: PendingRequest) -> None:
        """Cache a request durably (before its empty ACK)."""
        await self._store.put_record(_PENDING, pending.key, pending)
        self.pending[pending.key] = pending

    async def drop_pending(self, pending: PendingRequest) -> None:
        """Forget a request once its answer was sent (or given up)."""
        current = self.pending.get(pending.key)
        if current is not None and (current.mid, current.token) != (
            pending.mid,
            pending.token,
        ):
            return  # replaced by a newer request of the same UE meanwhile
        self.pending.pop(pending.key, None)
        await self._store.delete_record(_PENDING, pending.key)

    async def put_peer(self, peer: ConstrainedPeer) -> None:
        """Remember where a constrained UE is reached."""
        old = self.peers.get(peer.ue_service_id)
        if old is not None:
            self._by_address.pop((old.host, old.port), None)
        await self._store.put_record(_PEER, peer.ue_service_id, peer)
        self.peers[peer.ue_service_id] = peer
        self._by_address[(peer.host, peer.port)] = peer.ue_service_id

    async def drop_peer(self, ue_service_id: str) -> None:
        """Forget a constrained UE (successful de-registration, ``GWDEREG``)."""
        old = self.peers.pop(ue_service_id, None)
        if old is not None:
            self._by_address.pop((old.host, old.port), None)
        await self._store.delete_record(_PEER, ue_service_id)

    def peer_at(self, host: str, port: int) -> str | None:
        """The constrained UE registered from this address, if any."""
        return self._by_address.get((host, port))

    async def put_app(self, app: AppBinding) -> None:
        """Store an application registration."""
        await self._store.put_record(_APP, app.key, app)
        self.apps[app.key] = app

    async def drop_app(self, key: str) -> bool:
        """Remove an application registration; True if it existed."""
        self.apps.pop(key, None)
        return await self._store.delete_record(_APP, key)

    def app_at(self, host: str, port: int, application_id: str) -> AppBinding | None:
        """The application registered from this address with this Application ID."""
        for app in self.apps.values():
            if (
                app.application_id == application_id
                and app.host == host
                and app.port == port
            ):
                return app
        return None
