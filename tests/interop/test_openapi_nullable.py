"""Optional is not nullable: every request member the official YAML does not mark
``nullable: true`` is refused as ``null`` (OpenAPI 3.0; issue 10 item 9).

The test walks the official request schemas (read from ../shared, never
copied): for each optional property of the body, and of the objects one level
below it (``asProf``, ``segParams``, ``stoAndFwParams``, ``locInfo``, …), it
posts a valid body with that member set to ``null`` and expects ``400`` with
``invalidParams`` naming the member, while the same body without it is not a
``400``. It runs against the ASGI app (no server process), so every case is
exercised in every run.
"""

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import yaml

from msgin5g.storage.memory import MemoryBackend
from tests.interop.openapi_support import spec_path
from tests.unit.transports.rest.conftest import Rig, make_rig

pytestmark = pytest.mark.timeout(120)

Schema = dict[str, Any]

AS_MSG = {
    "oriAddr": {"addrType": "AS", "addr": "as1"},
    "destAddr": {"addrType": "UE", "addr": "ue1"},
    "msgId": "n-1",
    "stoAndFwInd": True,
}
UE_MSG = {**AS_MSG, "oriAddr": {"addrType": "UE", "addr": "ue1"}}
UE_MSG["destAddr"] = {"addrType": "AS", "addr": "as1"}

# (spec, request schema, path, a valid body)
OPERATIONS: list[tuple[str, str, str, Schema]] = [
    (
        "TS29538_MSGS_ASRegistration.yaml",
        "ASRegistration",
        "/msgs-asregistration/v1/registrations",
        {"asSvcId": "as-null"},
    ),
    (
        "TS29538_MSGS_MSGDelivery.yaml",
        "ASMessageDelivery",
        "/msgs-msgdelivery/v1/deliver-as-message",
        AS_MSG,
    ),
    (
        "TS29538_MSGS_MSGDelivery.yaml",
        "UEMessageDelivery",
        "/msgs-msgdelivery/v1/deliver-ue-message",
        UE_MSG,
    ),
    (
        "TS29538_MSGS_MSGDelivery.yaml",
        "DeliveryStatusReport",
        "/msgs-msgdelivery/v1/deliver-report",
        {
            "oriAddr": {"addrType": "UE", "addr": "ue1"},
            "destAddr": {"addrType": "AS", "addr": "as1"},
            "msgId": "n-2",
            "delivSt": "REPT_DELY_SUCCESS",
        },
    ),
    (
        "TS29538_MSGG_BGDelivery.yaml",
        "BgMessageDelivery",
        "/msgg-bgdelivery/v1/deliver-message",
        {**AS_MSG, "destAddr": {"addrType": "BC", "addr": "nowhere"}},
    ),
    (
        "TS29549_SS_GroupManagement.yaml",
        "VALGroupDocument",
        "/ss-gm/v1/group-documents",
        {"valGroupId": "g-null"},
    ),
]


class Specs:
    """The official files, loaded once, with ``$ref`` resolution across them."""

    def __init__(self) -> None:
        self._files: dict[str, Schema] = {}

    def file(self, name: str) -> Schema:
        if name not in self._files:
            text = spec_path(name).read_text(encoding="utf-8")
            self._files[name] = yaml.safe_load(text)
        return self._files[name]

    def resolve(self, schema: Schema, current: str) -> tuple[Schema, str]:
        """Follow ``$ref`` (same or other file) until a schema without one."""
        while "$ref" in schema:
            ref = schema["$ref"]
            target, _, pointer = ref.partition("#")
            current = target or current
            node: Any = self.file(current)
            for part in pointer.strip("/").split("/"):
                node = node[part]
            schema = node
        return schema, current

    def nullable(self, schema: Schema, current: str) -> bool:
        """``nullable: true`` on the property or on any schema it refers to."""
        while True:
            if schema.get("nullable") is True:
                return True
            if "$ref" not in schema:
                return False
            ref = schema["$ref"]
            target, _, pointer = ref.partition("#")
            current = target or current
            node: Any = self.file(current)
            for part in pointer.strip("/").split("/"):
                node = node[part]
            schema = node


def null_cases(
    specs: Specs, spec: str, name: str, body: Schema
) -> Iterator[tuple[str, Schema, bool]]:
    """(member path, body with that member null, whether null is allowed)."""
    top, current = specs.resolve({"$ref": f"#/components/schemas/{name}"}, spec)
    required = set(top.get("required", []))
    for prop, sub in top.get("properties", {}).items():
        if prop in required:
            continue
        yield prop, {**body, prop: None}, specs.nullable(sub, current)
        nested, where = specs.resolve(sub, current)
        if nested.get("type") != "object" or nested.get("required"):
            continue
        for inner, inner_sub in nested.get("properties", {}).items():
            yield (
                f"{prop}.{inner}",
                {**body, prop: {inner: None}},
                specs.nullable(inner_sub, where),
            )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    built, backend = await make_rig()
    assert isinstance(backend, MemoryBackend)
    reg = await built.register_as("as1", "http://127.0.0.1:9/")
    assert reg.status_code == 201
    yield built
    await built.http.aclose()
    await built.service.aclose()
    await backend.aclose()


@pytest.mark.parametrize(
    ("spec", "name", "path", "body"), OPERATIONS, ids=[o[1] for o in OPERATIONS]
)
async def test_null_is_refused_where_the_schema_is_not_nullable(
    rig: Rig, spec: str, name: str, path: str, body: Schema
) -> None:
    specs = Specs()
    cases = list(null_cases(specs, spec, name, body))
    assert cases  # the walk found the optional members
    for member, variant, allowed in cases:
        resp = await rig.http.post(path, json=variant)
        if allowed:
            assert resp.status_code != 400, (member, resp.text)
            continue
        assert resp.status_code == 400, (name, member, resp.text)
        params = [p["param"] for p in resp.json().get("invalidParams", [])]
        assert member in params, (member, params)
    # the base body itself is valid (so the 400s above are the nulls')
    base = await rig.http.post(path, json=body)
    assert base.status_code != 400, base.text
