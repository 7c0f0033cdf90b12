"""Conformance with the official TS 29.538 OpenAPI files (read from ../shared, never copied).

* our pydantic wire models carry exactly the members and required lists of the
  YAML schemas (so a drift in either is caught);
* schemathesis generates requests from MSGS_ASRegistration and MSGS_MSGDelivery
  and sends them to a real ``msgin5g serve`` process over HTTP: no response is a
  5xx, and every response (status, content type, headers, body) validates against
  the official schema. The run is bounded (``max_examples`` per operation) so it
  takes well under two minutes.
"""

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel

from msgin5g.codec import openapi_json as wire
from tests.conftest import fail_or_skip
from tests.e2e.conftest import ServerProcess

pytestmark = [pytest.mark.interop, pytest.mark.timeout(600)]

SPECS = Path(__file__).resolve().parents[3] / "shared" / "3gpp-openapi"
MAX_EXAMPLES = 60
# nobody drains the server's stderr during the run: keep the log quiet (one INFO
# line per refused request would fill the pipe and block the server)
SERVER_EXTRA: tuple[str, ...] = ("--set", "log.level=WARNING")


def _spec(name: str) -> Path:
    path = SPECS / name
    if not path.exists():
        fail_or_skip(f"{path} not found (the official 3GPP OpenAPI files)")
    return path


def _schemas(name: str) -> dict[str, dict[str, object]]:
    document = yaml.safe_load(_spec(name).read_text(encoding="utf-8"))
    return document["components"]["schemas"]  # type: ignore[no-any-return]


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
    schema = _schemas(spec)[name]
    properties = set(schema.get("properties", {}))  # type: ignore[arg-type]
    required = set(schema.get("required", []))  # type: ignore[arg-type]
    ours = {f.alias or n: f for n, f in model.model_fields.items()}
    assert set(ours) == properties, f"{name}: members differ"
    assert {a for a, f in ours.items() if f.is_required()} == required, (
        f"{name}: required members differ"
    )


def test_problem_details_members_exist_in_ts29571() -> None:
    schema = _schemas("TS29571_CommonData.yaml")["ProblemDetails"]
    properties = set(schema["properties"])  # type: ignore[arg-type]
    ours = {f.alias for f in wire.ProblemDetails.model_fields.values()}
    assert ours <= properties


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_tcp_port()
    srv = ServerProcess(
        tmp_path_factory.mktemp("schemathesis") / "msgin5g.db",
        extra=(
            "--set",
            "rest.enabled=true",
            "--http",
            f"127.0.0.1:{port}",
            *SERVER_EXTRA,
        ),
    )
    srv.add_ue("ue1", "s1")
    srv.start()
    yield f"http://127.0.0.1:{port}"
    err = srv.stop()
    assert "Traceback" not in err, err


def _operations(spec: str) -> list[object]:
    import schemathesis

    schema = schemathesis.openapi.from_path(_spec(spec))
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize(
    ("spec", "api"),
    [
        ("TS29538_MSGS_ASRegistration.yaml", "msgs-asregistration/v1"),
        ("TS29538_MSGS_MSGDelivery.yaml", "msgs-msgdelivery/v1"),
    ],
)
def test_schemathesis(http_server: str, spec: str, api: str) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
    ]
    from schemathesis import GenerationMode

    base_url = f"{http_server}/{api}"
    operations = _operations(spec)
    assert operations
    statuses: dict[int, int] = {}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
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
