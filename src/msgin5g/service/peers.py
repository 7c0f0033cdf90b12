"""MSGin5G-8: UE Service IDs of other MSGin5G Servers (TS 23.554 §8.7.5; digest §2.16).

A UE Service ID with a domain part (``ue@domain``) belongs to the server of that
domain. This server's own domain (``peers.domain``) and IDs without ``@`` are
local; a domain in the static table ``peers.routes`` is a **peer**: messages
and reports for its UEs are stored here (store and forward, like any item) and
handed to the peer over its ``/msgs-msgdelivery/v1`` API
(:mod:`msgin5g.transports.rest.peer_client`). The delivery engine treats such a
recipient like an Application Server's mailbox: kept while the peer is down,
retried with the AS back-off (``delivery.as_retry_initial`` .. ``as_retry_max``).

A domain that is neither ours nor in the table is **unknown**: the message fails
with ``RECIPIENT_UNKNOWN`` and a log line naming the domain (docs/federation.md).
"""

import logging
from typing import Protocol

from msgin5g.config_network import PeersConfig
from msgin5g.errors import DeliveryRejected
from msgin5g.model.messages import Imdn, Msg
from msgin5g.spec.causes import FailureCause

__all__ = ["PeerDeliverer", "Peers", "domain_of"]

log = logging.getLogger(__name__)


def domain_of(ue_service_id: str) -> str | None:
    """The domain part of ``ue@domain`` (lower case), or None without one."""
    local, at, domain = ue_service_id.rpartition("@")
    if not at or not local or not domain:
        return None
    return domain.lower()


class PeerDeliverer(Protocol):
    """The HTTP client towards peer servers (a transport implements it)."""

    async def deliver_to_peer(self, api_root: str, item: Msg | Imdn) -> None:
        """POST ``item`` to the peer's MSGS_MSGDelivery API below ``api_root``.

        Raises:
            RecipientUnreachable: connection failure, timeout, 408/429/5xx.
            DeliveryRejected: the peer refused it (other 4xx, or ``DELY_FAILED``).
        """
        ...


class Peers:
    """The routing table of ``[peers]`` and the engine's :class:`PeerLink`."""

    def __init__(self, config: PeersConfig, deliverer: PeerDeliverer | None) -> None:
        self.domain = config.domain.lower()
        self._routes = config.table
        self._deliverer = deliverer
        self.forwarded = 0
        """Items handed to peer servers (diagnostics)."""

    @property
    def enabled(self) -> bool:
        """Whether any peer server is configured."""
        return bool(self._routes)

    def is_remote(self, ue_service_id: str) -> bool:
        """Whether a peer server serves ``ue_service_id``."""
        domain = domain_of(ue_service_id)
        return domain is not None and domain in self._routes

    def unknown_domain(self, ue_service_id: str) -> str | None:
        """The domain of ``ue_service_id`` if it is neither ours nor a peer's."""
        domain = domain_of(ue_service_id)
        if domain is None or domain == self.domain or domain in self._routes:
            return None
        return domain

    async def deliver_to_peer(self, ue_service_id: str, item: Msg | Imdn) -> None:
        """Send ``item`` for ``ue_service_id`` to the peer serving it."""
        domain = domain_of(ue_service_id)
        root = None if domain is None else self._routes.get(domain)
        if root is None or self._deliverer is None:
            raise DeliveryRejected(
                f"no peer server for {ue_service_id}",
                cause=FailureCause.RECIPIENT_UNKNOWN,
            )
        await self._deliverer.deliver_to_peer(root, item)
        self.forwarded += 1
