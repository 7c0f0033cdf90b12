"""Message Gateway registrations: Non-MSGin5G UEs reached through an L3G or N3G.

TS 23.554 §8.2.3 / §8.2.4 (digest §2.4): a Legacy 3GPP Message Gateway (L3G)
or a Non-3GPP Message Gateway (N3G) registers the UE Service IDs of the UEs it
represents; the server then resolves those recipients to the gateway and
delivers through its ``MSGG_L3GDelivery`` / ``MSGG_N3GDelivery``
``deliver-message`` API (digest §2.10.2, §2.10.3). TS 29.538 Rel-18 has no API
for this registration; the project's ``/msgs-gwregistration/v1`` (see
:mod:`msgin5g.transports.rest.msgs_gwregistration`) drives this registry.

**Soft state**: a registration lives ``validity`` seconds and the gateway
refreshes it (``msgin5g l3g`` / ``n3g`` re-register at start and every third of
the validity). Nothing is written to storage: after a server restart the
messages stored for a gateway's UEs wait (stored) until the gateway's next
refresh, which wakes them. A refresh replaces the gateway's whole UE list (UEs
it no longer names are de-registered).

Routing rule: a UE registered *directly* (MSGin5G-1 ``REG``) is delivered
directly; the gateway mapping is used only for a UE Service ID with no direct
registration. A UE Service ID served by one gateway cannot be claimed by
another until the first de-registers it or its registration expires
(``NOT_AUTHORIZED`` for that UE in the result list).

The delivery engine keys a gateway-represented UE's mailbox by its UE Service
ID (so report routes, which name the UE as the reporter, work unchanged) and
pushes it through the :class:`~msgin5g.service.ports.GatewayDeliverer` port
with the back-off of an AS target (:mod:`.delivery`).
"""

import enum
import logging
from collections.abc import Callable, Iterable

import msgspec

from msgin5g.errors import InvalidRequest, NotAuthorized
from msgin5g.runtime import Clock
from msgin5g.spec.causes import FailureCause

__all__ = [
    "GatewayKind",
    "GatewayResult",
    "MessageGateway",
    "MessageGatewayRegistry",
]

log = logging.getLogger(__name__)

_MAX_ID = 256


class GatewayKind(enum.StrEnum):
    """Which Message Gateway, and so which MSGG API the server calls."""

    L3G = "L3G"
    """Legacy 3GPP Message Gateway: ``msgg-l3gdelivery/v1``."""
    N3G = "N3G"
    """Non-3GPP Message Gateway: ``msgg-n3gdelivery/v1``."""


class MessageGateway(msgspec.Struct, frozen=True):
    """A registered Message Gateway.

    Attributes:
        gateway_id: the gateway's identity (Table 8.2.3-1 "Gateway identity").
        kind: L3G or N3G.
        api_root: ``{apiRoot}`` of its MSGG API (``http://host:port``).
        expires_at: epoch seconds; refreshed by each registration.
        owner: OAuth2 client id that registered it (None with OAuth2 off).
    """

    gateway_id: str
    kind: GatewayKind
    api_root: str
    expires_at: float
    owner: str | None = None


class GatewayResult(msgspec.Struct, frozen=True):
    """Outcome for one UE Service ID (Table 8.2.1-4 / 8.2.4-2 [D])."""

    ue_service_id: str
    failure_cause: FailureCause | None = None


