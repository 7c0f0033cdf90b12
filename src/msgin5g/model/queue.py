"""Items the server has accepted and must still deliver (store-and-forward queue)."""

import msgspec

from msgin5g.model.application import as_of_key
from msgin5g.model.messages import Imdn, Msg

__all__ = ["QueuedItem", "ReportRoute", "fanout_template", "member_copy"]


class QueuedItem(msgspec.Struct, gc=False):
    """A message or report accepted for one recipient and not yet delivered.

    The item is written durably before the sender gets its acknowledgement and
    removed once the recipient acknowledged it (or it expired / failed).

    Attributes:
        recipient: UE Service ID of the recipient.
        item: the exact ``MSG`` or ``IMDN`` the recipient will get.
        priority: :class:`msgin5g.spec.delivery.PriorityRank` value (0 first).
        expires_at: epoch seconds after which the item is dropped.
        store: whether the item may wait while the recipient is unreachable
            (``storeAndForwardFlag``); if False a failed delivery drops it.
        seq: storage-assigned arrival order; 0 until enqueued.
    """

    recipient: str
    item: Msg | Imdn
    priority: int
    expires_at: float
    store: bool
    seq: int = 0


class ReportRoute(msgspec.Struct, frozen=True, gc=False):
    """Who may report on a message and who gets the report (digest §3.9.3 step 1)."""

    message_id: str
    reporter: str
    originator: str
    expires_at: float


def fanout_template(msg: Msg) -> Msg:
    """``msg`` without a UE/AS recipient: the one stored copy of a fan-out."""
    return msgspec.structs.replace(
        msg, recipient_ue_service_id=None, recipient_as_service_id=None
    )


def member_copy(template: Msg, recipient: str) -> Msg:
    """The copy of a fan-out ``template`` for one recipient key.

    A UE Service ID fills ``recipientUeServiceId``; an AS key (``as/<id>``)
    fills ``recipientAsServiceId``. The group / topic / area member stays.
    """
    as_id = as_of_key(recipient)
    if as_id is not None:
        return msgspec.structs.replace(template, recipient_as_service_id=as_id)
    return msgspec.structs.replace(template, recipient_ue_service_id=recipient)
