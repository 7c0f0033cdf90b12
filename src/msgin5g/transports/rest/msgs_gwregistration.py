"""Message Gateway registration, ``{apiRoot}/msgs-gwregistration/v1`` [P].

TS 23.554 §8.2.3 / §8.2.4 (digest §2.4) define the Non-MSGin5G UE
registration and de-registration by a Legacy 3GPP or Non-3GPP Message
Gateway; TS 29.538 Rel-18 defines no API for them, so this is the project's
(the name the digest gives it). JSON members follow TS 29.538 spelling habits:

* ``POST /registrations`` — ``GatewayRegistration`` ``{"gwId", "gwType"
  ("L3G" | "N3G"), "gwUri" ({apiRoot} of its MSGG API), "ueSvcIds": [...],
  "validity" (s, default 3600)}`` → ``201 Created`` (first time) or ``200 OK``
  (refresh; the list replaces the previous one), ``Location:
  {apiRoot}/msgs-gwregistration/v1/registrations/{gwId}``, body
  ``GatewayRegistrationAck`` ``{"gwId", "validity", "ueResults": [{"ueSvcId",
  "result": "SUCCESS" | "FAILURE", "failureCause"?}]}`` (Table 8.2.1-4 per UE);
* ``GET /registrations/{gwId}`` → the registration (``404`` if unknown);
* ``POST /registrations/{gwId}/deregister`` — ``{"ueSvcIds": [...]}`` → ``200``
  ``GatewayRegistrationAck`` (Table 8.2.4-2 per UE);
* ``DELETE /registrations/{gwId}`` → ``200`` with every UE de-registered.

``gwUri`` must pass ``rest.target_networks`` like an AS's ``targetUri``
(``400``). With OAuth2 the scope ``msgs-gwregistration`` is needed and a
gateway identity stays with the client that first registered it (``403``).
"""

import json

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from starlette.responses import Response

from msgin5g.codec.openapi_json import _Request, _Wire
from msgin5g.errors import InvalidRequest, NotAuthorized, NotRegistered
from msgin5g.service.message_gateways import (
    GatewayKind,
    GatewayResult,
    MessageGateway,
)
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest.context import RestContext

__all__ = ["PREFIX", "SCOPE", "GatewayRegistration", "router"]

SCOPE = "msgs-gwregistration"
"""The OAuth2 scope a token needs for this API."""
PREFIX = "/msgs-gwregistration/v1"


class GatewayRegistration(_Request):
    """Table 8.2.3-1: gateway identity and type, the UE Service IDs it represents."""

    gw_id: str = Field(min_length=1, max_length=256)
    gw_type: GatewayKind
    gw_uri: str = Field(min_length=8, max_length=2048)
    ue_svc_ids: list[str] = Field(max_length=100_000)
    validity: float = 3600.0


class GatewayDeregistration(_Request):
    """Table 8.2.4-1: the UE Service IDs to de-register."""

    ue_svc_ids: list[str] = Field(min_length=1, max_length=100_000)


class UeResult(_Wire):
    """One UE Service ID's outcome."""

    ue_svc_id: str
    result: str
    failure_cause: str | None = None


class GatewayRegistrationAck(_Wire):
    """The answer: the gateway and the per-UE results."""

    gw_id: str
    gw_type: str | None = None
    gw_uri: str | None = None
    validity: float | None = None
    ue_results: list[UeResult]


def _results(results: list[GatewayResult]) -> list[UeResult]:
    return [
        UeResult(
            ue_svc_id=r.ue_service_id,
            result="SUCCESS" if r.failure_cause is None else "FAILURE",
            failure_cause=None if r.failure_cause is None else str(r.failure_cause),
        )
        for r in results
    ]


def _json(ack: GatewayRegistrationAck, status: int, **headers: str) -> Response:
    return Response(
        json.dumps(ack.wire(), separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def router(ctx: RestContext) -> APIRouter:
    """The gateway registration routes bound to ``ctx``."""
    api = APIRouter(prefix=PREFIX)
    authorized = ctx.authorize(SCOPE)
    gateways = ctx.service.gateways

    def owned(gw_id: str, caller: str | None) -> MessageGateway:
        gateway = gateways.get(gw_id)
        if gateway is None:
            raise NotRegistered(
                f"gateway {gw_id} is not registered",
                cause=FailureCause.RECIPIENT_UNKNOWN,
            )
        if gateway.owner != caller and not ctx.is_operator(caller):
            raise NotAuthorized(f"gateway {gw_id} belongs to another client")
        return gateway

    @api.post("/registrations", response_model=None)
    async def register(
        body: GatewayRegistration,
        request: Request,
        caller: str | None = Depends(authorized),
    ) -> Response:
        ctx.admit(caller, body.gw_id)
        try:
            await ctx.service.applications.target_networks.check_uri(body.gw_uri)
        except InvalidRequest as exc:
            raise InvalidRequest(f"gwUri: {exc.detail}") from None
        created = gateways.get(body.gw_id) is None
        results = gateways.register(
            body.gw_id,
            body.gw_type,
            body.gw_uri,
            body.ue_svc_ids,
            validity=body.validity,
            owner=caller,
        )
        ack = GatewayRegistrationAck(
            gw_id=body.gw_id, validity=body.validity, ue_results=_results(results)
        )
        location = ctx.location(request, f"{PREFIX}/registrations/{body.gw_id}")
        return _json(ack, 201 if created else 200, Location=location)

    @api.get("/registrations/{gwId}", response_model=None)
    async def read(gwId: str, caller: str | None = Depends(authorized)) -> Response:
        gateway = owned(gwId, caller)
        ack = GatewayRegistrationAck(
            gw_id=gwId,
            gw_type=gateway.kind.value,
            gw_uri=gateway.api_root,
            validity=max(0.0, gateway.expires_at - ctx.service.clock.now()),
            ue_results=_results([GatewayResult(ue) for ue in gateways.ues_of(gwId)]),
        )
        return _json(ack, 200)

    @api.post("/registrations/{gwId}/deregister", response_model=None)
    async def deregister_ues(
        gwId: str,
        body: GatewayDeregistration,
        caller: str | None = Depends(authorized),
    ) -> Response:
        ctx.admit(caller, gwId)
        owned(gwId, caller)
        results = gateways.deregister(gwId, body.ue_svc_ids)
        return _json(
            GatewayRegistrationAck(gw_id=gwId, ue_results=_results(results)), 200
        )

    @api.delete("/registrations/{gwId}", response_model=None)
    async def deregister(
        gwId: str, caller: str | None = Depends(authorized)
    ) -> Response:
        ctx.admit(caller, gwId)
        owned(gwId, caller)
        results = gateways.deregister(gwId)
        return _json(
            GatewayRegistrationAck(gw_id=gwId, ue_results=_results(results)), 200
        )

    return api
