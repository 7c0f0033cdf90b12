"""AS topic subscriptions, ``{apiRoot}/msgs-topicsub/v1`` (PROJECT EXTENSION).

TS 23.554 §8.8.1 lets an Application Server subscribe to Messaging Topics (digest
§2.15.1) but TS 29.538 Rel-18 defines no resource for it; this API carries the
stage-2 IEs (subscriber, topic list, expiration) in the house style of the
standard APIs (same OAuth2, rate limit, ProblemDetails):

* ``POST /subscriptions`` with ``ASTopicSubscription`` → ``201 Created``,
  ``Location: …/subscriptions/{asSvcId}``, body: the AS's topics after the
  change and the granted ``expiration`` (requested value capped by
  ``delivery.topic_max_lifetime``; absent → ``delivery.topic_default_lifetime``);
* ``GET /subscriptions/{asSvcId}`` → ``200`` with the current topics, ``404`` if
  none;
* ``DELETE /subscriptions/{asSvcId}[?topic=…&topic=…]`` → ``204`` (all topics
  when no ``topic`` is given), ``404`` if none of them was subscribed.

The topic policy (docs/security-topics.md) applies as to UEs, with the AS as
principal ``as/<asSvcId>``: when it refuses any of the topics the answer is
``403`` ``NOT_AUTHORIZED`` and none is subscribed (another UE's ``alice/…``
needs an operator grant, ``msgin5g topic allow``). An A2P publication the policy
refuses is likewise a ``403``.

Publications to a subscribed topic (from a UE ``MSG`` with ``messagingTopic``
or an A2P ``destAddr.addrType = TOPIC``) reach the AS's ``targetUri`` like P2A
messages, durably and with retries. AS de-registration ends its subscriptions.
"""

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import JSONResponse, Response

from msgin5g.codec.openapi_json import ASTopicSubscription
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest.context import RestContext
from msgin5g.transports.rest.problems import problem

__all__ = ["PREFIX", "SCOPE", "router"]

SCOPE = "msgs-topicsub"
"""The OAuth2 scope a token needs for this API."""
PREFIX = "/msgs-topicsub/v1"


def _body(
    as_svc_id: str, topics: list[str], expires_at: float | None
) -> dict[str, object]:
    body: dict[str, object] = {"asSvcId": as_svc_id, "messagingTopics": topics}
    if expires_at is not None:
        body["expiration"] = datetime.fromtimestamp(expires_at, UTC).isoformat()
    return body


def _none(as_svc_id: str) -> Response:
    return problem(
        404,
        FailureCause.RECIPIENT_UNKNOWN,
        f"{as_svc_id} has no such topic subscription",
    )


def router(ctx: RestContext) -> APIRouter:
    """The topic subscription routes bound to ``ctx``."""
    api = APIRouter(prefix=PREFIX)
    authorized = ctx.authorize(SCOPE)

    @api.post("/subscriptions", status_code=201, response_model=None)
    async def subscribe(
        body: ASTopicSubscription,
        request: Request,
        caller: str | None = Depends(authorized),
    ) -> Response:
        ctx.admit(caller, body.as_svc_id)
        expires_at = await ctx.service.subscribe_as(
            body.as_svc_id,
            list(dict.fromkeys(body.messaging_topics)),
            body.expiration,
            client=caller,
        )
        topics = ctx.service.topics_of_as(body.as_svc_id, client=caller)
        location = ctx.location(request, f"{PREFIX}/subscriptions/{body.as_svc_id}")
        return JSONResponse(
            _body(body.as_svc_id, topics, expires_at),
            status_code=201,
            headers={"Location": location},
        )

    @api.get("/subscriptions/{asSvcId}", response_model=None)
    async def show(
        asSvcId: str,  # the path parameter's JSON name
        caller: str | None = Depends(authorized),
    ) -> Response:
        ctx.admit(caller, asSvcId)
        topics = ctx.service.topics_of_as(asSvcId, client=caller)
        if not topics:
            return _none(asSvcId)
        return JSONResponse(_body(asSvcId, topics, None))

    @api.delete("/subscriptions/{asSvcId}", status_code=204, response_model=None)
    async def unsubscribe(
        asSvcId: str,  # the path parameter's JSON name
        topic: list[str] = Query(default=[]),  # noqa: B008 - FastAPI idiom
        caller: str | None = Depends(authorized),
    ) -> Response:
        ctx.admit(caller, asSvcId)
        ended = await ctx.service.unsubscribe_as(asSvcId, topic, client=caller)
        if not ended:
            return _none(asSvcId)
        return Response(status_code=204)

    return api