class MessageGatewayRegistry:
    """Gateways and the UE Service IDs each represents (in memory, soft state)."""

    def __init__(self, clock: Clock, max_ues_per_gateway: int = 100_000) -> None:
        self._clock = clock
        self._max = max_ues_per_gateway
        self._gateways: dict[str, MessageGateway] = {}
        self._ues: dict[str, set[str]] = {}
        self._serving: dict[str, str] = {}
        self.listeners: list[Callable[[Iterable[str]], None]] = []
        """Called with the UE Service IDs that became reachable (engine wakes)."""

    def __len__(self) -> int:
        return len(self._serving)

    def gateways(self) -> list[MessageGateway]:
        """The registered gateways (expired ones included until replaced)."""
        return list(self._gateways.values())

    def ues_of(self, gateway_id: str) -> list[str]:
        """UE Service IDs a gateway represents, sorted."""
        return sorted(self._ues.get(gateway_id, ()))

    def gateway_of(self, ue_service_id: str) -> MessageGateway | None:
        """The live gateway representing ``ue_service_id``, or None."""
        gateway_id = self._serving.get(ue_service_id)
        if gateway_id is None:
            return None
        gateway = self._gateways[gateway_id]
        if gateway.expires_at <= self._clock.now():
            return None
        return gateway

    def get(self, gateway_id: str) -> MessageGateway | None:
        """A gateway by its identity."""
        return self._gateways.get(gateway_id)

    def register(
        self,
        gateway_id: str,
        kind: GatewayKind,
        api_root: str,
        ue_service_ids: Iterable[str],
        *,
        validity: float,
        owner: str | None = None,
    ) -> list[GatewayResult]:
        """Register (or refresh) a gateway and the UEs it represents now.

        Raises:
            InvalidRequest: bad identity, URI, validity or too many UEs.
            NotAuthorized: the gateway identity belongs to another OAuth2
                client. (A UE another live gateway serves gets
                ``NOT_AUTHORIZED`` in its result instead.)
        """
        ues = list(dict.fromkeys(ue_service_ids))
        _check_id(gateway_id, "gwId")
        if not api_root.startswith(("http://", "https://")):
            raise InvalidRequest("gwUri must be an http(s) URI")
        if not 0 < validity <= 86_400 * 30:
            raise InvalidRequest("validity must be 1 s .. 30 days")
        if len(ues) > self._max:
            raise InvalidRequest(f"at most {self._max} UE Service IDs per gateway")
        for ue in ues:
            _check_id(ue, "ueSvcIds")
        old = self._gateways.get(gateway_id)
        if old is not None and old.owner != owner:
            raise NotAuthorized(f"gateway {gateway_id} belongs to another client")
        now = self._clock.now()
        self._gateways[gateway_id] = MessageGateway(
            gateway_id, kind, api_root.rstrip("/"), now + validity, owner
        )
        mine = self._ues.setdefault(gateway_id, set())
        results = []
        for ue in ues:
            holder = self._serving.get(ue)
            if holder is not None and holder != gateway_id:
                other = self._gateways[holder]
                if other.expires_at > now:
                    results.append(GatewayResult(ue, FailureCause.NOT_AUTHORIZED))
                    continue
                self._ues[holder].discard(ue)
            self._serving[ue] = gateway_id
            mine.add(ue)
            results.append(GatewayResult(ue))
        served = {r.ue_service_id for r in results if r.failure_cause is None}
        for gone in mine - served:
            mine.discard(gone)
            del self._serving[gone]
        log.info(
            "%s %s at %s represents %d UEs", kind, gateway_id, api_root, len(served)
        )
        for listener in self.listeners:
            listener(sorted(served))
        return results

    def deregister(
        self, gateway_id: str, ue_service_ids: Iterable[str] | None = None
    ) -> list[GatewayResult]:
        """Remove some (or, with None, all) UEs of a gateway; None: all + gateway.

        A UE the gateway does not represent gets ``RECIPIENT_UNKNOWN``.
        """
        mine = self._ues.get(gateway_id, set())
        if ue_service_ids is None:
            targets = sorted(mine)
            self._gateways.pop(gateway_id, None)
        else:
            targets = list(dict.fromkeys(ue_service_ids))
        results = []
        for ue in targets:
            if ue not in mine:
                results.append(GatewayResult(ue, FailureCause.RECIPIENT_UNKNOWN))
                continue
            mine.discard(ue)
            del self._serving[ue]
            results.append(GatewayResult(ue))
        if ue_service_ids is None:
            self._ues.pop(gateway_id, None)
        log.info("gateway %s de-registered %d UEs", gateway_id, len(results))
        return results


def _check_id(value: str, member: str) -> None:
    if not value or len(value) > _MAX_ID or not value.isprintable():
        raise InvalidRequest(f"{member}: 1..{_MAX_ID} printable characters")
