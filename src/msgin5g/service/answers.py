"""The response messages the procedures answer with (digest §3.2 - §3.13).

Application-level outcomes (a refused registration, a message that cannot be
delivered) are the *value* of a procedure: the response message the stage-2
flows define (``REGRESP``, ``DEREGRESP``, ``MSGRESP``, ``TOPICSUBRESP`` …).
These builders are shared by every procedure module, so that a ``MSGRESP`` for a
refused ``MSG`` and one for a refused ``MSGUPD`` are made the same way.

:func:`wire_auth_cause` is the one place that hides *why* a credential check
failed: an unknown UE Service ID and a wrong credential look the same on the
wire (``AUTHENTICATION_FAILED``), so nobody can enumerate provisioned IDs; the
callers' log lines keep the real reason.
"""

import msgspec

from msgin5g.model.messages import (
    BulkRegResp,
    DeregResp,
    Msg,
    MsgResp,
    RegResp,
    RegResult,
    TopicResult,
)
from msgin5g.spec.causes import FailureCause, Result
from msgin5g.spec.delivery import DeliveryStatus

__all__ = [
    "bulk_reg_resp",
    "congested",
    "dereg_failure",
    "msg_resp",
    "reg_failure",
    "reg_result_failure",
    "topic_failures",
    "wire_auth_cause",
    "with_status",
]


def msg_resp(
    msg: Msg, status: DeliveryStatus, cause: FailureCause | None = None
) -> MsgResp:
    """The ``MSGRESP`` answering ``msg`` with ``status`` (and ``cause``)."""
    return MsgResp(
        message_id=msg.message_id,
        originating_ue_service_id=msg.originating_ue_service_id,
        originating_as_service_id=msg.originating_as_service_id,
        delivery_status=status,
        failure_cause=cause.value if cause is not None else None,
    )


def congested(msg: Msg) -> MsgResp:
    """The answer to an originator beyond its submission rate (``[limits]``)."""
    return msg_resp(msg, DeliveryStatus.DELY_REJECTED, FailureCause.SERVER_CONGESTION)


def with_status(
    resp: MsgResp, status: DeliveryStatus, cause: FailureCause | None
) -> MsgResp:
    """``resp`` with another status and cause (the ``MSGUPD`` answers)."""
    return msgspec.structs.replace(
        resp,
        delivery_status=status,
        failure_cause=cause.value if cause is not None else None,
    )


def topic_failures(topics: list[str], cause: FailureCause) -> list[TopicResult]:
    """One ``FAILURE`` result per topic (the subscriber may not subscribe)."""
    return [
        TopicResult(messaging_topic=t, result=Result.FAILURE, failure_cause=cause.value)
        for t in topics
    ]


def bulk_reg_resp(results: list[RegResult]) -> BulkRegResp:
    """The ``BULKREGRESP`` listing one result per entry."""
    return BulkRegResp(num_of_reg_responses=len(results), reg_responses=results)


def reg_failure(ue_service_id: str, cause: FailureCause) -> RegResp:
    """A ``REGRESP`` with ``FAILURE`` and ``cause``."""
    return RegResp(
        ue_service_id=ue_service_id,
        registration_result=Result.FAILURE,
        failure_cause=cause.value,
    )


def reg_result_failure(ue_service_id: str, cause: FailureCause) -> RegResult:
    """One failed entry of a ``BULKREGRESP``."""
    return RegResult(
        ue_service_id=ue_service_id,
        registration_result=Result.FAILURE,
        failure_cause=cause.value,
    )


def dereg_failure(ue_service_id: str, cause: FailureCause) -> DeregResp:
    """A ``DEREGRESP`` with ``FAILURE`` and ``cause``."""
    return DeregResp(
        ue_service_id=ue_service_id,
        deregistration_result=Result.FAILURE,
        failure_cause=cause.value,
    )


def wire_auth_cause(cause: FailureCause) -> FailureCause:
    """The cause a refused credential check shows on the wire.

    An unknown UE Service ID and a wrong credential look the same to the
    requester (``AUTHENTICATION_FAILED``), so nobody can enumerate provisioned
    IDs; the log line written by the caller keeps the real reason.
    """
    if cause is FailureCause.UNKNOWN_UE_SERVICE_ID:
        return FailureCause.AUTHENTICATION_FAILED
    return cause
