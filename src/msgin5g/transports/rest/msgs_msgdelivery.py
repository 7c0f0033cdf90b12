"""MSGS_MSGDelivery, ``{apiRoot}/msgs-msgdelivery/v1`` (TS 29.538 §5/§8; digest §3.5).

* ``POST /deliver-as-message`` (MSGS_MSGDelivery_ASODelivery, Application-to-Point,
  digest §2.11): ``oriAddr`` must be an AS (``400`` otherwise), registered
  (``403``) and, with OAuth2, the caller's own; ``destAddr`` ``UE``, ``AS``,
  ``GROUP`` (fanned out to the members of the server's group store), ``TOPIC``
  (fanned out to its subscribers) or ``BC`` (a Broadcast Area, fanned out to the
  UEs in it, digest §2.14, :mod:`msgin5g.service.broadcast`): an unknown area is
  ``404`` ``RECIPIENT_UNKNOWN``, an AS the area does not allow ``403``
  ``NOT_AUTHORIZED``.
* ``POST /deliver-ue-message`` (MSGS_MSGDelivery_UEODelivery): a Message Gateway
  sends for a UE (``oriAddr`` ``UE``, provisioned or registered, else ``403``);
  a ``BC`` destination is refused ``403`` unless the area lets UEs broadcast.
* ``POST /deliver-report`` (ASODeliveryReport / UEODeliveryReport): a report on a
  message this server delivered to the reporter; relayed to the original sender
  like an ``IMDN`` (``404`` ``MESSAGE_NOT_FOUND`` when no report is expected).

Each body becomes a model ``Msg``/``Imdn`` (:mod:`msgin5g.codec.openapi_json`) and
enters the same service procedures as MSGin5G-1 traffic; the ``MSGRESP`` becomes a
``200 MessageDeliveryAck`` (``status`` absent = accepted, ``DELY_STORED``,
``DELY_FAILED`` + ``failureCause``) or a problem (:func:`.problems.ack_or_problem`).
"""

from fastapi import APIRouter, Depends
from starlette.responses import Response

from msgin5g.codec.openapi_json import (
    ASMessageDelivery,
    DeliveryStatusReport,
    UEMessageDelivery,
    imdn_from_report,
    msg_from_as_delivery,
    msg_from_ue_delivery,
)
from msgin5g.model.messages import MsgResp
from msgin5g.spec.delivery import DeliveryStatus
from msgin5g.transports.rest.context import RestContext
from msgin5g.transports.rest.problems import ack_or_problem

__all__ = ["PREFIX", "SCOPE", "router"]

SCOPE = "msgs-msgdelivery"
"""The OAuth2 scope a token needs for this API."""
PREFIX = "/msgs-msgdelivery/v1"


def router(ctx: RestContext) -> APIRouter:
    """The MSGS_MSGDelivery routes bound to ``ctx``."""
    api = APIRouter(prefix=PREFIX)
    authorized = ctx.authorize(SCOPE)

    @api.post("/deliver-as-message", response_model=None)
    async def deliver_as_message(
        body: ASMessageDelivery, caller: str | None = Depends(authorized)
    ) -> Response:
        ctx.admit(caller, body.ori_addr.addr)
        resp = await ctx.submit(msg_from_as_delivery(body), caller)
        return ack_or_problem(resp, body.ori_addr)

    @api.post("/deliver-ue-message", response_model=None)
    async def deliver_ue_message(
        body: UEMessageDelivery, caller: str | None = Depends(authorized)
    ) -> Response:
        ctx.admit(caller, body.ori_addr.addr)
        resp = await ctx.submit(msg_from_ue_delivery(body), caller)
        return ack_or_problem(resp, body.ori_addr)

    @api.post("/deliver-report", response_model=None)
    async def deliver_report(
        body: DeliveryStatusReport, caller: str | None = Depends(authorized)
    ) -> Response:
        ctx.admit(caller, body.ori_addr.addr)
        imdn = imdn_from_report(body)
        await ctx.service.report_from_api(imdn, client=caller)
        accepted = MsgResp(
            message_id=body.msg_id, delivery_status=DeliveryStatus.DELY_ACCEPTED
        )
        return ack_or_problem(accepted, body.ori_addr)

    return api
