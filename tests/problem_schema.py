"""Check a ProblemDetails body against the official TS 29.571 schema (no copy of
the YAML: it is read from ../shared like the OpenAPI conformance tests do)."""

from typing import Any

from tests.interop.openapi_support import schemas

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "array": list,
    "object": dict,
    "boolean": bool,
    "number": (int, float),
}


def _resolve(schema: dict[str, Any], common: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        return _resolve(common[ref.rsplit("/", 1)[1]], common)
    return schema


def assert_problem_details(body: object) -> None:
    """Every member of ``body`` is a ProblemDetails member of the right JSON type."""
    common = schemas("TS29571_CommonData.yaml")
    schema = common["ProblemDetails"]
    assert isinstance(body, dict), body
    properties: dict[str, Any] = schema["properties"]  # type: ignore[assignment]
    for name, value in body.items():
        assert name in properties, f"{name} is not a ProblemDetails member"
        member = _resolve(properties[name], common)
        kind = member.get("type")
        if isinstance(kind, str):
            assert isinstance(value, _JSON_TYPES[kind]), (name, value, kind)
