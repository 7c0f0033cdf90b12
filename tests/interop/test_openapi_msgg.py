"""MSGG_L3GDelivery / MSGG_N3GDelivery against the official TS 29.538 files.

* the model the gateways validate requests with (and the body the server
  sends, :func:`msgin5g.transports.rest.msgg_client.gateway_message_body`)
  carry exactly the members and required list of ``L3gMessageDelivery`` /
  ``N3gMessageDelivery``;
* real ``msgin5g l3g`` and ``msgin5g n3g`` processes answer a valid message
  for one of their UEs ``204``, an unknown UE ``404``, and schemathesis
  requests generated from the YAML (positive and negative) never get a 5xx and
  always get answers that conform to the official schema. No MSGin5G Server,
  SMSC or broker is needed for that (the gateways keep retrying them).
"""

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis.errors import Unsatisfiable

from msgin5g.model.messages import Msg
from msgin5g.msgg.api import GatewayMessageDelivery
from msgin5g.transports.rest.msgg_client import gateway_message_body
from tests.e2e.msgg_support import start_gateway
from tests.interop.openapi_support import (
    assert_model_matches,
    bounded,
    conformance_checks,
    free_tcp_port,
    schemas,
    spec_path,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]

SPECS = {
    "l3g": ("TS29538_MSGG_L3GDelivery.yaml", "L3gMessageDelivery", "msgg-l3gdelivery"),
    "n3g": ("TS29538_MSGG_N3GDelivery.yaml", "N3gMessageDelivery", "msgg-n3gdelivery"),
}
MAX_EXAMPLES = 40


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_models_match_the_official_schemas(kind: str) -> None:
    spec, name, _ = SPECS[kind]
    assert_model_matches(spec, name, GatewayMessageDelivery)
    body = gateway_message_body(
        Msg(
            message_id="m1",
            originating_as_service_id="as1",
            recipient_ue_service_id="leg1",
            payload=b"x",
            delivery_status_required=True,
            store_and_forward_flag=True,
        )
    )
    properties = set(schemas(spec)[name]["properties"])  # type: ignore[arg-type]
    assert set(body) <= properties
    assert set(schemas(spec)[name]["required"]) <= set(body)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=sorted(SPECS))
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(kind, base URL of its MSGG API) of a running gateway process."""
    kind = request.param
    tmp = tmp_path_factory.mktemp(f"openapi-{kind}")
    nowhere = f"127.0.0.1:{free_tcp_port()}"
    extra = (
        ("--smsc", nowhere, "--ue", "leg1=491700000001")
        if kind == "l3g"
        else ("--broker", f"mqtt://{nowhere}", "--device", "leg1")
    )
    out = start_gateway(kind, f"http://{nowhere}", tmp, *extra, level="ERROR")
    try:
        yield kind, f"{out.ready['uri']}/{SPECS[kind][2]}/v1"  # type: ignore[attr-defined]
    finally:
        out.stop()


def _operations(kind: str) -> dict[str, Any]:
    import schemathesis

    schema = schemathesis.openapi.from_path(spec_path(SPECS[kind][0]))
    found = [result.ok() for result in schema.get_all_operations()]
    return {op.path: op for op in found}


@pytest.mark.parametrize(("ue", "status"), [("leg1", 204), ("nobody", 404)])
def test_outcomes_conform_to_the_schema(
    gateway: tuple[str, str], ue: str, status: int
) -> None:
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    kind, base = gateway
    case = _operations(kind)["/deliver-message"].Case(
        body={
            "oriAddr": {"addrType": "AS", "addr": "as1"},
            "destAddr": {"addrType": "UE", "addr": ue},
            "msgId": f"{kind}-{ue}",
            "payload": "aGVsbG8=",
            "delivStReqInd": True,
        },
        media_type="application/json",
    )
    response = case.call_and_validate(
        base_url=base,
        checks=[
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=5,
    )
    assert response.status_code == status, response.text


def test_schemathesis(gateway: tuple[str, str]) -> None:
    from schemathesis import GenerationMode

    kind, base = gateway
    checks = conformance_checks()
    statuses: dict[int, int] = {}
    for operation in _operations(kind).values():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @bounded(MAX_EXAMPLES)
            @given(case=strategy)
            def run(case: Any) -> None:
                response = case.call_and_validate(
                    base_url=base, checks=checks, timeout=5
                )
                statuses[response.status_code] = (
                    statuses.get(response.status_code, 0) + 1
                )

            try:
                run()
            except Unsatisfiable:
                assert mode == GenerationMode.NEGATIVE
    assert sum(statuses.values()) >= MAX_EXAMPLES, statuses
    assert any(400 <= s < 500 for s in statuses), statuses
    assert all(s < 500 for s in statuses), statuses
