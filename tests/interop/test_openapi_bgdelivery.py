"""MSGG_BGDelivery against the official TS 29.538 OpenAPI file (read from ../shared).

* our ``BgMessageDelivery`` model carries exactly the members and required list
  of the YAML schema;
* a real ``msgin5g serve`` process (SQLite, REST on a free port) with one
  Broadcast Area made by ``msgin5g area create`` and a registered AS answers a
  valid broadcast ``204``, an unknown area ``404`` and a refused originator
  ``403``, each conforming to the schema (random bodies rarely hit these);
* schemathesis generates positive and negative requests from
  ``TS29538_MSGG_BGDelivery.yaml`` (its ``$ref`` to the L3G, MSGDelivery and
  TS 29.571 files resolve next to it): no response is a 5xx and every response
  validates against the official schema. Bounded by ``max_examples``.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis.errors import Unsatisfiable

from msgin5g.codec import openapi_json as wire
from tests.e2e.conftest import msgin5g
from tests.interop.openapi_support import (
    assert_model_matches,
    bounded,
    conformance_checks,
    rest_server,
    spec_path,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]

SPEC = "TS29538_MSGG_BGDelivery.yaml"
MAX_EXAMPLES = 60


def test_model_matches_the_official_schema() -> None:
    assert_model_matches(SPEC, "BgMessageDelivery", wire.BgMessageDelivery)


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv, base = rest_server(tmp_path_factory.mktemp("schemathesis-bg") / "msgin5g.db")
    srv.add_ue("ue1", "s1")
    msgin5g("area", "create", "downtown", "--ue", "ue1", "--storage", srv.storage)
    srv.start()
    try:
        reg = httpx.post(
            f"{base}/msgs-asregistration/v1/registrations",
            json={"asSvcId": "as1"},
            timeout=10,
        )
        assert reg.status_code == 201, reg.text
        yield base
    finally:
        err = srv.stop()
        assert "Traceback" not in err, err


def _operation() -> object:
    import schemathesis

    schema = schemathesis.openapi.from_path(spec_path(SPEC))
    [operation] = [result.ok() for result in schema.get_all_operations()]
    return operation


@pytest.mark.parametrize(
    ("ori", "area", "status"),
    [
        ({"addrType": "AS", "addr": "as1"}, "downtown", 204),
        ({"addrType": "AS", "addr": "as1"}, "nowhere", 404),
        ({"addrType": "AS", "addr": "as-unknown"}, "downtown", 403),
        ({"addrType": "UE", "addr": "ue1"}, "downtown", 403),
    ],
    ids=["accepted", "unknown-area", "unregistered-as", "ue-not-allowed"],
)
def test_outcomes_conform_to_the_schema(
    http_server: str, ori: dict[str, str], area: str, status: int
) -> None:
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    operation = _operation()
    case = operation.Case(  # type: ignore[attr-defined]
        body={
            "oriAddr": ori,
            "destAddr": {"addrType": "BC", "addr": area},
            "msgId": f"bg-interop-{status}-{area}-{ori['addr']}",
            "payload": "aGVsbG8=",
            "priority": "LOW",
        },
        media_type="application/json",
    )
    response = case.call_and_validate(
        base_url=f"{http_server}/msgg-bgdelivery/v1",
        checks=[
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=5,
    )
    assert response.status_code == status, response.text


def test_schemathesis(http_server: str) -> None:
    from schemathesis import GenerationMode

    checks = conformance_checks()
    operation: Any = _operation()
    statuses: dict[int, int] = {}
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategy = operation.as_strategy(generation_mode=mode)

        @bounded(MAX_EXAMPLES)
        @given(case=strategy)
        def run(case: object) -> None:
            response = case.call_and_validate(  # type: ignore[attr-defined]
                base_url=f"{http_server}/msgg-bgdelivery/v1", checks=checks, timeout=5
            )
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        try:
            run()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE
    assert sum(statuses.values()) >= MAX_EXAMPLES, statuses
    assert any(400 <= s < 500 for s in statuses), statuses
    assert all(s < 500 for s in statuses), statuses
