"""What the API routers share: :class:`RestContext` and the signals they raise.

The routers (``msgs_*``, ``msgg_*``, ``ss_gm``) import this module and
:mod:`.asgi` imports the routers, so nothing here imports :mod:`.asgi` (the
cycle issue 11 asked to remove). The signals are not domain errors (those live
in :mod:`msgin5g.errors`): they stop a request at the edge, and the application
built by :func:`.asgi.create_app` answers them.
"""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Request
from starlette.responses import Response

from msgin5g.config import RestConfig
from msgin5g.model.application import ROLE_OPERATOR
from msgin5g.model.messages import Msg, MsgResp
from msgin5g.service.messaging import MessagingService
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest.auth import AuthThrottle, RateLimiter
from msgin5g.transports.rest.jwt_tokens import JwtIssuer
from msgin5g.transports.rest.problems import problem

__all__ = ["Answer", "InsufficientScope", "RestContext", "Unauthorized"]


class Unauthorized(Exception):
    """No valid bearer token (answered ``401``)."""


class InsufficientScope(Exception):
    """The token lacks the API's scope (answered ``403``)."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class Answer(Exception):
    """Stop the request and answer with ``response`` (a problem built on the spot)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass
class RestContext:
    """What the API handlers share: the service, configuration, auth, limits."""

    service: MessagingService
    config: RestConfig
    clock: Callable[[], float] = field(default=time.time)
    tokens: JwtIssuer = field(init=False)
    limiter: RateLimiter = field(init=False)
    throttle: AuthThrottle = field(init=False)
    in_flight: int = field(init=False, default=0)
    """Messages submitted through the APIs and not answered yet."""
    refused: int = field(init=False, default=0)
    """Messages answered ``503`` because ``in_flight`` was at its bound."""

    def __post_init__(self) -> None:
        self.tokens = JwtIssuer(
            self.service,
            lifetime=self.config.token_lifetime,
            clock=self.clock,
            issuer=self.config.jwt_issuer,
            audience=self.config.jwt_audience,
            key_file=self.config.jwt_key_file,
        )
        self.limiter = RateLimiter(
            self.config.rate_limit, self.config.rate_burst, self.clock
        )
        self.throttle = AuthThrottle(
            self.config.auth_failure_burst, self.config.auth_failure_rate, self.clock
        )

    def authorize(self, scope: str) -> Callable[[Request], Awaitable[str | None]]:
        """A FastAPI dependency: the caller of an API that needs ``scope``.

        The dependency returns the authenticated client id (None with OAuth2
        off) and raises :class:`Unauthorized` (no valid bearer token, ``401``)
        or :class:`InsufficientScope` (``403``).
        """

        async def caller(request: Request) -> str | None:
            if not self.config.oauth2:
                return None
            token = await self.tokens.verify(request.headers.get("authorization"))
            if token is None:
                raise Unauthorized
            if scope not in token.scopes:
                raise InsufficientScope(scope)
            return token.client_id

        return caller

    def is_operator(self, caller: str | None) -> bool:
        """Whether the caller is an ``operator`` client."""
        if caller is None:
            return False
        return self.service.applications.client(caller).role == ROLE_OPERATOR

    def admit(self, caller: str | None, as_service_id: str) -> None:
        """Apply the per-AS rate limit (raises ``Overloaded``)."""
        self.limiter.check(caller or as_service_id)

    async def submit(self, msg: Msg, caller: str | None) -> MsgResp:
        """Enter an API's message: from its AS (A2P), or for a UE (a gateway).

        Which one follows from the ``MSG`` the codec built from ``oriAddr``
        (``originatingAsServiceId`` or ``originatingUeServiceId``).

        Back-pressure: with ``rest.max_in_flight`` messages already inside the
        service (waiting for their storage commit or routing), the message is
        refused at once, before any state is touched, with ``503``
        ``SERVER_CONGESTION`` and ``Retry-After: 1`` (raises :class:`Answer`):
        the server's latency stays bounded instead of a queue growing until
        every answer is late. The AS may send the same ``msgId`` again.
        """
        if self.in_flight >= self.config.max_in_flight:
            self.refused += 1
            raise Answer(
                problem(
                    503,
                    FailureCause.SERVER_CONGESTION,
                    "the server is saturated; retry later",
                    headers={"Retry-After": "1"},
                )
            )
        self.in_flight += 1
        try:
            if msg.originating_as_service_id is not None:
                return await self.service.submit_from_as(msg, client=caller)
            return await self.service.submit_for_ue(msg, client=caller)
        finally:
            self.in_flight -= 1

    def location(self, request: Request, path: str) -> str:
        """Absolute URI of a created resource below ``{apiRoot}``."""
        root = self.config.api_root or str(request.base_url).rstrip("/")
        return root.rstrip("/") + path
