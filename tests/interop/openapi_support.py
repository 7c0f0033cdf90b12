"""What the OpenAPI conformance tests share: the official YAML files, model checks,
and a real ``msgin5g serve`` with its REST APIs on a free port."""

import os
import socket
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, settings
from pydantic import BaseModel

from tests.conftest import fail_or_skip
from tests.e2e.conftest import ServerProcess

# $MSGIN5G_OPENAPI_DIR, else ../shared next to the checkout (a worktree may sit
# one level deeper); README.md "The official OpenAPI files" says where they come from
SPECS = (
    Path(os.environ["MSGIN5G_OPENAPI_DIR"])
    if os.environ.get("MSGIN5G_OPENAPI_DIR")
    else next(
        (
            p / "shared" / "3gpp-openapi"
            for p in Path(__file__).resolve().parents[2:]
            if (p / "shared" / "3gpp-openapi").is_dir()
        ),
        Path(__file__).resolve().parents[3] / "shared" / "3gpp-openapi",
    )
)
# nobody drains the server's stderr during the run: keep the log quiet (one INFO
# line per refused request would fill the pipe and block the server)
SERVER_EXTRA: tuple[str, ...] = ("--set", "log.level=WARNING")


def spec_path(name: str) -> Path:
    """An official OpenAPI file (read from ../shared, never copied)."""
    path = SPECS / name
    if not path.exists():
        fail_or_skip(
            f"{path} not found (the official 3GPP OpenAPI files: set "
            "MSGIN5G_OPENAPI_DIR, see README.md)"
        )
    return path


def schemas(name: str) -> dict[str, dict[str, object]]:
    """``components.schemas`` of an official file."""
    document = yaml.safe_load(spec_path(name).read_text(encoding="utf-8"))
    return document["components"]["schemas"]  # type: ignore[no-any-return]


def assert_model_matches(spec: str, name: str, model: type[BaseModel]) -> None:
    """Our pydantic model has exactly the schema's members and required list."""
    schema = schemas(spec)[name]
    properties = set(schema.get("properties", {}))  # type: ignore[arg-type]
    required = set(schema.get("required", []))  # type: ignore[arg-type]
    ours = {f.alias or n: f for n, f in model.model_fields.items()}
    assert set(ours) == properties, f"{name}: members differ"
    assert {a for a, f in ours.items() if f.is_required()} == required, (
        f"{name}: required members differ"
    )


def free_tcp_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rest_server(db: Path) -> tuple[ServerProcess, str]:
    """A (not yet started) server process with REST on a free port, and its URL."""
    port = free_tcp_port()
    srv = ServerProcess(
        db,
        extra=(
            "--set",
            "rest.enabled=true",
            "--http",
            f"127.0.0.1:{port}",
            *SERVER_EXTRA,
        ),
    )
    return srv, f"http://127.0.0.1:{port}"


def conformance_checks(*, reject_negative: bool = True) -> list[Any]:
    """Every schemathesis check we hold the servers to: no 5xx, a request the
    schema forbids (e.g. ``null`` where not ``nullable``) is refused, and
    status, content type, headers and body as the official schema says.

    ``reject_negative=False`` leaves out the refusal check, for schemas whose
    deep structures the server keeps as sent by design (SS_GM ``locInfo``)."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
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
    if reject_negative:
        checks.append(negative_data_rejection)
    return checks


def bounded(max_examples: int) -> Any:
    """Hypothesis settings of a bounded, reproducible-enough conformance run."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases every run (a fixed seed)
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
