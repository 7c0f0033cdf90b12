"""MSGS_ASRegistration, ``{apiRoot}/msgs-asregistration/v1`` (TS 29.538 §5/§8.1).

Digest §2.5 (stage 2, TS 23.554 §8.2.5/§8.2.6) and §3.4 (API):

* ``POST /registrations`` with ``ASRegistration`` → ``201 Created``,
  ``Location: {apiRoot}/msgs-asregistration/v1/registrations/{registrationId}``
  and ``ASRegistrationAck`` whose mandatory ``result`` is
  ``{"status": 201, "title": "Created"}`` [P]; a registered ``asSvcId`` → ``403``
  ``AS_ALREADY_REGISTERED`` [P];
* ``DELETE /registrations/{registrationId}`` → ``200`` with ``ASRegistrationAck``
  (``result`` ``{"status": 200, "title": "OK"}``); unknown id → ``404``; another
  client's registration → ``403``.

The registration (``asProf`` kept as JSON text) is stored durably by the service
before the ``201``.
"""

import json

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from msgin5g.codec.openapi_json import ASRegistration, ASRegistrationAck, ProblemDetails
from msgin5g.transports.rest.context import RestContext

__all__ = ["PREFIX", "SCOPE", "router"]

SCOPE = "msgs-asregistration"
"""The OAuth2 scope a token needs for this API."""
PREFIX = "/msgs-asregistration/v1"


def _ack(as_service_id: str, status: int, title: str) -> str:
    ack = ASRegistrationAck(
        as_svc_id=as_service_id, result=ProblemDetails(status=status, title=title)
    )
    return ack.model_dump_json(by_alias=True, exclude_none=True)


def router(ctx: RestContext) -> APIRouter:
    """The MSGS_ASRegistration routes bound to ``ctx``."""
    api = APIRouter(prefix=PREFIX)
    authorized = ctx.authorize(SCOPE)

    @api.post("/registrations", status_code=201, response_model=None)
    async def register(
        body: ASRegistration,
        request: Request,
        caller: str | None = Depends(authorized),
    ) -> Response:
        ctx.admit(caller, body.as_svc_id)
        profile = (
            json.dumps(body.as_prof.wire(), separators=(",", ":"))
            if body.as_prof is not None
            else "{}"
        )
        registration = await ctx.service.register_as(
            body.as_svc_id,
            application_id=body.app_id,
            target_uri=body.target_uri,
            profile=profile,
            client=caller,
        )
        location = ctx.location(
            request, f"{PREFIX}/registrations/{registration.registration_id}"
        )
        return Response(
            _ack(body.as_svc_id, 201, "Created"),
            status_code=201,
            media_type="application/json",
            headers={"Location": location},
        )

    @api.delete("/registrations/{registrationId}", response_model=None)
    async def deregister(
        registrationId: str,  # the YAML's parameter name
        caller: str | None = Depends(authorized),
    ) -> Response:
        ctx.admit(caller, registrationId)
        registration = await ctx.service.deregister_as(registrationId, client=caller)
        return Response(
            _ack(registration.as_service_id, 200, "OK"),
            media_type="application/json",
        )

    return api
