"""Error → HTTP table of the northbound APIs (TS 29.538 §3.2, TS 29.571 ProblemDetails).

The single place where errors become HTTP statuses for MSGS_ASRegistration,
MSGS_MSGDelivery and MSGG_BGDelivery. Every 4xx/5xx carries
``application/problem+json`` with ``status``, ``title``, ``cause`` and, when a
request member is at fault,
``invalidParams`` (digest §3.2). A unit test walks the whole
:class:`~msgin5g.errors.ServiceError` tree and checks every class has an entry,
as ``transports/coap/codes.py`` does for CoAP.

Causes override classes where the digest asks for a specific status: an unknown
registration, recipient or message is ``404`` (digest §3.4, §3.5), whichever
exception carried it. A ``MSGRESP`` the service returns is turned into a
``MessageDeliveryAck`` (``200``) or, for outcomes the API has no ack value for
(``DELY_REJECTED``, unknown recipient), into a problem by :func:`ack_or_problem`;
the Message Gateway APIs answer ``204`` instead of an ack
(:func:`no_content_or_problem`).
"""

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus

from starlette.responses import Response

from msgin5g.codec.openapi_json import (
    Address,
    InvalidParam,
    ProblemDetails,
    ack_from_response,
)
from msgin5g.errors import (
    DecodeError,
    DeliveryRejected,
    InvalidRequest,
    MSGin5GError,
    NotAuthorized,
    NotRegistered,
    Overloaded,
    PayloadTooLarge,
    RecipientUnreachable,
    ServiceError,
    StorageError,
    UpstreamError,
)
from msgin5g.model.messages import MsgResp
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import DeliveryStatus

__all__ = [
    "ERROR_STATUS",
    "PROBLEM_JSON",
    "ack_or_problem",
    "no_content_or_problem",
    "problem",
    "problem_for",
    "status_for",
]

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

ERROR_STATUS: dict[type[MSGin5GError], tuple[int, str]] = {
    DecodeError: (400, FailureCause.INVALID_MESSAGE),
    InvalidRequest: (400, FailureCause.INVALID_MESSAGE),
    NotRegistered: (403, FailureCause.NOT_REGISTERED),
    NotAuthorized: (403, FailureCause.NOT_AUTHORIZED),
    PayloadTooLarge: (413, FailureCause.PAYLOAD_TOO_LARGE),
    RecipientUnreachable: (503, FailureCause.RECIPIENT_NOT_REACHABLE),
    DeliveryRejected: (500, FailureCause.INTERNAL_ERROR),
    Overloaded: (429, FailureCause.SERVER_CONGESTION),
    UpstreamError: (502, FailureCause.INTERNAL_ERROR),
    ServiceError: (500, FailureCause.INTERNAL_ERROR),
    StorageError: (503, FailureCause.SERVER_CONGESTION),
}
"""Exception class → (HTTP status, default ``cause``); most specific class wins."""

CAUSE_STATUS: dict[str, int] = {
    FailureCause.RECIPIENT_UNKNOWN: 404,
    FailureCause.GROUP_NOT_FOUND: 404,
    FailureCause.APPLICATION_NOT_FOUND: 404,
    FailureCause.MESSAGE_NOT_FOUND: 404,
    FailureCause.UNKNOWN_UE_SERVICE_ID: 404,
    FailureCause.DUPLICATE_MESSAGE_ID: 400,
    FailureCause.SERVER_CONGESTION: 429,  # [limits] quota or rate (security-limits.md)
}
"""Causes that decide the status whatever carried them (digest §3.5)."""


def status_for(exc: MSGin5GError) -> tuple[int, str]:
    """The HTTP status and ``cause`` for an error."""
    for cls in type(exc).__mro__:
        entry = ERROR_STATUS.get(cls)
        if entry is not None:
            status, cause = entry
            if isinstance(exc, ServiceError):
                cause = exc.cause.value
                status = CAUSE_STATUS.get(cause, status)
            return status, cause
    return 500, FailureCause.INTERNAL_ERROR


def problem(
    status: int,
    cause: str,
    detail: str | None = None,
    *,
    invalid: Sequence[tuple[str, str | None]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A ``ProblemDetails`` response (``application/problem+json``)."""
    body = ProblemDetails(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail[:500] if detail else None,
        cause=cause,
        invalid_params=(
            [InvalidParam(param=p, reason=r) for p, r in invalid] if invalid else None
        ),
    )
    return Response(
        body.model_dump_json(by_alias=True, exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=dict(headers) if headers else None,
    )


def problem_for(exc: MSGin5GError) -> Response:
    """The problem response for a domain or codec error (logged at INFO)."""
    status, cause = status_for(exc)
    detail = getattr(exc, "detail", None) or str(exc)
    invalid = None
    if isinstance(exc, DecodeError):
        invalid = [(exc.member or "body", detail)]
    headers = None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(max(1, exc.retry_after))}
    log.info("HTTP %d %s: %s", status, cause, detail)
    return problem(status, cause, detail, invalid=invalid, headers=headers)


def ack_or_problem(resp: MsgResp, ori_addr: Address) -> Response:
    """``200 MessageDeliveryAck`` for a ``MSGRESP``, or a problem (digest §3.5).

    * accepted → no ``status``; stored → ``DELY_STORED``; failed with a cause
      the API reports in an ack → ``DELY_FAILED`` + ``failureCause``;
    * unknown recipient / group → ``404``; ``DELY_REJECTED`` (no API value) →
      ``403`` (not registered / not authorised) or ``400`` (duplicate ID).
    """
    refused = _refusal(resp)
    if refused is not None:
        return refused
    ack = ack_from_response(resp, ori_addr)
    return Response(
        ack.model_dump_json(by_alias=True, exclude_none=True),
        media_type="application/json",
    )


def no_content_or_problem(resp: MsgResp) -> Response:
    """``204`` for an accepted or stored message (MSGG_* APIs), or a problem.

    Refusals as in :func:`ack_or_problem` (unknown Broadcast Area → ``404``,
    not allowed → ``403``); any other ``DELY_FAILED`` has no ack to carry it and
    becomes ``503`` when the recipient is only unreachable, else ``400``.
    """
    if resp.delivery_status in (
        DeliveryStatus.DELY_ACCEPTED,
        DeliveryStatus.DELY_STORED,
    ):
        return Response(status_code=204)
    refused = _refusal(resp)
    if refused is not None:
        return refused
    cause = resp.failure_cause or FailureCause.INTERNAL_ERROR
    code = 503 if cause == FailureCause.RECIPIENT_NOT_REACHABLE else 400
    log.info("HTTP %d %s for message %s", code, cause, resp.message_id)
    return problem(code, cause, f"message {resp.message_id} failed: {cause}")


def _refusal(resp: MsgResp) -> Response | None:
    cause = resp.failure_cause
    if cause is not None and cause in CAUSE_STATUS:
        code = CAUSE_STATUS[cause]
        log.info("HTTP %d %s for message %s", code, cause, resp.message_id)
        retry = {"Retry-After": "1"} if code == 429 else None
        return problem(
            code, cause, f"message {resp.message_id}: {cause}", headers=retry
        )
    if resp.delivery_status == DeliveryStatus.DELY_REJECTED:
        reason = cause or FailureCause.NOT_AUTHORIZED
        log.info("HTTP 403 %s for message %s", reason, resp.message_id)
        return problem(403, reason, f"message {resp.message_id} rejected")
    return None
