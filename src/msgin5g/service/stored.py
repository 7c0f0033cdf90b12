"""Update of a stored message: ``MSGUPD`` (digest §3.8 step 5).

The originator of a message that was stored for a recipient (``DELY_STORED``)
may give it a new expiry or discard it. Only the originator itself, from the
address it is registered from, may change its message: anyone else gets
``DELY_REJECTED`` (``NOT_REGISTERED`` / ``NOT_AUTHORIZED``), and a message that
is not stored (delivered, expired, never there) gives ``DELY_FAILED`` /
``MESSAGE_NOT_FOUND``.
"""

from msgin5g.config import DeliveryConfig
from msgin5g.errors import InvalidRequest
from msgin5g.model.messages import Msg, MsgResp, MsgUpd
from msgin5g.model.registry import Contact
from msgin5g.runtime import Clock
from msgin5g.service.answers import with_status
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.registry import Registry
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import DeliveryStatus
from msgin5g.storage.base import Backend

__all__ = ["StoredMessages"]


class StoredMessages:
    """Changes an originator makes to a message stored for a recipient."""

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        config: DeliveryConfig,
        registry: Registry,
        delivery: DeliveryEngine,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._config = config
        self._registry = registry
        self._delivery = delivery

    async def update_stored(self, upd: MsgUpd, source: Contact) -> MsgResp:
        """Handle ``MSGUPD`` (digest §3.8 step 5): new expiry, or discard.

        Raises:
            InvalidRequest: the new ``messageExpirationTime`` is in the past.
        """
        resp = MsgResp(
            message_id=upd.message_id,
            originating_ue_service_id=upd.originating_ue_service_id,
            delivery_status=DeliveryStatus.DELY_FAILED,
            failure_cause=FailureCause.MESSAGE_NOT_FOUND,
        )
        refusal = self._registry.refuse_sender(upd.originating_ue_service_id, source)
        if refusal is not None:
            return with_status(resp, DeliveryStatus.DELY_REJECTED, refusal.cause)
        stored = await self._backend.find(upd.recipient_ue_service_id, upd.message_id)
        if stored is None or not isinstance(stored.item, Msg):
            return resp
        if stored.item.originating_ue_service_id != upd.originating_ue_service_id:
            return with_status(
                resp, DeliveryStatus.DELY_REJECTED, FailureCause.NOT_AUTHORIZED
            )
        recipient = upd.recipient_ue_service_id
        params = upd.store_and_forward_params
        if params is None:
            await self._backend.remove(stored.seq)
            self._delivery.discarded(stored)
            await self._backend.take_report_route(upd.message_id, recipient)
            return with_status(resp, DeliveryStatus.DELY_ACCEPTED, None)
        now = self._clock.now()
        when = params.message_expiration_time
        expires_at = (
            min(when.timestamp(), now + self._config.max_ttl)
            if when
            else now + self._config.default_ttl
        )
        if expires_at <= now:
            raise InvalidRequest("messageExpirationTime is in the past")
        await self._backend.set_expiry(stored.seq, expires_at)
        self._delivery.update_in_memory(recipient, stored.seq, expires_at)
        return with_status(resp, DeliveryStatus.DELY_STORED, None)
