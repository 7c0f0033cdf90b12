"""The FastAPI application of the northbound APIs (TS 29.538; digest §3.2).

``create_app(service, config)`` mounts

* ``/msgs-asregistration/v1`` (:mod:`.msgs_asregistration`),
* ``/msgs-msgdelivery/v1`` (:mod:`.msgs_msgdelivery`),
* ``/ss-gm/v1`` (TS 29.549 SEAL group management, :mod:`.ss_gm`),
* ``/msgg-bgdelivery/v1`` (the Broadcast Message Gateway side, :mod:`.msgg_bgdelivery`),
* ``/msgs-topicsub/v1`` (AS topic subscriptions, a project extension,
  :mod:`.msgs_topicsub`),
* ``/nef-callbacks/v1`` (NEF notifications when ``[nef]`` is set,
  :mod:`.nef_callbacks`),
* ``/oauth2/token`` (client-credentials token endpoint, :mod:`.auth`),
* ``/healthz``, ``/readyz``, ``/metrics`` (operations, :mod:`.ops`; outside
  the API roots; ``app.state.ops`` is filled in by the server),
* ``/admin/v1`` (operator admin API, :mod:`.admin_api`) and ``/console`` (the
  operator web console, :mod:`.console`; its POSTs are form-encoded);
  ``app.state.admin`` is the :class:`~.admin_api.AdminState` they share,

and installs the request pipeline every API shares:

1. :class:`BodyGuard` (pure ASGI, before any parsing): a POST over HTTP/1.x
   without ``Content-Length`` gets ``411``; a body above ``rest.max_body``
   (declared or streamed, also over h2c) gets ``413``; a body that is not
   ``application/json`` gets ``415`` (the token endpoint takes
   ``application/x-www-form-urlencoded``, PATCH ``application/merge-patch+json``);
2. authentication (``401``), the token's scope for the API (``403``
   ``INSUFFICIENT_SCOPE``) and the per-AS rate limit (``429``), see :mod:`.auth`;
3. pydantic validation of the body against the TS 29.538 schema → ``400`` with
   ``invalidParams`` naming each offending member;
4. the service call; domain errors become problems in :mod:`.problems` only.

Any other exception is logged once with its traceback and answered ``500``
ProblemDetails without detail; the server keeps serving.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from msgin5g.config import RestConfig
from msgin5g.errors import MSGin5GError
from msgin5g.service.applications import TargetNetworks
from msgin5g.service.messaging import MessagingService
from msgin5g.service.operator import OperatorView
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest import (
    admin_api,
    console,
    msgg_bgdelivery,
    msgs_asregistration,
    msgs_gwregistration,
    msgs_msgdelivery,
    msgs_topicsub,
    nef_callbacks,
    ss_gm,
)
from msgin5g.transports.rest.asgi_io import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    read_body,
    replay,
)
from msgin5g.transports.rest.auth import parse_client_credentials
from msgin5g.transports.rest.context import (
    Answer,
    InsufficientScope,
    RestContext,
    Unauthorized,
)
from msgin5g.transports.rest.ops import Ops, RequestCounter
from msgin5g.transports.rest.ops import router as ops_router
from msgin5g.transports.rest.problems import problem, problem_for

__all__ = ["INSUFFICIENT_SCOPE", "BodyGuard", "create_app"]

log = logging.getLogger(__name__)


TOKEN_PATH = "/oauth2/token"  # noqa: S105 - a path, not a secret
_FORM = "application/x-www-form-urlencoded"
INSUFFICIENT_SCOPE = "INSUFFICIENT_SCOPE"
"""``cause`` of the ``403`` for a token without the API's scope (RFC 6750 name)."""


