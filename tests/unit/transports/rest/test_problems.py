"""The error → HTTP table covers every ServiceError; MSGRESP → ack mapping."""

from msgin5g import errors
from msgin5g.codec.openapi_json import Address
from msgin5g.model.messages import MsgResp
from msgin5g.transports.rest.problems import ERROR_STATUS, ack_or_problem, status_for


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def test_every_service_error_is_mapped_explicitly() -> None:
    for cls in [errors.ServiceError, *_subclasses(errors.ServiceError)]:
        assert cls in ERROR_STATUS, f"{cls.__name__} has no HTTP mapping"


def test_cause_decides_404() -> None:
    exc = errors.NotRegistered("x", cause=errors.FailureCause.APPLICATION_NOT_FOUND)
    assert status_for(exc) == (404, "APPLICATION_NOT_FOUND")
    assert status_for(errors.Overloaded("x"))[0] == 429
    assert status_for(errors.DecodeError("x")) == (400, "INVALID_MESSAGE")
    assert status_for(errors.ConfigError("x"))[0] == 500


def test_ack_values_are_exactly_the_spec_enumeration() -> None:
    ori = Address(addr_type="AS", addr="as1")
    statuses = {
        "DELY_ACCEPTED": None,
        "DELY_STORED": "DELY_STORED",
        "DELY_FAILED": "DELY_FAILED",
    }
    for internal, wire in statuses.items():
        resp = ack_or_problem(MsgResp(message_id="m", delivery_status=internal), ori)  # type: ignore[arg-type]
        assert resp.status_code == 200
        assert (
            b'"status"' not in resp.body if wire is None else wire.encode() in resp.body
        )
    rejected = ack_or_problem(
        MsgResp(message_id="m", delivery_status="DELY_REJECTED"),
        ori,  # type: ignore[arg-type]
    )
    assert rejected.status_code == 403
