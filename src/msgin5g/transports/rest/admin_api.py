"""The operator admin API: ``/admin/v1`` (JSON, operator only; a project extension).

What the web console (:mod:`.console`) shows, as JSON for scripts; both read
the same :class:`~msgin5g.service.operator.OperatorView`, so there is no
separate state. Not part of TS 29.538 (no 3GPP API covers operations).

======  =====================================  ==========================================
method  path                                   answer
======  =====================================  ==========================================
GET     ``/admin/v1/summary``                  counts, messages in/out, rates, samples
GET     ``/admin/v1/ues?q=&limit=``            registered UEs whose ID contains ``q``
GET     ``/admin/v1/ues/{ueServiceId}``        one UE, its stored items and failures
DELETE  ``/admin/v1/ues/{id}/stored/{msgId}``  discard a stored ``MSG`` (204, else 404)
GET     ``/admin/v1/groups``                   hosted VAL groups
GET     ``/admin/v1/areas``                    Broadcast Areas and their reach
GET     ``/admin/v1/gateways``                 Gateway UEs, UEs behind each
GET     ``/admin/v1/failures?limit=&ue=``      recent delivery failures, newest first
======  =====================================  ==========================================

**Auth**: the rules of ``/metrics`` (:mod:`.ops`): with ``rest.oauth2`` off (the
default, loopback bind) the API is open like every other; with it on, the
``Authorization: Bearer`` token of an ``operator`` client is required (401
without a valid token, 403 for another role). Cookies are not accepted here,
so a browser page of another site cannot make a logged-in operator's browser
call this API (the console has its own CSRF-protected routes).

**Rates**: the server wires :attr:`AdminState.traffic` (cumulative messages
in and out: ``MSG``/``AGGMSG`` uplinks answered ok plus ``msgs-msgdelivery``
requests answered 2xx; items delivered). :class:`RateSampler` keeps one
sample per ``interval`` seconds *when asked* (no background task): the rate
is the difference of the two newest samples, the chart the last
``capacity`` samples.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from msgin5g.service.operator import OperatorView
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest.context import Answer, RestContext, Unauthorized
from msgin5g.transports.rest.problems import problem

__all__ = ["ADMIN_ROOT", "AdminState", "RateSampler", "router"]

ADMIN_ROOT = "/admin/v1"

Traffic = Callable[[], tuple[int, int]]
"""Cumulative (messages in, messages out) of this process."""


class RateSampler:
    """Samples cumulative counters on demand; rates from the newest two samples.

    Args:
        interval: minimum seconds between two samples.
        capacity: samples kept (the chart's width).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        interval: float = 1.0,
        capacity: int = 120,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=capacity)

    def sample(self, traffic: Traffic) -> None:
        """Take a sample unless the newest is younger than ``interval``."""
        now = self._clock()
        if self.samples and now - self.samples[-1][0] < self.interval:
            return
        received, sent = traffic()
        self.samples.append((now, received, sent))

    def rates(self) -> tuple[float, float]:
        """Messages in and out per second between the two newest samples."""
        if len(self.samples) < 2:
            return 0.0, 0.0
        (t0, in0, out0), (t1, in1, out1) = self.samples[-2], self.samples[-1]
        span = max(t1 - t0, 1e-9)
        return max(0, in1 - in0) / span, max(0, out1 - out0) / span

    def series(self) -> list[tuple[float, float, float]]:
        """``(seconds before the newest sample, in/s, out/s)`` oldest first."""
        points = list(self.samples)
        if len(points) < 2:
            return []
        newest = points[-1][0]
        series = []
        for (t0, in0, out0), (t1, in1, out1) in itertools.pairwise(points):
            span = max(t1 - t0, 1e-9)
            series.append(
                (newest - t1, max(0, in1 - in0) / span, max(0, out1 - out0) / span)
            )
        return series


