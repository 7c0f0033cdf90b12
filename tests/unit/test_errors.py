"""Every ServiceError and codec error has an entry in the CoAP code table."""

from msgin5g import errors
from msgin5g.coap.numbers import Code
from msgin5g.spec.causes import FailureCause
from msgin5g.transports.coap.codes import ERROR_CODES, code_for


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def test_every_service_error_is_mapped_explicitly() -> None:
    for cls in [errors.ServiceError, *_subclasses(errors.ServiceError)]:
        assert cls in ERROR_CODES, f"{cls.__name__} has no CoAP mapping"


def test_codec_errors_are_bad_request() -> None:
    assert code_for(errors.DecodeError("x")) == (
        Code.BAD_REQUEST,
        FailureCause.INVALID_MESSAGE,
    )
    assert code_for(errors.UnsupportedMessageType("x")) == (
        Code.BAD_REQUEST,
        FailureCause.UNSUPPORTED_MESSAGE_TYPE,
    )


def test_unmapped_error_is_internal() -> None:
    assert code_for(errors.ConfigError("x"))[0] == Code.INTERNAL_SERVER_ERROR


def test_all_errors_listed_in_dunder_all() -> None:
    names = {
        n
        for n in dir(errors)
        if isinstance(getattr(errors, n), type)
        and issubclass(getattr(errors, n), errors.MSGin5GError)
    }
    assert names == set(errors.__all__)
    assert errors.__all__ == sorted(errors.__all__)
