"""Fixtures of the MQTT binding tests: a private mosquitto on a free port."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mosquitto import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous mosquitto on a free loopback port (never the system's 1883)."""
    with Mosquitto(tmp_path / "broker") as running:
        yield running