class BodyGuard:
    """ASGI middleware: 411 / 413 / 415 before the body reaches the framework."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"POST", "PUT", "PATCH"}:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        length = headers.get(b"content-length")
        reply = None
        if length is None and str(scope.get("http_version", "1.1")).startswith("1"):
            reply = problem(411, FailureCause.INVALID_MESSAGE, "Content-Length needed")
        elif length is not None and (not length.isdigit() or len(length) > 12):
            reply = problem(400, FailureCause.INVALID_MESSAGE, "bad Content-Length")
        elif length is not None and int(length) > self.max_body:
            reply = _too_large(self.max_body)
        else:
            ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            path = scope["path"]
            form = path == TOKEN_PATH or path.startswith(console.CONSOLE_ROOT + "/")
            wanted = _FORM if form else "application/json"
            if scope["method"] == "PATCH":  # RFC 7396 JSON merge patch (SS_GM)
                wanted = "application/merge-patch+json"
            if ctype.decode("latin-1") != wanted:
                reply = problem(
                    415, FailureCause.INVALID_MESSAGE, f"Content-Type must be {wanted}"
                )
        if reply is None:
            body = await read_body(receive, self.max_body)
            if body is None:
                reply = _too_large(self.max_body)
                reply.headers["Connection"] = "close"
            else:
                await self.app(scope, replay(body), send)
                return
        elif (
            reply.status_code == 413 or await read_body(receive, self.max_body) is None
        ):
            # refused before the framework read the body: it was consumed above
            # (bounded) so the connection stays usable, or it is closed
            reply.headers["Connection"] = "close"
        log.info("HTTP %d for %s %s", reply.status_code, scope["method"], scope["path"])
        await reply(scope, receive, send)


def _too_large(limit: int) -> Response:
    return problem(
        413, FailureCause.PAYLOAD_TOO_LARGE, f"request body above {limit} octets"
    )


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def create_app(service: MessagingService, config: RestConfig) -> FastAPI:
    """The ASGI application: FastAPI with :class:`BodyGuard` as its middleware.

    ``app.state.ctx`` is the :class:`~.context.RestContext` of the routes,
    ``app.state.ops`` the :class:`~.ops.Ops` the server fills in and
    ``app.state.rest_requests`` the request counts by (API, status).
    """
    ctx = RestContext(service, config, service.clock.now)
    service.applications.target_networks = TargetNetworks.from_config(config)
    app = FastAPI(
        title="msgin5g northbound APIs (TS 29.538)",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        # no OpenTelemetry here: skip FastAPI's per-request provider checks
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.ctx = ctx
    app.state.ops = ops = Ops()
    rest_requests: dict[tuple[str, str], int] = {}
    app.state.rest_requests = rest_requests
    app.include_router(msgs_asregistration.router(ctx))
    app.include_router(msgs_msgdelivery.router(ctx))
    app.include_router(ss_gm.router(ctx))
    app.include_router(msgg_bgdelivery.router(ctx))
    app.include_router(msgs_gwregistration.router(ctx))
    app.include_router(msgs_topicsub.router(ctx))
    app.include_router(ops_router(ctx, ops))
    if service.nef is not None:  # docs/nef.md
        app.include_router(nef_callbacks.router(service.nef))
    app.state.admin = admin = admin_api.AdminState(OperatorView.of(service))
    app.include_router(admin_api.router(ctx, admin))
    app.include_router(console.router(ctx, admin))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        invalid = [(_loc(e.get("loc", ())), str(e.get("msg", ""))) for e in errors]
        log.info("HTTP 400 %s %s: %s", request.method, request.url.path, invalid[:3])
        return problem(
            400,
            FailureCause.INVALID_MESSAGE,
            "the request does not match the TS 29.538 schema",
            invalid=invalid[:20] or [("body", "invalid")],
        )

    @app.exception_handler(MSGin5GError)
    async def _domain(request: Request, exc: MSGin5GError) -> Response:
        return problem_for(exc)

    @app.exception_handler(Answer)
    async def _answer(request: Request, exc: Answer) -> Response:
        return exc.response

    @app.exception_handler(Unauthorized)
    async def _unauthorized(request: Request, exc: Unauthorized) -> Response:
        log.info("HTTP 401 %s %s", request.method, request.url.path)
        return problem(
            401,
            FailureCause.NOT_AUTHORIZED,
            "a valid OAuth2 bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="msgin5g"'},
        )

    @app.exception_handler(InsufficientScope)
    async def _scope(request: Request, exc: InsufficientScope) -> Response:
        log.info("HTTP 403 %s %s: no scope", request.method, request.url.path)
        return problem(
            403,
            INSUFFICIENT_SCOPE,
            f"the access token lacks the scope {exc.scope}",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="msgin5g", error="insufficient_scope", '
                    f'scope="{exc.scope}"'
                )
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        cause = FailureCause.INVALID_MESSAGE
        return problem(exc.status_code, cause, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.error("HTTP 500 %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, FailureCause.INTERNAL_ERROR)

    app.add_api_route(
        TOKEN_PATH, _token_endpoint(ctx), methods=["POST"], include_in_schema=False
    )

    app.add_middleware(msgs_msgdelivery.FastDelivery, ctx=ctx)  # inside BodyGuard
    app.add_middleware(BodyGuard, max_body=config.max_body)
    app.add_middleware(RequestCounter, counts=rest_requests)
    return app


def _token_endpoint(ctx: RestContext) -> Callable[[Request], Awaitable[Response]]:
    """``POST /oauth2/token``: client credentials grant (see :mod:`.auth`)."""
    service = ctx.service

    async def token(request: Request) -> Response:
        grant, client_id, secret, scope = parse_client_credentials(
            await request.body(), request.headers.get("authorization")
        )
        if grant != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type")
        if not client_id or secret is None:
            return _oauth_error(400, "invalid_request")
        address = request.client.host if request.client else ""
        wait = ctx.throttle.retry_after(client_id, address)
        if wait:
            log.warning("token request of %s from %s throttled", client_id, address)
            return _oauth_error(429, "invalid_client", retry_after=wait)
        client = await service.applications.authenticate(client_id, secret)
        if client is None:
            ctx.throttle.failed(client_id, address)
            log.warning("token refused for client %s from %s", client_id, address)
            return _oauth_error(401, "invalid_client")
        granted = client.scopes
        if scope is not None:
            asked = frozenset(scope.split())
            if not asked or not asked <= granted:
                return _oauth_error(400, "invalid_scope")
            granted = asked
        access, lifetime = await ctx.tokens.issue(client_id, granted)
        return JSONResponse(
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": lifetime,
                "scope": " ".join(sorted(granted)),
            },
            headers={"Cache-Control": "no-store"},
        )

    return token


def _oauth_error(status: int, error: str, *, retry_after: int = 0) -> Response:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="msgin5g"'
    body = {"error": error}
    if retry_after:
        headers["Retry-After"] = str(retry_after)
        body["error_description"] = "too many failed attempts: retry later"
    return JSONResponse(body, status_code=status, headers=headers)
