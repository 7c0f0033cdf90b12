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

Hot path (issue 13): ``POST /deliver-as-message`` is served by :class:`FastDelivery`,
a plain ASGI layer just inside :class:`~.asgi.BodyGuard`, without FastAPI's
routing, dependency solving and thread-pool hop (the sync auth dependency ran in
a worker thread per request). It applies the same checks in the same order
(token and scope, pydantic validation of the same model with its rules, the
per-AS rate limit, the service call, the same answers); any request it would
answer with a 401/403 (auth) or a 400 (schema) is handed to the FastAPI route
instead, so those answers come from one place.
"""

import logging

from fastapi import APIRouter, Depends
from pydantic import ValidationError
from starlette.responses import Response

from msgin5g.codec.openapi_json import (
    ASMessageDelivery,
    DeliveryStatusReport,
    UEMessageDelivery,
    imdn_from_report,
    msg_from_as_delivery,
    msg_from_ue_delivery,
)
from msgin5g.errors import MSGin5GError
from msgin5g.model.messages import MsgResp
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import DeliveryStatus
from msgin5g.transports.rest.asgi_io import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    read_body,
    replay,
)
from msgin5g.transports.rest.context import Answer, RestContext
from msgin5g.transports.rest.problems import ack_or_problem, problem, problem_for

__all__ = ["PREFIX", "SCOPE", "FastDelivery", "router"]

log = logging.getLogger(__name__)


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


AS_PATH = PREFIX + "/deliver-as-message"


class FastDelivery:
    """ASGI layer serving ``POST /deliver-as-message`` without the framework.

    Everything else, and every request this layer would refuse for auth or
    schema reasons, goes on to ``app`` (FastAPI) with the body replayed.
    """

    def __init__(self, app: ASGIApp, ctx: RestContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != AS_PATH
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        caller: str | None = None
        if self.ctx.config.oauth2:
            authorization = None
            for name, value in scope.get("headers", ()):
                if name.lower() == b"authorization":
                    authorization = value.decode("latin-1")
            token = await self.ctx.tokens.verify(authorization)
            if token is None or SCOPE not in token.scopes:
                await self.app(scope, receive, send)  # 401 / 403 from the route
                return
            caller = token.client_id
        body = await read_body(receive) or b""  # bounded by BodyGuard
        try:
            request = ASMessageDelivery.model_validate_json(body)
        except ValidationError:  # the route answers the 400 (invalidParams)
            await self.app(scope, replay(body), send)
            return
        response = await self._deliver(request, caller)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})

    async def _deliver(self, body: ASMessageDelivery, caller: str | None) -> Response:
        try:
            self.ctx.admit(caller, body.ori_addr.addr)
            resp = await self.ctx.submit(msg_from_as_delivery(body), caller)
            return ack_or_problem(resp, body.ori_addr)
        except MSGin5GError as exc:
            return problem_for(exc)
        except Answer as exc:
            return exc.response
        except Exception as exc:
            log.error("HTTP 500 POST %s", AS_PATH, exc_info=exc)
            return problem(500, FailureCause.INTERNAL_ERROR)
