"""Operations endpoints on the REST port: ``/healthz``, ``/readyz``, ``/metrics``.

What: a router outside the TS 29.538 API roots and :class:`RequestCounter`,
the pure-ASGI middleware that counts requests by API root and HTTP status for
``msgin5g_rest_requests_total``. The server wires the figures in after start-up
through :class:`Ops` (``app.state.ops``): this transport does not import the
server or prometheus-client.

* ``GET /healthz``: 200 while the process serves HTTP (liveness). No auth.
* ``GET /readyz``: 200 when every readiness check passes (storage answers, the
  CoAP socket is bound), else 503; the body names each check. No auth: it
  says nothing but ``ok`` or what is wrong.
* ``GET /metrics``: the Prometheus text format. With OAuth2 off (the default,
  on a loopback bind) it is open like the APIs; with ``rest.oauth2`` on it
  needs the bearer token of an ``operator`` client (401 without a token, 403
  for other roles), the same tokens as the APIs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest.context import RestContext, Unauthorized
from msgin5g.transports.rest.problems import problem

__all__ = ["Ops", "RequestCounter", "router"]

Check = Callable[[], Awaitable[str | None]]
"""A readiness check: None when fine, else what is wrong (one line)."""

_APIS = frozenset(
    {
        "msgs-asregistration",
        "msgs-msgdelivery",
        "ss-gm",
        "msgg-bgdelivery",
        "msgs-topicsub",
        "msgs-gwregistration",
        "nef-callbacks",
        "oauth2",
    }
)
_OTHER_ROOTS = {"admin": "admin", "console": "console"}
"""Roots outside the TS 29.538 APIs with a label of their own (``/admin/v1``,
``/console``); ``oauth2`` is the token endpoint."""
_OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_CHECK_TIMEOUT = 5.0


@dataclass
class Ops:
    """What the operations endpoints serve; filled in by the server.

    Attributes:
        metrics: renders the exposition text (None: 503 until wired).
        checks: named readiness checks.
        content_type: the media type of :attr:`metrics`' output.
    """

    metrics: Callable[[], bytes] | None = None
    checks: dict[str, Check] = field(default_factory=dict)
    content_type: str = "text/plain; version=0.0.4; charset=utf-8"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestCounter:
    """ASGI middleware: counts HTTP requests by API root and status code.

    The label set stays bounded: the ``api`` label is the API root
    (``msgs-msgdelivery``, ``nef-callbacks``...), ``admin`` for ``/admin/v1``,
    ``console`` for ``/console``; an unknown first path segment counts as
    ``other`` and the operations endpoints are not counted.
    """

    def __init__(self, app: ASGIApp, counts: dict[tuple[str, str], int]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path or path in _OPS_PATHS:
            await self.app(scope, receive, send)
            return
        root = path.lstrip("/").partition("/")[0]
        api = root if root in _APIS else _OTHER_ROOTS.get(root, "other")
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            key = (api, str(status))
            self.counts[key] = self.counts.get(key, 0) + 1


def router(ctx: RestContext, ops: Ops) -> APIRouter:
    """The routes of ``/healthz``, ``/readyz`` and ``/metrics``."""
    routes = APIRouter(include_in_schema=False)

    @routes.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @routes.get("/readyz")
    async def readyz() -> Response:
        results = await asyncio.gather(*(_run(c) for c in ops.checks.values()))
        checks = dict(zip(ops.checks, results, strict=True))
        failed = {name: why for name, why in checks.items() if why is not None}
        body = {
            "status": "fail" if failed else "ok",
            "checks": {name: checks[name] or "ok" for name in checks},
        }
        return JSONResponse(body, status_code=503 if failed else 200)

    @routes.get("/metrics")
    async def metrics(request: Request) -> Response:
        if ctx.config.oauth2:
            token = await ctx.tokens.verify(request.headers.get("authorization"))
            if token is None:
                raise Unauthorized
            if not ctx.is_operator(token.client_id):
                return problem(
                    403,
                    FailureCause.NOT_AUTHORIZED,
                    "/metrics needs the token of an operator client",
                )
        if ops.metrics is None:
            return problem(503, FailureCause.INTERNAL_ERROR, "metrics not wired")
        return Response(ops.metrics(), media_type=ops.content_type)

    return routes


async def _run(check: Check) -> str | None:
    """Run one check within :data:`_CHECK_TIMEOUT`; an exception is a failure."""
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            return await check()
    except TimeoutError:
        return f"no answer within {_CHECK_TIMEOUT:g} s"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