@dataclass
class AdminState:
    """What the admin API and the console share; ``app.state.admin``.

    Attributes:
        view: the operator's view of the service.
        traffic: cumulative (in, out) counters; the server wires it (None: the
            counters of the service alone, messages out only).
        sampler: the rate sampler.
    """

    view: OperatorView
    traffic: Traffic | None = None
    sampler: RateSampler = field(default_factory=RateSampler)

    def counts(self) -> tuple[int, int]:
        """Cumulative messages in and out."""
        if self.traffic is not None:
            return self.traffic()
        return 0, self.view.summary()["delivered"]

    def summary(self) -> dict[str, Any]:
        """The summary with traffic figures and the rate series."""
        self.sampler.sample(self.counts)
        received, sent = self.counts()
        rate_in, rate_out = self.sampler.rates()
        body = self.view.summary()
        body["messagesIn"] = received
        body["messagesOut"] = sent
        body["rateIn"] = round(rate_in, 2)
        body["rateOut"] = round(rate_out, 2)
        body["series"] = [
            {"ago": round(ago, 2), "in": round(i, 2), "out": round(o, 2)}
            for ago, i, o in self.sampler.series()
        ]
        return body


def require_operator(ctx: RestContext, request: Request) -> str | None:
    """The operator's client id from the bearer token (None with OAuth2 off).

    Raises:
        Unauthorized: no valid bearer token (401).
        Answer: a valid token of a client that is not an operator (403).
    """
    if not ctx.config.oauth2:
        return None
    token = ctx.tokens.token_of(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized
    if not ctx.is_operator(token.client_id):
        raise Answer(
            problem(
                403,
                FailureCause.NOT_AUTHORIZED,
                "the admin API needs the token of an operator client",
            )
        )
    return token.client_id


def router(ctx: RestContext, admin: AdminState) -> APIRouter:
    """The routes of ``/admin/v1``."""
    routes = APIRouter(prefix=ADMIN_ROOT, include_in_schema=False)
    view = admin.view

    def allowed(request: Request) -> None:
        require_operator(ctx, request)

    @routes.get("/summary")
    async def summary(request: Request) -> Response:
        allowed(request)
        return JSONResponse(admin.summary())

    @routes.get("/ues")
    async def ues(request: Request, q: str = "", limit: int = 50) -> Response:
        allowed(request)
        return JSONResponse({"ues": view.search(q, limit)})

    @routes.get("/ues/{ue_service_id}")
    async def ue(request: Request, ue_service_id: str, limit: int = 100) -> Response:
        allowed(request)
        found = await view.ue(ue_service_id, limit)
        if found is None:
            return problem(
                404,
                FailureCause.UNKNOWN_UE_SERVICE_ID,
                f"{ue_service_id} is neither registered nor has stored items",
            )
        return JSONResponse(found)

    @routes.delete("/ues/{ue_service_id}/stored/{message_id}")
    async def discard(
        request: Request, ue_service_id: str, message_id: str
    ) -> Response:
        allowed(request)
        if not await view.discard(ue_service_id, message_id):
            return problem(
                404,
                FailureCause.MESSAGE_NOT_FOUND,
                f"no stored MSG {message_id} for {ue_service_id}",
            )
        return Response(status_code=204)

    @routes.get("/groups")
    async def groups(request: Request) -> Response:
        allowed(request)
        return JSONResponse({"groups": await view.groups()})

    @routes.get("/areas")
    async def areas(request: Request) -> Response:
        allowed(request)
        return JSONResponse({"areas": await view.areas()})

    @routes.get("/gateways")
    async def gateways(request: Request, limit: int = 100) -> Response:
        allowed(request)
        return JSONResponse({"gateways": view.gateways(limit)})

    @routes.get("/failures")
    async def failures(
        request: Request, limit: int = 100, ue: str | None = None
    ) -> Response:
        allowed(request)
        return JSONResponse({"failures": view.failures(limit, ue)})

    return routes
