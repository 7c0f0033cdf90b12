"""MSGG_BGDelivery, ``{apiRoot}/msgg-bgdelivery/v1`` (TS 29.538; digest §2.14, §3.8).

msgin5g acts as the **Broadcast Message Gateway** (BMG) for its own Broadcast
Areas (:mod:`msgin5g.service.broadcast`): ``POST /deliver-message`` with a
``BgMessageDelivery`` distributes the message to the UEs in the area over
MSGin5G-1, one copy per member UE.

* ``destAddr.addrType`` must be ``BC`` (``addr`` = Broadcast Area ID), else
  ``400`` with an ``invalidParams`` entry for ``destAddr.addrType``;
* ``oriAddr`` ``AS``: handled like an A2P broadcast from that AS
  (``submit_from_as``): the AS must be registered (``403``
  ``NOT_REGISTERED``) and, with OAuth2, be the caller (``403``
  ``NOT_AUTHORIZED``); rate-limited per AS;
* ``oriAddr`` ``UE``: handled like ``/deliver-ue-message`` (``submit_for_ue``):
  the UE must be known, and the area must let UEs broadcast (``403``);
* ``priority`` and ``delivStReqInd`` are honoured: the copies are queued with
  that priority and, when a report was asked for, each member's report goes
  back to the originator as for A2P (the AS's ``{targetUri}/deliver-report``,
  or an ``IMDN`` to the UE);
* success (accepted, or stored for offline assigned members) → ``204 No
  Content``; unknown area → ``404`` ``RECIPIENT_UNKNOWN``; originator not
  allowed in the area → ``403`` ``NOT_AUTHORIZED``.

PROJECT CHOICE: ``BgMessageDelivery`` has no store-and-forward member; the
message is stored for offline members with the server's default lifetime
(:func:`msgin5g.codec.openapi_json.msg_from_bg_delivery`).
"""

from fastapi import APIRouter, Depends
from starlette.responses import Response

from msgin5g.codec.openapi_json import BgMessageDelivery, msg_from_bg_delivery
from msgin5g.transports.rest.context import RestContext
from msgin5g.transports.rest.problems import no_content_or_problem

__all__ = ["PREFIX", "SCOPE", "router"]

SCOPE = "msgg-bgdelivery"
"""The OAuth2 scope a token needs for this API."""
PREFIX = "/msgg-bgdelivery/v1"


def router(ctx: RestContext) -> APIRouter:
    """The MSGG_BGDelivery routes bound to ``ctx``."""
    api = APIRouter(prefix=PREFIX)
    authorized = ctx.authorize(SCOPE)

    @api.post("/deliver-message", status_code=204, response_model=None)
    async def deliver_message(
        body: BgMessageDelivery, caller: str | None = Depends(authorized)
    ) -> Response:
        ctx.admit(caller, body.ori_addr.addr)
        resp = await ctx.submit(msg_from_bg_delivery(body), caller)
        return no_content_or_problem(resp)

    return api
