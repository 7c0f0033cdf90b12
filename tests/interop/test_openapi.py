"""Conformance with the official TS 29.538 OpenAPI files (read from ../shared, never copied).

* our pydantic wire models carry exactly the members and required lists of the
  YAML schemas (so a drift in either is caught);
* schemathesis generates requests from MSGS_ASRegistration and MSGS_MSGDelivery
  and sends them to a real ``msgin5g serve`` process over HTTP: no response is a
  5xx, and every response (status, content type, headers, body) validates against
  the official schema. The run is bounded (``max_examples`` per operation) so it
  takes well under two minutes.
"""

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel

from msgin5g.codec import openapi_json as wire
from tests.interop.openapi_support import (
    assert_model_matches,
    bounded,
    conformance_checks,
    rest_server,
    schemas,
    spec_path,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]

MAX_EXAMPLES = 60


MODELS: list[tuple[str, str, type[BaseModel]]] = [
    ("TS29538_MSGS_MSGDelivery.yaml", "ASMessageDelivery", wire.ASMessageDelivery),
    ("TS29538_MSGS_MSGDelivery.yaml", "UEMessageDelivery", wire.UEMessageDelivery),
    ("TS29538_MSGS_MSGDelivery.yaml", "MessageDeliveryAck", wire.MessageDeliveryAck),
    (
        "TS29538_MSGS_MSGDelivery.yaml",
        "DeliveryStatusReport",
        wire.DeliveryStatusReport,
    ),
    (
        "TS29538_MSGS_MSGDelivery.yaml",
        "MessageSegmentParameters",
        wire.MessageSegmentParameters,
    ),
    (
        "TS29538_MSGS_MSGDelivery.yaml",
        "StoreAndForwardParameters",
        wire.StoreAndForwardParameters,
    ),
    ("TS29538_MSGS_ASRegistration.yaml", "ASRegistration", wire.ASRegistration),
    ("TS29538_MSGS_ASRegistration.yaml", "ASRegistrationAck", wire.ASRegistrationAck),
    ("TS29538_MSGS_ASRegistration.yaml", "ASProfile", wire.ASProfile),
    ("TS29538_MSGG_L3GDelivery.yaml", "Address", wire.Address),
    ("TS29571_CommonData.yaml", "InvalidParam", wire.InvalidParam),
]


@pytest.mark.parametrize(("spec", "name", "model"), MODELS, ids=[m[1] for m in MODELS])
def test_models_match_the_official_schemas(
    spec: str, name: str, model: type[BaseModel]
) -> None:
    assert_model_matches(spec, name, model)


def test_problem_details_members_exist_in_ts29571() -> None:
    schema = schemas("TS29571_CommonData.yaml")["ProblemDetails"]
    properties = set(schema["properties"])  # type: ignore[arg-type]
    ours = {f.alias for f in wire.ProblemDetails.model_fields.values()}
    assert ours <= properties


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv, url = rest_server(tmp_path_factory.mktemp("schemathesis") / "msgin5g.db")
    srv.add_ue("ue1", "s1")
    srv.start()
    yield url
    err = srv.stop()
    assert "Traceback" not in err, err


def _operations(spec: str) -> list[object]:
    import schemathesis

    schema = schemathesis.openapi.from_path(spec_path(spec))
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize(
    ("spec", "api"),
    [
        ("TS29538_MSGS_ASRegistration.yaml", "msgs-asregistration/v1"),
        ("TS29538_MSGS_MSGDelivery.yaml", "msgs-msgdelivery/v1"),
    ],
)
def test_schemathesis(http_server: str, spec: str, api: str) -> None:
    checks = conformance_checks()
    from schemathesis import GenerationMode

    base_url = f"{http_server}/{api}"
    operations = _operations(spec)
    assert operations
    statuses: dict[int, int] = {}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @bounded(MAX_EXAMPLES)
            @given(case=operation.as_strategy(generation_mode=mode))  # type: ignore[attr-defined]
            def run(case: object) -> None:
                response = case.call_and_validate(
                    base_url=base_url, checks=checks, timeout=5
                )  # type: ignore[attr-defined]
                statuses[response.status_code] = (
                    statuses.get(response.status_code, 0) + 1
                )

            try:
                run()
            except Unsatisfiable:
                # e.g. no invalid value exists for a free-form path parameter
                assert mode == GenerationMode.NEGATIVE
    # the run really exercised the server: successes and refusals
    assert sum(statuses.values()) >= len(operations) * MAX_EXAMPLES, statuses
    assert any(400 <= s < 500 for s in statuses), statuses
    if "asregistration" in api:
        assert 201 in statuses, statuses
