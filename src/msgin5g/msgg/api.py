"""The MSGG API a gateway serves to the server (TS 29.538; digest §3.6, §3.7).

``{apiRoot}/msgg-l3gdelivery/v1`` (L3G) or ``{apiRoot}/msgg-n3gdelivery/v1``
(N3G), both with

* ``POST /deliver-message`` — ``L3gMessageDelivery`` / ``N3gMessageDelivery``
  (required ``oriAddr``, ``destAddr``, ``msgId``; ``destAddr.addrType`` must be
  ``UE``); the gateway stores it in its outbox, then answers ``204``. A UE it
  does not represent → ``404`` ``RECIPIENT_UNKNOWN``; a payload it cannot carry
  → ``400`` ``INVALID_MESSAGE``;
* ``POST /deliver-report`` — ``DeliveryStatusReport`` for a message one of its
  UEs sent; the gateway hands it to the UE if its technology can, else logs
  it; ``204``.

Request bodies are validated with the same pydantic models the server uses
(``codec.openapi_json``; an unknown member is ignored, ``null`` is refused);
a malformed body gets ``400`` with ProblemDetails ``invalidParams``; every
other refusal is a ProblemDetails too (``application/problem+json``).
"""

import logging
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from msgin5g.codec.openapi_json import DeliveryStatusReport, GatewayMessageDelivery
from msgin5g.errors import MSGin5GError
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.rest.problems import problem, problem_for

__all__ = ["GatewayHandler", "GatewayMessageDelivery", "create_app"]

log = logging.getLogger(__name__)


class GatewayHandler(Protocol):
    """What the API calls in the gateway."""

    async def deliver(self, body: GatewayMessageDelivery) -> None:
        """Store a message for one of the gateway's UEs (raise to refuse)."""
        ...

    async def report(self, body: DeliveryStatusReport) -> None:
        """A report for a message one of the gateway's UEs sent."""
        ...


def create_app(api_name: str, handler: GatewayHandler) -> FastAPI:
    """The ASGI app serving ``/{api_name}/v1`` with ``handler``."""
    app = FastAPI(
        title=f"msgin5g {api_name} (TS 29.538)",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    prefix = f"/{api_name}/v1"

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        invalid = [
            (".".join(str(p) for p in e.get("loc", ())[1:]) or "body", str(e["msg"]))
            for e in exc.errors()
        ]
        log.info("HTTP 400 %s: %s", request.url.path, invalid[:3])
        return problem(
            400, FailureCause.INVALID_MESSAGE, "invalid request body", invalid=invalid
        )

    @app.exception_handler(MSGin5GError)
    async def _refused(request: Request, exc: MSGin5GError) -> Response:
        log.info("refused %s: %s", request.url.path, exc)
        return problem_for(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # unparsable JSON, unknown path or method: ProblemDetails all the same
        return problem(
            exc.status_code,
            FailureCause.INVALID_MESSAGE,
            str(exc.detail),
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.error("HTTP 500 %s", request.url.path, exc_info=exc)
        return problem(500, FailureCause.INTERNAL_ERROR)

    @app.post(prefix + "/deliver-message", status_code=204, response_model=None)
    async def deliver_message(body: GatewayMessageDelivery) -> Response:
        await handler.deliver(body)
        return Response(status_code=204)

    @app.post(prefix + "/deliver-report", status_code=204, response_model=None)
    async def deliver_report(body: DeliveryStatusReport) -> Response:
        await handler.report(body)
        return Response(status_code=204)

    return app
