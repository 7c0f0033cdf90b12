"""Shared pytest configuration: markers, --interop, environment hygiene."""

import os
import shutil

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--interop",
        action="store_true",
        default=False,
        help="run interop tests against real third-party peers (libcoap, aiocoap)",
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if config.getoption("--interop"):
        return
    skip = pytest.mark.skip(reason="interop test: pass --interop to run")
    for item in items:
        if "interop" in item.keywords:
            item.add_marker(skip)


def fail_or_skip(reason: str) -> None:
    """Fail in CI (CI=true), skip on a developer machine (amqtt's fail_or_skip)."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(reason)
    pytest.skip(reason)


def require_binary(name: str) -> str:
    """Path of an installed binary, or fail/skip."""
    path = shutil.which(name)
    if path is None:
        fail_or_skip(f"{name} not installed (the README's test command installs it)")
    assert path is not None
    return path


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MSGIN5G_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("MSGIN5G_"):
            monkeypatch.delenv(name)
